"""The Locust users: the ways people use the server, each stream read and checked for real.

- :class:`ChatterUser`: a conversation of several messages in one session, thinking between
  turns; the session the server saved must hold this conversation and no other (cross-talk).
- :class:`BurstUser`: one message in a new session, then at once the next one.
- :class:`ReconnectingUser`: drops the connection after a random chunk and resumes on the
  stream's ``events_url`` with ``Last-Event-ID``; then checks that a resume after the end
  answers 204.
- :class:`IdleListener`: the browser's way (``POST /chat``, then ``GET events_url``), holding
  its stream to the end and counting ``: ping`` heartbeats; long pauses between streams.

Every answer that ends with ``complete`` (and passes the stream's checks) is then compared
with the session the server saved: one ``GET /sessions/{id}`` (``--check-answers``), whose
request carries the comparison's failure.  Each answer's figures go to ``FIGURES`` once it is
over (``loadtest.stream.finish_answer``).

A user whose requests get no response (connection refused or broken: the server down,
starting, restarting) waits before its next task the longer of its think time and an
exponential backoff with jitter (:mod:`loadtest.backoff`), until a response arrives.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import gevent
from locust import FastHttpUser, task

from loadtest import backoff, options
from loadtest.check import AnswerCheck, Turn, parse_session
from loadtest.stream import CheckFailed, finish_answer, read_stream

RESUME_ATTEMPTS = 5
CHAT = "/chat/stream"
EVENTS = "/streams/[id]/events"  # one row for every stream id
SESSION = "/sessions/[id]"  # one row for every session id
TOPICS = (
    "how do server-sent events resume",
    "why keep a heartbeat on a quiet stream",
    "what makes a stream feel fast",
    "tell me about sessions",
    "explain backpressure briefly",
    "what is a good retry delay",
)


class SSEUser(FastHttpUser):
    """What every user shares: options, headers, and :meth:`ask` (one checked answer)."""

    abstract = True
    network_timeout = 120.0  # longest silence on a socket; heartbeats come every 15 s
    connection_timeout = 30.0

    def on_start(self) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.failures = 0  # requests in a row that got no response

    def wait_time(self) -> float:
        """Seconds before the next task: the think time, or the backoff when the server is not answering."""
        return max(self.think(), backoff.delay(getattr(self, "failures", 0)))

    def think(self) -> float:
        """The user's own pause between tasks, s."""
        return 0.0

    def responded(self, status: int | None) -> int:
        """Note a request's HTTP status (0 or None: no response) for the backoff; returns it, 0 for none."""
        code = int(status or 0)
        self.failures = 0 if code else getattr(self, "failures", 0) + 1
        return code

    @property
    def opts(self) -> Any:
        return self.environment.parsed_options

    def headers(self, **extra: str) -> dict[str, str]:
        # identity: a compressed event stream would be buffered by whatever compresses it
        out = {"Accept": "text/event-stream", "Accept-Encoding": "identity", **extra}
        key = options.get(self.opts, "api_key")
        if key:
            out["Authorization"] = f"Bearer {key}"
        return out

    def message(self, turn: int) -> str:
        return f"[{self.tag}] {random.choice(TOPICS)}? (turn {turn}, {uuid.uuid4().hex[:6]})"

    def ask(
        self,
        text: str,
        session_id: str | None,
        history: list[Turn],
        *,
        stop: Callable[[AnswerCheck], bool] | None = None,
        via_get: bool = False,
    ) -> AnswerCheck | None:
        """Send ``text`` and read its answer (resuming after a drop); None when refused."""
        silence = options.number(self.opts, "max_silence")
        check = AnswerCheck(
            history=[*history, Turn("user", text)],
            session_id=session_id,
            check_answer=options.check_answers(self.opts),
            max_silence_ms=silence * 1000 if silence > 0 else None,
        )
        body = {"message": text, "session_id": session_id}
        check.sent_at = time.perf_counter()  # TTFT and e2e latency count from here
        if via_get:
            url = self.post_chat(body)
            if url is None:
                return None
            status, dropped = read_stream(self, "GET", url, EVENTS, check, headers=self.headers())
        else:
            status, dropped = read_stream(
                self, "POST", CHAT, CHAT, check, body=body, headers=self.headers(), stop=stop
            )
        if self.responded(status) != 200:
            return None
        attempts = 0
        while dropped and attempts < RESUME_ATTEMPTS:
            attempts += 1
            dropped = self.resume(check)
        check.finish()
        self.compare_saved(check)
        finish_answer(check)
        return check

    def compare_saved(self, check: AnswerCheck) -> None:
        """``GET /sessions/{id}`` after a right stream, compared with it.

        A status other than 200, a body that is not a session, or a saved answer that differs
        from the stream is that request's failure (and the answer's problem).
        """
        session_id = check.session_to_read()
        if session_id is None:
            return
        headers = self.headers(Accept="application/json")
        with self.client.get(
            f"/sessions/{quote(session_id, safe='')}", name=SESSION, headers=headers, catch_response=True
        ) as resp:
            if self.responded(resp.status_code) != 200:
                resp.failure(f"HTTP {resp.status_code}")
                return
            try:
                saved = parse_session(resp.json())
            except ValueError:
                saved = None
            if saved is None:
                resp.failure("body is not a session (docs/API.md: GET /sessions/{id})")
                return
            problems = check.compare_saved(saved)
            if problems:
                resp.failure(CheckFailed(problems[0]))
            else:
                resp.success()

    def post_chat(self, body: dict[str, Any]) -> str | None:
        """``POST /chat``: the stream's ``events_url``, or None (a failure on its row)."""
        with self.client.post(
            "/chat", json=body, headers=self.headers(Accept="application/json"), catch_response=True
        ) as resp:
            if self.responded(resp.status_code) != 202:
                resp.failure(f"HTTP {resp.status_code}")
                return None
            url = resp.json().get("events_url")
            if not isinstance(url, str):
                resp.failure("no events_url in the answer")
                return None
            return url

    def resume(self, check: AnswerCheck) -> bool:
        """One resume of a dropped answer; True when it was dropped again (or must be retried)."""
        gevent.sleep(random.uniform(0, options.number(self.opts, "resume_delay")))
        url = check.events_url
        if url is None or check.last_id is None:
            check.problem("dropped before session_info: cannot resume")
            return False
        check.resuming()
        headers = self.headers(**{"Last-Event-ID": check.last_id})
        name = f"{EVENTS} (resume)"
        status, dropped = read_stream(self, "GET", url, name, check, headers=headers, resume=True)
        self.responded(status)
        return dropped

    def end_answers_204(self, check: AnswerCheck) -> None:
        """A resume from the final event's id answers 204 (docs/API.md: nothing follows)."""
        if check.events_url is None or check.last_id is None:
            return
        headers = self.headers(**{"Last-Event-ID": check.last_id})
        name = f"{EVENTS} (after the end)"
        with self.client.get(check.events_url, name=name, headers=headers, catch_response=True) as resp:
            if self.responded(resp.status_code) != 204:
                resp.failure(f"resume after the end answered {resp.status_code}, not 204")


class ChatterUser(SSEUser):
    """A conversation: several messages in one session, with think time between turns."""

    def think(self) -> float:
        return options.uniform(self.opts, "think_min", "think_max")

    @task
    def conversation(self) -> None:
        history: list[Turn] = []
        session_id: str | None = None
        turns = round(options.uniform(self.opts, "turns_min", "turns_max"))
        for turn in range(1, max(1, turns) + 1):
            if turn > 1:
                gevent.sleep(self.think())  # think time between turns
            text = self.message(turn)
            check = self.ask(text, session_id, history)
            if check is None or check.problems:
                return  # the session's history is no longer known: start a new one
            session_id = str(check.info.get("session_id"))
            history += [Turn("user", text), Turn("model", check.text)]


class BurstUser(SSEUser):
    """One message in a new session, then the next at once: no think time."""

    @task
    def one_message(self) -> None:
        self.ask(self.message(1), None, [])


class ReconnectingUser(SSEUser):
    """Drops its connection after a random chunk, resumes with ``Last-Event-ID``."""

    def think(self) -> float:
        return options.uniform(self.opts, "think_min", "think_max")

    @task
    def dropped_answer(self) -> None:
        most = max(1, round(options.number(self.opts, "drop_after_max")))
        after = random.randint(1, most)
        check = self.ask(self.message(1), None, [], stop=lambda c: c.chunks >= after)
        if check is not None and check.done and not check.problems:
            self.end_answers_204(check)


class IdleListener(SSEUser):
    """Opens a stream the browser's way and holds it to the end, counting heartbeats."""

    def think(self) -> float:
        return random.uniform(0.5, 1.5) * options.number(self.opts, "idle_wait")

    @task
    def listen(self) -> None:
        self.ask(self.message(1), None, [], via_get=True)
