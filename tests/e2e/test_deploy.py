"""Deployment: the Procfile under honcho, the SIGTERM drain, and several worker processes.

README.md's local Procfile check is run as the README writes it (between its
``<!-- procfile-check -->`` markers), from a PATH without the virtual environment.

The model in the drain tests is a local OpenAI-compatible stand-in held at a gate: it sends
a few pieces, then waits until the test opens the gate, so that "SIGTERM mid-answer" and
"a generation still running after the grace" are states the test makes, not races it hopes
to win.  The server's own log lines (one per drain phase) are read from its output pipe.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypercorn.asyncio import serve
from hypercorn.config import Config

from quart_sse.app import create_app
from quart_sse.config import Settings
from quart_sse.models import Message
from tests.support.server import ROOT, listening_socket, server_env
from tests.support.sse_client import read_stream

WAIT = 60.0  # a guard against hangs, never a pace

BEFORE = ("The first ", "three pieces ", "come at once. ")
AFTER = ("The rest ", "waits for ", "the gate.")


class GatedModel:
    """An OpenAI-compatible ``/v1/chat/completions`` that sends :data:`BEFORE`, then waits
    for :attr:`gate` before it sends :data:`AFTER` and ends."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> GatedModel:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._answer)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.gate.set()
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _frame(delta: dict[str, str], finish: str | None = None) -> bytes:
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "gated"}
        chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
        return f"data: {json.dumps(chunk)}\n\n".encode()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(self._frame({"role": "assistant", "content": ""}))
        for piece in BEFORE:
            await response.write(self._frame({"content": piece}))
        await self.gate.wait()
        for piece in AFTER:
            await response.write(self._frame({"content": piece}))
        await response.write(self._frame({}, "stop"))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


class Proc:
    """A child process whose merged output is read line by line as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._log = open(log_path, "w")  # closed when the output ends
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls, argv: Sequence[str], log_path: Path, env: dict[str, str], pass_fds: Sequence[int] = ()
    ) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            cwd=ROOT,
            pass_fds=pass_fds,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        return cls(proc, log_path)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            async for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                self._log.write(line + "\n")
                self._log.flush()
                async with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()
        finally:
            self._log.close()
            async with self._changed:
                self._changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def line(self, pattern: str) -> re.Match[str]:
        """The first output line matching ``pattern`` (waiting for it to be written)."""
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            return next((m for m in map(regex.search, self.lines) if m), None)

        async with asyncio.timeout(WAIT), self._changed:
            await self._changed.wait_for(lambda: found() is not None or self._reader.done())
        match = found()
        assert match is not None, f"no line matching {pattern!r} in:\n{self.output}"
        return match

    async def exit(self) -> int:
        """The exit code, once the process has exited by itself and its output is read."""
        async with asyncio.timeout(WAIT):
            code = await self.proc.wait()
            await self._reader
        return code

    async def stop(self) -> None:
        if self.proc.returncode is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
        await self._reader


@pytest.fixture(name="spawn")
async def _spawn(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    started: list[Proc] = []
    artifacts = ROOT / "tests" / "artifacts"
    artifacts.mkdir(exist_ok=True)

    async def spawn(argv: Sequence[str], env: dict[str, str], pass_fds: Sequence[int] = ()) -> Proc:
        path = artifacts / f"deploy-{request.node.name[:60]}-{len(started)}.log"
        proc = await Proc.start(argv, path, env, pass_fds)
        started.append(proc)
        return proc

    yield spawn
    for proc in started:
        await proc.stop()


def deploy_env(**overrides: str) -> dict[str, str]:
    """The test environment, with log lines at info (one per drain phase) kept whole."""
    env = server_env(LOG_LEVEL="info", COLUMNS="400", **overrides)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


async def start_quart_sse(spawn: Any, *args: str, **env: str) -> tuple[Proc, str]:
    """``python -m quart_sse`` on a listening socket handed over as ``fd://N``."""
    sock = listening_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    fd = sock.fileno()
    proc = await spawn(
        [sys.executable, "-m", "quart_sse", "--bind", f"fd://{fd}", *args], deploy_env(**env), [fd]
    )
    sock.close()
    return proc, url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# The Procfile ----------------------------------------------------------------------------


def test_the_procfile_runs_quart_sse_on_port_and_leaves_workers_to_web_concurrency() -> None:
    (line,) = [line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")]
    assert "exec quart-sse" in line and "--host 0.0.0.0" in line and "--port $PORT" in line
    # quart-sse reads WEB_CONCURRENCY itself, so that what it says names that setting.
    assert "--workers" not in line


async def test_honcho_starts_the_procfile_which_answers_health_and_stops(spawn, http):
    port = free_port()
    honcho = str(Path(sys.executable).parent / "honcho")
    env = deploy_env(PORT=str(port), WEB_CONCURRENCY="1")
    proc = await spawn([honcho, "start", "--no-colour", "--no-prefix"], env)
    await proc.line(rf"listening on 0\.0\.0\.0:{port} ")
    async with http.get(f"http://127.0.0.1:{port}/health") as r:
        assert r.status == 200
        assert (await r.json())["status"] == "ok"
    proc.proc.send_signal(signal.SIGTERM)  # honcho passes it on to the process group
    await proc.exit()  # honcho's own code says it was stopped by a signal (143)
    await proc.line(r"web\.1 stopped \(rc=0\)")  # the server's (the line execs it)
    await proc.line(r"shutdown 4/4")
    await proc.line(r"shutdown done in")


PROCFILE_CHECK = ("<!-- procfile-check -->", "<!-- /procfile-check -->")


def documented_command(readme: str, markers: tuple[str, str]) -> str:
    """The one command written between ``markers`` in ``readme`` (in a fenced block; comments
    after ``#`` dropped)."""
    start, end = markers
    assert readme.count(start) == 1 and readme.count(end) == 1, f"README.md has no {start} … {end} block"
    block = readme.split(start, 1)[1].split(end, 1)[0]
    lines = [re.sub(r"(^|\s)#.*", "", line).strip() for line in block.splitlines()]
    commands = [line for line in lines if line and not line.startswith("```")]
    assert len(commands) == 1, f"README.md's {start} block holds {commands}, not one command"
    return commands[0]


def without_the_venv(path: str) -> str:
    """``path`` less every folder that holds ``quart-sse`` or ``honcho`` (the venv's scripts)."""
    scripts = ("quart-sse", "honcho")
    return os.pathsep.join(
        d for d in path.split(os.pathsep) if not any((Path(d) / n).exists() for n in scripts)
    )


def test_the_procfile_check_is_read_from_the_readme() -> None:
    readme = "Run:\n<!-- procfile-check -->\n```sh\nmake procfile  # on PORT\n```\n<!-- /procfile-check -->\n"
    assert documented_command(readme, PROCFILE_CHECK) == "make procfile"
    with pytest.raises(AssertionError, match="no <!-- procfile-check -->"):
        documented_command("PORT=8000 honcho start\n", PROCFILE_CHECK)


async def test_the_readmes_procfile_check_runs_in_a_fresh_shell_and_stops_cleanly(spawn, http):
    command = documented_command((ROOT / "README.md").read_text(), PROCFILE_CHECK)
    port = free_port()
    env = server_env(LOG_LEVEL="info", COLUMNS="400", PORT=str(port))
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = without_the_venv(env.get("PATH", os.defpath))
    assert shutil.which("quart-sse", path=env["PATH"]) is None  # as in a shell with nothing activated
    proc = await spawn(["/bin/sh", "-c", command], env)
    await proc.line(rf"listening on 0\.0\.0\.0:{port} ")
    server_pid = int((await proc.line(r"server ready \(pid (\d+)\)")).group(1))
    async with http.get(f"http://127.0.0.1:{port}/health") as r:
        assert r.status == 200
        assert (await r.json())["status"] == "ok"
    os.killpg(proc.proc.pid, signal.SIGTERM)  # the command's process group, as a terminal stops a job
    # Stopped by the signal, once its output is closed: every process that wrote it has exited.
    assert await proc.exit() in (-signal.SIGTERM, 128 + signal.SIGTERM)
    await proc.line(r"shutdown done in")  # the server drained ...
    await proc.line(r"web\.1 stopped \(rc=0\)")  # ... and exited with 0
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid, 0)  # gone, and reaped by honcho


# The drain -------------------------------------------------------------------------------


async def read_until_chunk(response: aiohttp.ClientResponse, n: int) -> Any:
    return await read_stream(response, until=lambda d: d["type"] == "chunk" and d["chunk_number"] == n)


async def test_sigterm_mid_answer_finishes_it_refuses_new_messages_then_exits(spawn, http):
    async with GatedModel() as model:
        proc, url = await start_quart_sse(
            spawn, SHUTDOWN_GRACE="25", MODEL_PROVIDER="openai", OPENAI_BASE_URL=model.url
        )
        async with http.post(f"{url}/chat/stream", json={"message": "a long one"}) as r:
            assert r.status == 200
            head = await read_until_chunk(r, len(BEFORE))
            stream_id = head.data[0]["stream_id"]
            proc.proc.send_signal(signal.SIGTERM)
            await proc.line(r"server: shutdown 1/4: taking no new messages .* 1 generation running gets")

            # New messages are refused while the answer goes on; reading is not.
            for path in ("/chat", "/chat/stream"):
                async with http.post(f"{url}{path}", json={"message": "another"}) as refused:
                    assert refused.status == 503
                    assert int(refused.headers["Retry-After"]) > 0
                    assert (await refused.json())["error"]["code"] == "shutting_down"
            async with http.get(f"{url}/streams/{stream_id}/events", headers={"Last-Event-ID": "2"}) as again:
                assert again.status == 200
                resumed = await read_until_chunk(again, len(BEFORE))
                model.gate.set()  # the model goes on, within the grace
                resumed_rest = await read_stream(again)
            rest = await read_stream(r)

        whole = [*head.data, *rest.data]
        assert [d["type"] for d in whole[:2]] == ["session_info", "status"]
        assert whole[-1]["type"] == "complete" and whole[-1]["total_chunks"] == len(BEFORE + AFTER)
        assert [*head.ids, *rest.ids] == list(range(1, len(whole) + 1))
        assert "".join(d.get("text", "") for d in whole) == "".join(BEFORE + AFTER)
        assert [*resumed.ids, *resumed_rest.ids] == list(range(3, len(whole) + 1))
        assert (rest.raw + resumed_rest.raw).count(b"event: complete") == 2  # each reader, once

        assert await proc.exit() == 0  # by itself, once the answer was delivered
    await proc.line(r"shutdown 2/4: 1 generation finished, 0 still running")
    await proc.line(r"shutdown 4/4: [12] open streams ended after their final event, 0 closed")


async def test_past_the_grace_the_answer_ends_interrupted_with_what_was_generated(spawn, http):
    async with GatedModel() as model:  # the gate stays shut: the model never finishes
        proc, url = await start_quart_sse(
            spawn, SHUTDOWN_GRACE="0.5", MODEL_PROVIDER="openai", OPENAI_BASE_URL=model.url
        )
        async with http.post(f"{url}/chat/stream", json={"message": "never ends"}) as r:
            head = await read_until_chunk(r, len(BEFORE))
            proc.proc.send_signal(signal.SIGTERM)
            rest = await read_stream(r)
        assert await proc.exit() == 0
    events = [*head.data, *rest.data]
    assert [*head.ids, *rest.ids] == list(range(1, len(events) + 1))
    chunks = [d for d in events if d["type"] == "chunk"]
    assert [c["chunk_number"] for c in chunks] == list(range(1, len(BEFORE) + 1))
    assert "".join(c["text"] for c in chunks) == "".join(BEFORE)  # exactly what was generated
    assert events[-1]["type"] == "error" and events[-1]["code"] == "interrupted"
    assert rest.raw.endswith(b"\n\n")  # the response ended on an event boundary
    await proc.line(r"shutdown 2/4: 0 generations finished, 1 still running")
    await proc.line(r"shutdown 3/4: 1 generation ended as interrupted")


class HeldProvider:
    """In-process model: :data:`BEFORE`, then it waits forever (until cancelled)."""

    name = "held"
    model = "held-model"

    def __init__(self) -> None:
        self.sent = asyncio.Event()

    async def stream(self, history: Sequence[Message]) -> AsyncIterator[str]:
        for piece in BEFORE:
            yield piece
        self.sent.set()
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        return None


async def test_the_drain_keeps_the_partial_answer_and_ends_every_reader(http):
    settings = Settings(shutdown_grace=0.2, heartbeat_interval=15)
    provider = HeldProvider()
    app = create_app(settings, provider=provider)
    rt = app.extensions["quart_sse"]
    sock = listening_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.graceful_timeout = 1
    stop = asyncio.Event()

    async def trigger() -> None:
        await stop.wait()
        await rt.drain()

    server = asyncio.create_task(serve(app, config, shutdown_trigger=trigger))
    try:
        async with http.post(f"{url}/chat/stream", json={"message": "held"}) as r:
            head = await read_until_chunk(r, len(BEFORE))
            session_id = head.data[0]["session_id"]
            # A second reader, resuming from the middle.
            async with http.get(f"{url}/streams/{head.data[0]['stream_id']}/events?last_event_id=3") as r2:
                mid = await read_until_chunk(r2, len(BEFORE))
                stop.set()
                rest, rest2 = await read_stream(r), await read_stream(r2)
        async with asyncio.timeout(WAIT):
            await server
    finally:
        stop.set()
        if not server.done():
            server.cancel()
    for got in (rest, rest2):
        assert got.last["type"] == "error" and got.last["code"] == "interrupted"
    assert [*mid.ids, *rest2.ids] == list(range(4, rest2.ids[-1] + 1))
    session = await rt.store.get_session(session_id)
    saved = session.messages[-1]
    assert (saved.role, saved.content, saved.interrupted) == ("model", "".join(BEFORE), True)
    assert rt.stats.readers_open == 0 and not rt.generations.running


async def test_the_first_bytes_go_out_at_once_and_a_silent_model_gets_pings(spawn, http):
    async with GatedModel() as model:
        proc, url = await start_quart_sse(
            spawn, HEARTBEAT_INTERVAL="0.2", MODEL_PROVIDER="openai", OPENAI_BASE_URL=model.url
        )
        async with http.post(f"{url}/chat/stream", json={"message": "silence"}) as r:
            assert r.status == 200  # the head, before the model's first piece
            seen = b""
            async for chunk in r.content.iter_any():
                seen += chunk
                if seen.count(b": ping\n\n") >= 2:
                    break
            assert seen.startswith(b"retry: ")
            model.gate.set()
            rest = await read_stream(r)
        assert rest.last["type"] == "complete"
        await proc.stop()


# Several workers -------------------------------------------------------------------------


STORE_ROW = r"Store:\s+(.*?)\s*│"


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        # Heroku sets WEB_CONCURRENCY to 2 or more by itself: the first push must still serve.
        ([], {"WEB_CONCURRENCY": "2"}, "WEB_CONCURRENCY=2 asks for 2 workers"),
        (["--workers", "3"], {}, "--workers 3 asks for 3 workers"),
    ],
)
async def test_several_workers_on_the_memory_store_serve_as_one_process_and_say_why(
    spawn, http, args, env, says
):
    proc, url = await start_quart_sse(spawn, *args, **env)
    why = (await proc.line(r"WARNING quart_sse: (.*)")).group(1)
    assert why.startswith(f"{says}, but the memory store is per process")
    assert "sessions and streams would not be shared" in why and "set REDIS_URL to run" in why
    ready = await proc.line(r"server ready \(pid (\d+)\)")
    assert int(ready.group(1)) == proc.proc.pid and children(proc.proc.pid) == []  # one process
    async with http.post(f"{url}/sessions/new") as r:
        session_id = (await r.json())["session_id"]
    for _ in range(4):
        async with aiohttp.ClientSession() as fresh:  # new connections: the one process answers
            async with fresh.get(f"{url}/sessions/{session_id}") as r:
                assert r.status == 200
    # The banner says plainly what a restart of this one process loses.
    store = (await proc.line(STORE_ROW)).group(1)
    assert store == "memory: a restart loses every session and any answer in progress (REDIS_URL keeps them)"
    proc.proc.send_signal(signal.SIGTERM)
    assert await proc.exit() == 0
    assert not any(re.search(r"starting \d+ workers|worker \d+ ready", line) for line in proc.lines)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return sorted(int(p) for p in path.read_text().split())


@pytest.mark.redis
async def test_two_workers_on_redis_share_the_socket_and_stop_together_on_sigterm(spawn, http, redis_server):
    proc, url = await start_quart_sse(spawn, "--workers", "2", REDIS_URL=redis_server.url)
    store = (await proc.line(STORE_ROW)).group(1)
    assert store == "redis: shared by every process; sessions outlive a restart"
    await proc.line(r"starting 2 workers")
    pids = {int((await proc.line(rf"worker {n} ready \(pid (\d+)\)")).group(1)) for n in (1, 2)}
    assert len(pids) == 2 and set(children(proc.proc.pid)) == pids
    # Sessions live in Redis: whichever worker answers sees every session.
    async with http.post(f"{url}/sessions/new") as r:
        session_id = (await r.json())["session_id"]
    for _ in range(8):
        async with aiohttp.ClientSession() as fresh:  # a new connection each time, to either worker
            async with fresh.get(f"{url}/sessions/{session_id}") as r:
                assert r.status == 200
    proc.proc.send_signal(signal.SIGTERM)  # to the parent only: it passes it on
    assert await proc.exit() == 0
    for n in (1, 2):
        await proc.line(rf"worker {n}: shutdown done in")
        await proc.line(rf"worker {n} \(pid \d+\) exited with code 0")
    await proc.line(r"all workers have exited")
