"""The sessions: create, list, read, clear, delete."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import document_response

from quart_sse import codes
from quart_sse.blueprints import caller, engine
from quart_sse.blueprints.schemas import (
    ErrorBody,
    SessionCleared,
    SessionCreated,
    SessionDeleted,
    SessionDetail,
    SessionList,
)
from quart_sse.ids import new_id
from quart_sse.models import Session, now_iso

bp = Blueprint("sessions", __name__)


async def _session(session_id: str) -> Session:
    """The session, if the caller may see it; else 404 as for an unknown id."""
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


@bp.get("/sessions")
@document_response(SessionList)
async def list_sessions() -> dict[str, object]:
    """The caller's sessions (every session for an admin key, or without keys), oldest first."""
    who = caller()
    sessions = await engine().store.list_sessions(None if who.admin else who.owner)
    items = [
        {
            "session_id": s.session_id,
            "message_count": len(s.messages),
            "created_at": s.created_at,
            "last_activity": s.last_activity,
        }
        for s in sessions
    ]
    return {
        "sessions": items,
        "count": len(items),
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
    }


@bp.delete("/sessions/<session_id>")
@document_response(SessionDeleted)
@document_response(ErrorBody, 404)
async def delete_session(session_id: str) -> dict[str, str]:
    """Delete a session; a generation running in it is cancelled first."""
    rt = engine()
    await _session(session_id)
    await rt.generations.cancel_session(session_id)
    if not await rt.store.delete_session(session_id):
        raise codes.SessionNotFound(session_id)
    return {"deleted": session_id}


@bp.post("/sessions/<session_id>/clear")
@document_response(SessionCleared)
@document_response(ErrorBody, 404)
async def clear_session(session_id: str) -> dict[str, object]:
    """Forget a session's history; a generation running in it is cancelled first."""
    rt = engine()
    await _session(session_id)
    await rt.generations.cancel_session(session_id)
    if not await rt.store.clear_session(session_id):
        raise codes.SessionNotFound(session_id)
    return {"session_id": session_id, "message_count": 0}
