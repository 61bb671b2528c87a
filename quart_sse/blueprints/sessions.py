"""The sessions: create, list, read, clear, delete."""

from __future__ import annotations

import re

from quart import Blueprint, request
from quart_schema import document_querystring, document_response
from werkzeug.exceptions import MethodNotAllowed

from quart_sse import codes
from quart_sse.blueprints import caller, engine
from quart_sse.blueprints.schemas import (
    ErrorBody,
    SessionCleared,
    SessionCreated,
    SessionDeleted,
    SessionDetail,
    SessionList,
    SessionListQuery,
)
from quart_sse.ids import new_id
from quart_sse.models import Session, now_iso
from quart_sse.stores.base import LIST_LIMIT, MAX_LIST_LIMIT

bp = Blueprint("sessions", __name__)


async def _session(session_id: str) -> Session:
    """The session, if the caller may see it; else 404 as for an unknown id.  The path
    ``/sessions/new`` itself takes POST only: 405 with ``Allow`` (no id is ``new``)."""
    if session_id == "new" and request.path == "/sessions/new":
        raise MethodNotAllowed(valid_methods=["POST", "OPTIONS"])
    session = await engine().store.get_session(session_id)
    if session is None or not caller().sees(session.owner):
        raise codes.SessionNotFound(session_id)
    return session


@bp.post("/sessions/new")
@document_response(SessionCreated, 201)
async def new_session() -> tuple[dict[str, str], int]:
    """Create an empty session."""
    rt = engine()
    session = await rt.store.create_session(new_id(), rt.provider.model, now_iso(), caller().owner)
    rt.stats.sessions_created += 1
    return {"session_id": session.session_id, "model": session.model, "created_at": session.created_at}, 201


_DIGITS = re.compile(r"[0-9]{1,7}")


def _query(name: str) -> str | None:
    """A query parameter given at most once (None: absent); 400 when it is repeated."""
    values = request.args.getlist(name)
    if len(values) > 1:
        raise codes.Refused(codes.INVALID_REQUEST, f"query parameter {name!r} is given more than once")
    return values[0] if values else None


def _limit() -> int:
    raw = _query("limit")
    if raw is None:
        return LIST_LIMIT
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIST_LIMIT:
        raise codes.Refused(
            codes.INVALID_REQUEST,
            f"query parameter 'limit' must be an integer from 1 to {MAX_LIST_LIMIT}, not {raw[:40]!r}",
        )
    return int(raw)


@bp.get("/sessions")
@document_querystring(SessionListQuery)
@document_response(SessionList)
@document_response(ErrorBody, 400)
async def list_sessions() -> dict[str, object]:
    """The caller's sessions, latest activity first, a page at a time.

    The caller's: every session for an admin key or without API_KEYS (``scope`` ``all``),
    else the sessions of the caller's key (``own``).  Each summary has the session's
    ``title`` (its first user message, cut to 80 characters; ``""`` while it has none) and
    ``message_count``, not its messages (``GET /sessions/{session_id}`` has them).  Sessions
    with equal ``last_activity`` (to the ms) come in an order of their own, the same on
    every page.

    Query: ``limit``, the most sessions in the page, 1 to 1000 (default 100); ``cursor``,
    the ``next_cursor`` of the page before (omitted: the first page).  ``count`` is how many
    sessions the caller has in all; ``next_cursor`` is null on the last page.  Paging
    through with the cursors lists each session once, unless it has new activity meanwhile
    (it moves to the front of the list).  A ``limit`` that is not an integer in range, or a
    ``cursor`` that is not one this server gave, is a 400 ``invalid_request``.
    """
    limit = _limit()
    cursor = _query("cursor")
    who = caller()
    owner = None if who.admin else who.owner
    store = engine().store
    page = await store.list_sessions(owner, limit, cursor)
    count = await store.count_sessions(owner)
    return {
        "sessions": [
            {
                "session_id": s.session_id,
                "title": s.title,
                "message_count": s.message_count,
                "created_at": s.created_at,
                "last_activity": s.last_activity,
            }
            for s in page.sessions
        ],
        "count": count,
        "next_cursor": page.next_cursor,
        "scope": "all" if who.admin or who.owner is None else "own",
    }


@bp.get("/sessions/<session_id>")
@document_response(SessionDetail)
@document_response(ErrorBody, 404)
async def get_session(session_id: str) -> dict[str, object]:
    """A session with its whole history (answers cut short carry ``"interrupted": true``)."""
    session = await _session(session_id)
    messages = session.messages
    users = sum(1 for m in messages if m.role == "user")
    return {
        "session_id": session.session_id,
        "model": session.model,
        "created_at": session.created_at,
        "last_activity": session.last_activity,
        "message_count": len(messages),
        "user_messages": users,
        "ai_messages": len(messages) - users,
        "messages": [m.to_json() for m in messages],
        "generating": session.generating,
        "queued": session.queued,
    }


@bp.delete("/sessions/<session_id>")
@document_response(SessionDeleted)
@document_response(ErrorBody, 404)
async def delete_session(session_id: str) -> dict[str, str]:
    """Delete a session; a generation running in it (on any instance) and a message queued
    in it are cancelled first.  Its session streams end."""
    rt = engine()
    session = await _session(session_id)
    await rt.control.cancel_session(session_id, session.generating, session.queued)
    if not await rt.store.delete_session(session_id):
        raise codes.SessionNotFound(session_id)
    return {"deleted": session_id}


@bp.post("/sessions/<session_id>/clear")
@document_response(SessionCleared)
@document_response(ErrorBody, 404)
async def clear_session(session_id: str) -> dict[str, object]:
    """Forget a session's history; a generation running in it (on any instance) and a
    message queued in it are cancelled first."""
    rt = engine()
    session = await _session(session_id)
    await rt.control.cancel_session(session_id, session.generating, session.queued)
    if not await rt.store.clear_session(session_id):
        raise codes.SessionNotFound(session_id)
    return {"session_id": session_id, "message_count": 0}
