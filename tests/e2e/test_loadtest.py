"""The Locust suite (``loadtest/``), run headless as a subprocess against the real server.

Locust runs in its own process (it monkey-patches the standard library with gevent on
import); each run lasts a few seconds (``-t``) and writes ``--csv`` files into the test's
temporary directory, which the test reads.  No test sleeps to synchronise or asserts on time.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.support.broken_sse import BrokenSSE, frame
from tests.support.local_http import LocalApp

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
ARTIFACTS = ROOT / "tests" / "artifacts"

# Every figure of the suite's own summary (<prefix>_sse.csv).
FIGURES = {
    "time_to_first_event",
    "time_to_first_chunk",
    "inter_chunk_delay",
    "stream_time",
    "chunks_per_stream",
    "bytes_per_stream",
    "resume_time_to_first_event",
    "heartbeats_per_stream",
    "open_streams",
    "streams",
    "chunk_events",
    "heartbeats",
    "resumes",
    "failed_streams",
    "streams_per_s",
    "chunk_events_per_s",
    "open_streams_now",
}
# The suite's rows in Locust's own table (<prefix>_stats.csv), request type SSE.
SSE_ROWS = {
    "time to first event",
    "time to first chunk",
    "inter-chunk delay",
    "whole stream",
    "chunks per stream (count, not ms)",
    "resume: time to first event",
}
# Quick pacing for a run of a few seconds.
FAST = {
    "LOADTEST_THINK_MIN": "0",
    "LOADTEST_THINK_MAX": "0.1",
    "LOADTEST_IDLE_WAIT": "0.1",
    "LOADTEST_RESUME_DELAY": "0.05",
    "LOADTEST_DROP_AFTER_MAX": "5",
}


@dataclass
class Run:
    code: int
    output: str
    prefix: Path

    def rows(self, suffix: str) -> list[dict[str, str]]:
        with open(f"{self.prefix}_{suffix}.csv", newline="") as f:
            return list(csv.DictReader(f))

    def figures(self) -> dict[str, dict[str, str]]:
        return {row["figure"]: row for row in self.rows("sse")}

    def stats(self) -> dict[tuple[str, str], dict[str, str]]:
        return {(row["Type"], row["Name"]): row for row in self.rows("stats")}


async def locust(url: str, tmp_path: Path, *args: str, seconds: int = 5, **env: str) -> Run:
    """``locust --headless`` for ``seconds`` against ``url``; its output goes to tests/artifacts."""
    prefix = tmp_path / "run"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LOADTEST_", "LOCUST_"))}
    environ.update(FAST, **env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--host",
        url,
        "--headless",
        "-t",
        f"{seconds}s",
        "--csv",
        str(prefix),
        *args,
        cwd=tmp_path,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), seconds + 30)
    output = out.decode(errors="replace")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"locust-{tmp_path.name}.log").write_text(output)
    assert proc.returncode is not None
    return Run(proc.returncode, output, prefix)


def count(run: Run, figure: str) -> int:
    return int(run.figures()[figure]["count"])


async def test_every_user_against_the_real_server_has_no_failure(start_server, tmp_path):
    # Chunks 150 ms apart and a heartbeat every 50 ms: idle listeners see pings.
    server = start_server(SIM_CHUNK_DELAY_MS="150", SIM_RESPONSE_CHUNKS="6", HEARTBEAT_INTERVAL="0.05")
    run = await locust(server.url, tmp_path, "-u", "8", "-r", "8")

    assert run.code == 0, run.output[-3000:]
    assert run.rows("failures") == []
    figures = run.figures()
    assert set(figures) == FIGURES
    for name in ("streams", "chunk_events", "resumes", "heartbeats"):
        assert count(run, name) > 0, name
    assert count(run, "failed_streams") == 0
    assert float(figures["streams_per_s"]["value"]) > 0
    assert float(figures["chunks_per_stream"]["p50"]) == 6
    stats = run.stats()
    assert {name for kind, name in stats if kind == "SSE"} == SSE_ROWS
    assert all(int(row["Failure Count"]) == 0 for row in stats.values())
    # Each answer was compared with the session the server saved (one GET each).
    assert int(stats[("GET", "/sessions/[id]")]["Request Count"]) > 0
    assert "time_to_first_chunk" in run.output  # the summary printed at the end


async def test_a_distributed_run_merges_the_workers_figures(start_server, tmp_path):
    server = start_server(SIM_CHUNK_DELAY_MS="20", SIM_RESPONSE_CHUNKS="5")
    run = await locust(
        server.url, tmp_path, "-u", "4", "-r", "4", "--processes", "2", "BurstUser", "ChatterUser"
    )

    assert run.code == 0, run.output[-3000:]
    # The master runs no users: every figure it has came from the workers' reports.
    assert set(run.figures()) == FIGURES
    assert count(run, "streams") > 0
    assert float(run.figures()["chunks_per_stream"]["p99"]) == 5
    assert count(run, "failed_streams") == 0


async def test_a_stream_that_skips_a_chunk_number_is_counted_as_a_failure(tmp_path):
    async with BrokenSSE(chunks=5, skip=3) as broken:
        run = await locust(broken.url, tmp_path, "-u", "2", "-r", "2", "BurstUser", seconds=3)
    assert broken.streams > 0

    assert run.code == 1
    failures = run.rows("failures")
    gaps = [row for row in failures if "gap in chunk_number" in row["Error"]]
    assert gaps and all(row["Name"] == "whole stream" for row in gaps)
    assert sum(int(row["Occurrences"]) for row in gaps) > 0
    assert count(run, "failed_streams") > 0
    # Only the gap: the rest of the stand-in's stream is right, and a stream that failed
    # already is not compared with a saved session (the stand-in has none).
    assert {row["Error"] for row in failures} == {gaps[0]["Error"]}
    assert ("GET", "/sessions/[id]") not in run.stats()


class WrongSaved(LocalApp):
    """Right streams, but the session saves another answer than the one streamed.

    ``POST /chat/stream`` answers ``piece 1 piece 2 …`` in chunks numbered right;
    ``GET /sessions/{id}`` holds that user message and a model answer with one word changed.
    """

    def __init__(self, chunks: int = 4) -> None:
        self.chunks = chunks
        self.streams = 0
        self.reads = 0
        self.sessions: dict[str, dict[str, Any]] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/chat/stream", self.chat_stream)
        app.router.add_get("/sessions/{session_id}", self.session)

    async def chat_stream(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.streams += 1
        session_id = uuid.uuid4().hex
        pieces = [f"piece {n} " for n in range(1, self.chunks + 1)]
        wrong = "".join(pieces).replace("piece 2", "piece two")
        messages = [("user", body["message"]), ("model", wrong)]
        self.sessions[session_id] = {
            "session_id": session_id,
            "model": "wrong-saved-standin",
            "created_at": "2026-11-25T16:06:00Z",
            "last_activity": "2026-11-25T16:06:00Z",
            "message_count": len(messages),
            "user_messages": 1,
            "ai_messages": 1,
            "messages": [{"role": r, "content": t, "timestamp": "2026-11-25T16:06:00Z"} for r, t in messages],
        }
        events: list[dict[str, Any]] = [
            {
                "type": "session_info",
                "session_id": session_id,
                "stream_id": session_id,
                "model": "wrong-saved-standin",
                "events_url": f"/streams/{session_id}/events",
            },
            {"type": "status", "message": "generating", "context_messages": 1},
        ]
        for n, piece in enumerate(pieces, start=1):
            events.append({"type": "chunk", "text": piece, "chunk_number": n, "is_final": n == len(pieces)})
        events.append(
            {"type": "complete", "total_chunks": len(pieces), "processing_time": 0.0, "message_count": 2}
        )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        for event_id, data in enumerate(events, start=1):
            await response.write(frame(event_id, data))
        await response.write_eof()
        return response

    async def session(self, request: web.Request) -> web.Response:
        self.reads += 1
        saved = self.sessions.get(request.match_info["session_id"])
        if saved is None:
            return web.json_response({"error": {"code": "session_not_found", "message": "?"}}, status=404)
        return web.Response(text=json.dumps(saved), content_type="application/json")


async def test_an_answer_that_differs_from_the_saved_one_is_counted_as_a_failure(tmp_path):
    async with WrongSaved() as standin:
        run = await locust(standin.url, tmp_path, "-u", "2", "-r", "2", "BurstUser", seconds=3)
    assert standin.streams > 0 and standin.reads > 0

    assert run.code == 1
    failures = run.rows("failures")
    assert {(row["Name"], row["Error"]) for row in failures} == {
        ("whole stream", "CheckFailed('answer differs from the one the session saved')")
    }, failures
    assert count(run, "failed_streams") > 0
    # The session's own row succeeded: it was read, only its answer was wrong.
    assert int(run.stats()[("GET", "/sessions/[id]")]["Failure Count"]) == 0


async def test_check_answers_off_reads_no_saved_session(tmp_path):
    async with WrongSaved() as standin:
        run = await locust(
            standin.url, tmp_path, "-u", "2", "-r", "2", "BurstUser", seconds=3, LOADTEST_CHECK_ANSWERS="off"
        )
    assert standin.streams > 0 and standin.reads == 0

    assert run.code == 0, run.output[-3000:]
    assert run.rows("failures") == []
    assert ("GET", "/sessions/[id]") not in run.stats()


@pytest.mark.parametrize("how", ["options", "environment"])
async def test_weights_come_from_options_or_the_environment(start_server, tmp_path, how):
    server = start_server(SIM_CHUNK_DELAY_MS="1", SIM_RESPONSE_CHUNKS="3")
    zero = ("burst", "reconnect", "idle")
    if how == "options":
        args = [a for name in zero for a in (f"--{name}-weight", "0")]
        env = {}
    else:
        args = []
        env = {f"LOADTEST_{name.upper()}_WEIGHT": "0" for name in zero}
    # 3 s, not 2: Locust rewrites _stats.csv about once a second, not at shutdown, and its
    # run-time timer was seen to end a 2 s run after 1.3 s: on a busy machine such a run
    # could end before any write that holds the first answers.
    run = await locust(server.url, tmp_path, "-u", "2", "-r", "2", *args, seconds=3, **env)

    assert run.code == 0, run.output[-3000:]
    stats = run.stats()
    assert ("POST", "/chat/stream") in stats
    # Only chatters ran: no idle listener (POST /chat), no reconnecting user (resumes).
    assert ("POST", "/chat") not in stats
    assert ("GET", "/streams/[id]/events (resume)") not in stats
