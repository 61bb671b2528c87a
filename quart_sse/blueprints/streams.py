"""GET /streams/{id}/events (read, resume) and POST /streams/{id}/cancel."""

from __future__ import annotations

from quart import Blueprint, Response, request
from quart_schema import document_response

from quart_sse import errors
from quart_sse.blueprints.chat import sse_response
from quart_sse.errors import APIError
from quart_sse.runtime import runtime
from quart_sse.schemas import CancelResult, ErrorBody
from quart_sse.sse import parse_last_event_id

bp = Blueprint("streams", __name__)


@bp.get("/streams/<stream_id>/events")
@document_response(ErrorBody, 404)
async def stream_events(stream_id: str) -> Response:
    """Read a stream (text/event-stream): replay after ``Last-Event-ID``, then live.

    The id comes from the ``Last-Event-ID`` header or, for clients that cannot set headers,
    ``?last_event_id=`` (the header wins).  Without one the stream is read from its first
    event.  A finished stream stays readable for ``STREAM_RETENTION`` seconds; when it has
    nothing after the given id the answer is ``204 No Content`` (an EventSource then stops
    reconnecting).
    """
    rt = runtime()
    raw = request.headers.get("Last-Event-ID")
    if raw is None:
        raw = request.args.get("last_event_id")
    try:
        after = parse_last_event_id(raw)
    except ValueError as exc:
        raise APIError(400, errors.INVALID_LAST_EVENT_ID, f"malformed Last-Event-ID: {exc}") from None
    info = await rt.store.get_stream(stream_id)
    if info is None:
        raise APIError(404, errors.STREAM_NOT_FOUND, f"no stream {stream_id} (unknown or expired)")
    after = after or 0
    if info.finished and after >= info.last_id:
        return Response("", 204)
    return sse_response(rt, stream_id, after)


@bp.post("/streams/<stream_id>/cancel")
@document_response(CancelResult)
@document_response(ErrorBody, 404)
async def cancel_stream(stream_id: str) -> dict[str, object]:
    """Stop a generation: its stream ends with an ``error`` event of code ``cancelled``.

    What was generated so far is kept in the session, marked ``interrupted``.
    ``cancelled`` is false when the generation had already ended.
    """
    rt = runtime()
    if stream_id not in rt.generations.running and await rt.store.get_stream(stream_id) is None:
        raise APIError(404, errors.STREAM_NOT_FOUND, f"no stream {stream_id} (unknown or expired)")
    cancelled = await rt.generations.cancel(stream_id)
    return {"stream_id": stream_id, "cancelled": cancelled}
