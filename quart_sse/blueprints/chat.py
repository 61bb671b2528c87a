"""POST /chat: a user message starts a generation; the answer is read from its events_url.

``POST /chat/stream``, which answers with the stream itself, is served by the streaming
layer in front of Quart (:mod:`quart_sse.asgi`); its documentation is added to the
OpenAPI schema by :class:`quart_sse.app.SSEOpenAPIProvider`.
"""

from __future__ import annotations

from quart import Blueprint, request
from quart_schema import document_request, document_response

from quart_sse.chat import start_generation
from quart_sse.generation import events_url
from quart_sse.runtime import runtime
from quart_sse.schemas import ChatAccepted, ChatRequest, ErrorBody

bp = Blueprint("chat", __name__)


@bp.post("/chat")
@document_request(ChatRequest)
@document_response(ChatAccepted, 202)
@document_response(ErrorBody, 400)
async def chat() -> tuple[dict[str, str], int]:
    """Send a message; answers at once with the stream to read (for EventSource clients)."""
    rt = runtime()
    raw = await request.get_data(True, False, False)  # 413 past MAX_BODY_BYTES (Quart's MAX_CONTENT_LENGTH)
    generation = await start_generation(rt, raw, rt.limits.identify(request.scope))
    stream_id = generation.stream_id
    return {
        "session_id": generation.session_id,
        "stream_id": stream_id,
        "events_url": events_url(stream_id),
    }, 202
