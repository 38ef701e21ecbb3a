"""Request bodies (pydantic, so FastAPI validates them and /docs describes them) and the OpenAI error shape."""

from __future__ import annotations

import logging
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("ftkit")


class ApiError(Exception):
    """An error answered as OpenAI does: {"error": {"message", "type", "param", "code"}} with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def log_failure(error: BaseException, what: str) -> str:
    """Log an unexpected failure with its traceback under a new error id, and return the id.

    The id goes to the client instead of the exception's text, which can hold paths, data or model internals.
    """
    ident = uuid.uuid4().hex[:12]
    log.error("%s failed (error id %s): %s: %s", what, ident, type(error).__name__, error, exc_info=error)
    return ident


def server_error(ident: str) -> ApiError:
    """The 500 answered for an unexpected failure: a generic message and the error id to find it in the log."""
    message = f"The server failed on this request (error id {ident}); the server's log has the details"
    return ApiError(500, message, type="server_error", code="internal_error")


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    # Unknown fields (name, tool_calls, ...) are ignored, as the OpenAI client may send them.
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = Field(None, description="a served model id (GET /v1/models); none: routed by weight")
    messages: list[Message] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1, description="new tokens at most; capped by --max-tokens-limit")
    max_completion_tokens: int | None = Field(None, ge=1, description="OpenAI's newer name for max_tokens")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0: greedy (deterministic)")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = Field(None, description="up to 4 strings that end the answer (not included)")
    n: int = Field(1, description="only 1 is supported")
    stream: bool = False
    user: str | None = Field(None, description="end-user id: A/B routing is sticky per user")

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]


class TextsRequest(BaseModel):
    """classify / extract: one text or a list of texts."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = Field(None, description="a served model id; none: routed by weight among capable ones")
    input: str | list[str] = Field(..., description="one text or a list of texts")
    user: str | None = Field(None, description="end-user id: A/B routing is sticky per user")

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)
