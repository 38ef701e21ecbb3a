"""The ASGI layer in front of every route: Bearer auth, the request body limit, and per-request metrics.

It is plain ASGI rather than FastAPI middleware so that it can bound the body while it is read (a chunked upload
without Content-Length is cut off at the limit too) and time a streamed response until its last byte.

The key is compared as bytes, UTF-8 on both sides, in constant time: the header's raw bytes are never decoded, so
no decoding can make a right key fail or a wrong one pass (options.parse accepts only printable-ASCII keys, the
ones every HTTP client can send).
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from ftkit.serve.prometheus import Metrics
from ftkit.serve.protocol import error_body

ENDPOINTS = ("/v1/chat/completions", "/v1/classify", "/v1/extract", "/v1/models")
OPEN_PATHS = ("/health",)  # answered without the API key, so load balancers can probe


class Guard:
    def __init__(self, app: Any, api_key: str | None, max_body_bytes: int, metrics: Metrics) -> None:
        self.app, self.api_key, self.max_body, self.metrics = app, api_key, max_body_bytes, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else None
        started, status = time.perf_counter(), {"code": 500}
        state = scope.setdefault("state", {})

        async def timed_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)
            if endpoint and message["type"] == "http.response.body" and not message.get("more_body", False):
                code = status["code"]
                error = None
                if code >= 400:
                    error = state.get("error_type") or ("server_error" if code >= 500 else "invalid_request_error")
                self.metrics.observe(endpoint, state.get("variant"), code, time.perf_counter() - started, error)

        if self.api_key is not None and path not in OPEN_PATHS and not self._authorised(scope):
            state["error_type"] = "authentication_error"
            message = "Incorrect or missing API key: send the header 'Authorization: Bearer <key>'"
            body = error_body(message, "invalid_request_error", None, "invalid_api_key")
            await _respond(timed_send, 401, body, [(b"www-authenticate", b"Bearer")])
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            body = await self._read_body(scope, receive)
            if body is None:
                state["error_type"] = "request_too_large"
                message = f"The request body is larger than the server's limit of {self.max_body} bytes"
                await _respond(timed_send, 413, error_body(message, "invalid_request_error", None, "body_too_large"))
                return
            receive = _replay(body, receive)
        try:
            await self.app(scope, receive, timed_send)
        except Exception:
            if "error_id" not in state:
                raise
            # Starlette re-raises after the app's 500 handler answered and logged it: do not log it twice

    def _authorised(self, scope: dict) -> bool:
        given = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        assert self.api_key is not None
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key.encode("utf-8"))

    async def _read_body(self, scope: dict, receive: Any) -> bytes | None:
        """The whole body, or None once it passes the limit (declared or actual)."""
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """A receive() that hands the app the body already read, then the real channel (to see a disconnect)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _respond(send: Any, status: int, body: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": payload})
