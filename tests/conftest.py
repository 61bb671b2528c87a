"""Fixtures: the real server on a free loopback port, and an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.redis_cluster import RedisClusterServer
from tests.support.redis_server import RedisServer
from tests.support.server import ServerProcess

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(name="start_server")
def _start_server(request: pytest.FixtureRequest) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with extra environment; all are stopped when the test ends."""
    started: list[ServerProcess] = []
    ARTIFACTS.mkdir(exist_ok=True)

    def start(**env: str) -> ServerProcess:
        name = request.node.name.replace("/", "_")[:80]
        server = ServerProcess(ARTIFACTS / f"server-{name}-{len(started)}.log", **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(name="server", scope="module")
def _server() -> Iterator[ServerProcess]:
    """One server (offline model, test pacing) shared by a test module."""
    ARTIFACTS.mkdir(exist_ok=True)
    server = ServerProcess(ARTIFACTS / "server-shared.log")
    yield server
    server.stop()


@pytest.fixture(name="http")
async def _http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.fixture(name="redis_server")
def _redis_server(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A redis-server of the test's own on a free port (never 6379), stopped after it."""
    ARTIFACTS.mkdir(exist_ok=True)
    server = RedisServer(ARTIFACTS / f"redis-{request.node.name.replace('/', '_')[:80]}.log")
    yield server
    server.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "redis_cluster: needs redis-server and redis-cli (a local 3-node cluster)"
    )


@pytest.fixture(name="redis_cluster", scope="session")
def _redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServer]:
    """A three-node Redis Cluster on free ports for the whole run; ``.fresh()`` empties it."""
    cluster = RedisClusterServer(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.close()
