"""A real three-node Redis Cluster for the tests: free loopback ports (never 6379), no
persistence, no replicas.

Three ``redis-server --cluster-enabled yes`` joined with ``redis-cli --cluster create``;
ready once every node's ``CLUSTER INFO`` says ``cluster_state:ok``.  One cluster serves a
whole test session: :meth:`RedisClusterServer.fresh` empties it for a test (``FLUSHALL`` on
every node).  :meth:`stop` and :meth:`start` take the node of :attr:`url` away and bring it
back (empty, with its slots: its ``nodes.conf`` keeps its place in the cluster).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.redis_server import REDIS_SERVER, RedisServer, _free_port

REDIS_CLI = shutil.which("redis-cli")
NODES = 3
POLL = 0.02  # s between two looks at a node that is not ready yet (a poll, not a wait)


def _ask(port: int, *command: str) -> bytes:
    """One command in RESP over a plain socket; the raw reply (enough for PING and INFO)."""
    parts = [f"*{len(command)}\r\n".encode()]
    for arg in command:
        parts.append(f"${len(arg.encode())}\r\n{arg}\r\n".encode())
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"".join(parts))
        reply = sock.recv(65536)
        if reply.startswith(b"$"):  # a bulk reply: read up to its announced length
            size = int(reply[1 : reply.index(b"\r\n")])
            while len(reply) < size + len(str(size)) + 5:
                more = sock.recv(65536)
                if not more:
                    break
                reply += more
        return reply


class ClusterNode(RedisServer):
    """One ``redis-server`` of the cluster (``RedisServer``'s start/stop, cluster options)."""

    def __init__(self, log_path: Path, directory: Path) -> None:
        self.directory = directory
        self.bus_port = _free_port()  # the cluster bus (by default port + 10000, often taken)
        super().__init__(log_path)

    def options(self) -> list[str]:
        return [
            "--cluster-port",
            str(self.bus_port),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(self.directory / f"nodes-{self.port}.conf"),
            "--cluster-node-timeout",
            "2000",
            "--dir",
            str(self.directory),
        ]


class RedisClusterServer:
    """Three cluster nodes; ``url`` names the first (any node will do for a client)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.nodes: list[ClusterNode] = []
        try:
            for n in range(NODES):
                self.nodes.append(ClusterNode(directory / f"node-{n}.log", directory))
            self._create()
            self.wait_ok()
        except BaseException:
            self.close()
            raise
        self.url = self.nodes[0].url

    def _create(self) -> None:
        assert REDIS_CLI is not None, "redis-cli is not on the PATH"
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        with open(self.directory / "create.log", "ab") as log:
            subprocess.run(
                [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=60,
            )

    def wait_ok(self, deadline: float = 30.0) -> None:
        """Return once every node says ``cluster_state:ok`` (polled; raises after ``deadline`` s)."""
        end = time.monotonic() + deadline
        pending = list(self.nodes)
        while pending:
            try:
                if b"cluster_state:ok" in _ask(pending[0].port, "CLUSTER", "INFO"):
                    pending.pop(0)
                    continue
            except OSError:
                pass
            if time.monotonic() > end:
                raise RuntimeError(f"the cluster is not ok after {deadline} s: see {self.directory}")
            time.sleep(POLL)

    def fresh(self) -> RedisClusterServer:
        """Empty every node (a test's own clean cluster; a node a test left stopped is
        started again first); the cluster itself."""
        if any(node.proc is None for node in self.nodes):
            for node in self.nodes:
                if node.proc is None:
                    node.start()
            self.wait_ok()
        for node in self.nodes:
            assert _ask(node.port, "FLUSHALL").startswith(b"+OK")
        return self

    def stop(self) -> None:
        """Take the node of :attr:`url` away (its slots fail until it is back)."""
        self.nodes[0].stop()

    def start(self) -> None:
        """Bring it back, empty, and wait until the cluster is ok again."""
        self.nodes[0].start()
        self.wait_ok()

    def close(self) -> None:
        for node in self.nodes:
            node.stop()


__all__ = ["REDIS_CLI", "REDIS_SERVER", "RedisClusterServer", "_free_port"]


CLUSTER_PARAM = pytest.param("redis_cluster", marks=[pytest.mark.redis, pytest.mark.redis_cluster])
"""The param a store-parametrized test adds beside ``"memory"`` and ``"redis"``."""


def redis_for(request: pytest.FixtureRequest, kind: str) -> RedisServer | RedisClusterServer:
    """The Redis of a ``"redis"`` param (the test's own server) or of a ``"redis_cluster"``
    one (the session's cluster, emptied)."""
    if kind == "redis_cluster":
        cluster: RedisClusterServer = request.getfixturevalue("redis_cluster")
        return cluster.fresh()
    server: RedisServer = request.getfixturevalue("redis_server")
    return server
