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
    """Stop a generation, on whichever instance runs it: its stream ends with an ``error``
    event of code ``cancelled``; answers once it has ended.

    What was generated so far is kept in the session, marked ``interrupted``.  A message
    queued behind a running answer is taken out of the queue (its stream ends the same
    way).  ``cancelled`` is false when the generation had already ended (cancelling again
    is harmless); ``status`` is how the stream ended: ``complete`` or the code of its final
    ``error`` event.  503 ``store_unavailable`` when the instance running it did not end it
    in time.
    """
    rt = engine()
    info = await rt.store.get_stream(stream_id)
    if info is None or not caller().sees(info.owner):
        raise codes.StreamNotFound(stream_id)
    result = await rt.control.cancel(info)
    return {"stream_id": stream_id, "cancelled": result.cancelled, "status": result.status}
