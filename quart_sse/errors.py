"""One error type, one body shape: ``{"error": {"code": ..., "message": ...}}`` (API.md, Errors)."""

from __future__ import annotations

from typing import Any

from quart import Quart, Response, jsonify
from werkzeug.exceptions import HTTPException

# Codes of error bodies (HTTP answers).
INVALID_JSON = "invalid_json"
INVALID_REQUEST = "invalid_request"
EMPTY_MESSAGE = "empty_message"
INVALID_LAST_EVENT_ID = "invalid_last_event_id"
UNAUTHORIZED = "unauthorized"
SESSION_NOT_FOUND = "session_not_found"
STREAM_NOT_FOUND = "stream_not_found"
NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
GENERATION_RUNNING = "generation_running"
BODY_TOO_LARGE = "body_too_large"
MESSAGE_TOO_LONG = "message_too_long"
CAPACITY = "capacity"
RATE_LIMITED = "rate_limited"
TOO_MANY_STREAMS = "too_many_streams"
SHUTTING_DOWN = "shutting_down"
INTERNAL = "internal_error"

# Codes of ``error`` stream events (API.md, Streams).
CANCELLED = "cancelled"
INTERRUPTED = "interrupted"
MODEL_UNAVAILABLE = "model_unavailable"
AUTH = "auth"
MODEL_ERROR = "model_error"
TIMEOUT = "timeout"
STORE_UNAVAILABLE = "store_unavailable"


class APIError(Exception):
    """An answer that is not 2xx: rendered as API.md's error body by :func:`register`."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class StoreUnavailable(APIError):
    """The store (Redis) cannot be reached: 503 ``store_unavailable``, try again shortly."""

    def __init__(self, message: str) -> None:
        super().__init__(503, STORE_UNAVAILABLE, message, headers={"Retry-After": "1"})


def error_response(error: APIError) -> Response:
    response = jsonify(error.body())
    response.status_code = error.status
    response.headers.update(error.headers)
    return response


_HTTP_CODES = {
    400: INVALID_REQUEST,
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    413: BODY_TOO_LARGE,
}


def register(app: Quart) -> None:
    """Reshape every error, ours and the framework's, into API.md's body."""

    @app.errorhandler(APIError)
    async def _api_error(error: APIError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        message = error.description or error.name
        if status == 413:
            message = "request body is larger than MAX_BODY_BYTES"
        response = error_response(APIError(status, _HTTP_CODES.get(status, f"http_{status}"), message))
        if status == 405 and error.get_response().headers.get("Allow"):
            response.headers["Allow"] = error.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        app.logger.exception("unhandled error", exc_info=error)
        return error_response(APIError(500, INTERNAL, "internal server error"))
