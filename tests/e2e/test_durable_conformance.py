"""The official Durable Streams server conformance suite against the real server.

npm ``@durable-streams/server-conformance-tests`` (tests/durable/, exact versions in its
package-lock.json) runs under vitest through its programmatic entry point
(tests/durable/conformance.test.mjs) against a server started here, on the memory store
and on Redis.  The suite has 338 tests: 6 are its webhook/subscription tests, skipped
unless asked for (an optional part of the protocol this server does not serve).  The Node
reference server (``@durable-streams/server`` 0.3.7) passes 324.

The server runs with ``DURABLE_LONG_POLL_TIMEOUT=2`` (the suite's own tests give a
long-poll 5 s to time out) and ``MAX_BODY_BYTES`` of 16 MiB (the suite appends 10 MiB at
once and accepts a 413, but Node's fetch fails when the server answers before reading
the body).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "tests" / "durable"
SUITE_TESTS = 338
SUITE_SKIPPED = 6  # subscriptions (webhooks, pull-wake): off unless the suite is told
MUST_PASS = 332

ENV = {"DURABLE_LONG_POLL_TIMEOUT": "2", "MAX_BODY_BYTES": str(16 << 20)}

pytestmark = pytest.mark.timeout(600)


def _npm_project() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are needed for the conformance suite (apt-get install -y nodejs npm)")
    if not (PROJECT / "node_modules" / "@durable-streams" / "server-conformance-tests").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=PROJECT,
            check=True,
            capture_output=True,
            timeout=300,
        )


def _run_suite(base_url: str, report: Path) -> dict[str, object]:
    env = {**os.environ, "DURABLE_STREAMS_URL": base_url, "CI": "1"}
    done = subprocess.run(
        [
            "npx",
            "vitest",
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


def test_conformance_memory(start_server, tmp_path):
    """Every conformance test the suite runs passes on the memory store (332 of 338)."""
    _npm_project()
    server = start_server(**ENV)
    _check(_run_suite(server.url, tmp_path / "memory.json"))


@pytest.mark.redis
def test_conformance_redis(start_server, redis_server, tmp_path):
    """The same on Redis (its own redis-server)."""
    _npm_project()
    server = start_server(REDIS_URL=redis_server.url, **ENV)
    _check(_run_suite(server.url, tmp_path / "redis.json"))
