"""POST /streams/{id}/cancel.

``GET /streams/{id}/events`` (read, resume) is the HTTP edge's own route (:mod:`quart_sse.http.edge`).
"""

from __future__ import annotations

from quart import Blueprint
from quart_schema import document_response

from quart_sse import codes
from quart_sse.blueprints import caller, engine
from quart_sse.blueprints.schemas import CancelResult, ErrorBody

bp = Blueprint("streams", __name__)


@bp.post("/streams/<stream_id>/cancel")
@document_response(CancelResult)
@document_response(ErrorBody, 404)
async def cancel_stream(stream_id: str) -> dict[str, object]:
    """Stop a generation: its stream ends with an ``error`` event of code ``cancelled``.

    What was generated so far is kept in the session, marked ``interrupted``.
    ``cancelled`` is false when the generation had already ended.
    """
    rt = engine()
    info = await rt.store.get_stream(stream_id)
    if info is None or not caller().sees(info.owner):
        raise codes.StreamNotFound(stream_id)
    cancelled = await rt.generations.cancel(stream_id)
    return {"stream_id": stream_id, "cancelled": cancelled}
