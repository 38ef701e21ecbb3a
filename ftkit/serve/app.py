"""The FastAPI app: OpenAI-compatible chat, classify, extract, models, health, metrics; errors in OpenAI's shape.

Every request is checked before it reaches the model (max_tokens, prompt length, number of inputs, n, stop), so
a bad request costs a 4xx and nothing else; an unexpected failure inside a batch fails that batch's requests with
a 500 and the server keeps serving. A 500 says only an error id; the exception goes to the server's log. A request
that outlives --request-timeout-s gets a 504 (a stream, already answering 200, ends with an error event instead).
Non-streamed requests go through the DynamicBatcher; streamed ones run as a batch of one (TextIteratorStreamer
follows one row), sharing the model lock with the batches. /health answers 503 once the batcher's consumer is dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from ftkit.serve.batching import DynamicBatcher
from ftkit.serve.engine import ChatJob, Engine, cut_at_stop
from ftkit.serve.guard import Guard
from ftkit.serve.options import ServeOptions
from ftkit.serve.prometheus import CONTENT_TYPE, Metrics
from ftkit.serve.protocol import ApiError, ChatRequest, TextsRequest, error_body, log_failure, server_error
from ftkit.serve.variants import Router, Served, Variant

MAX_STOPS = 4


def create_app(
    served: Served, opts: ServeOptions, run: Callable[[Hashable, list[Any]], list[Any]] | None = None
) -> Any:
    """The ASGI app (FastAPI wrapped in the auth / body-limit / metrics guard).

    run(key, payloads) answers a batch; by default the engine's model calls (tests give their own).
    """
    engine, router, metrics = Engine(served), Router(served.variants), Metrics()
    batcher = DynamicBatcher(
        run or (lambda key, payloads: run_batch(engine, key, payloads)),
        opts.max_batch_size,
        opts.max_wait_ms,
        opts.max_queue,
        on_batch=lambda key, size: metrics.batch_size.labels(key[0], key[1]).observe(size),
        timeout_s=opts.request_timeout_s,
    )
    streams = {"active": 0}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="ftkit serve", description=__doc__, lifespan=lifespan)
    install_error_handlers(app)

    @app.get("/health")
    async def health() -> Any:
        report = {"status": "ok", "models": list(served.variants), "queue": batcher.waiting}
        if not batcher.alive:  # requests would get 503: say so, so a load balancer or supervisor acts on it
            return JSONResponse({**report, "status": "unhealthy", "reason": batcher.failure}, status_code=503)
        return report

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.queue.set(batcher.waiting)
        metrics.streams.set(streams["active"])
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(v, served.base_name) for v in served.variants.values()]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request) -> Any:
        if body.n != 1:
            raise ApiError(400, "Only n=1 is supported", param="n", code="unsupported_value")
        stops = body.stops()
        if len(stops) > MAX_STOPS:
            raise ApiError(400, f"At most {MAX_STOPS} stop sequences are allowed", param="stop")
        max_tokens = body.max_completion_tokens or body.max_tokens or opts.default_max_tokens
        if max_tokens > opts.max_tokens_limit:
            raise ApiError(
                400,
                f"max_tokens is {max_tokens}, above this server's limit of {opts.max_tokens_limit}",
                param="max_tokens",
                code="max_tokens_exceeded",
            )
        variant = router.pick("chat", body.model, body.user)
        request.state.variant = variant.name
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        try:
            ids = engine.prompt_ids(messages)
        except Exception as error:  # the chat template rejects e.g. a conversation in an order it cannot render
            raise ApiError(400, f"The chat template cannot render these messages: {error}", param="messages") from None
        check_prompt(len(ids), opts, "messages")
        job = ChatJob(ids, max_tokens, stops)
        if body.stream:
            if batcher.waiting + streams["active"] >= opts.max_queue:
                raise ApiError(503, "The server is at capacity; retry shortly", "server_overloaded", code="queue_full")
            events = stream_events(engine, variant, job, body, streams, opts.request_timeout_s)
            return StreamingResponse(events, media_type="text/event-stream")
        key = ("chat", variant.name, body.temperature, body.top_p)
        result = await batcher.submit(key, job, reserved=streams["active"])
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": variant.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.text},
                    "finish_reason": result.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            },
        }

    async def texts_endpoint(kind: str, body: TextsRequest, request: Request) -> dict[str, Any]:
        texts = body.texts()
        if not texts:
            raise ApiError(400, "input is an empty list; give one text or a list of texts", param="input")
        if len(texts) > opts.max_inputs:
            raise ApiError(400, f"input has {len(texts)} texts, above the limit of {opts.max_inputs}", param="input")
        if any(not text.strip() for text in texts):
            raise ApiError(400, "input holds an empty text", param="input")
        variant = router.pick(kind, body.model, body.user)
        request.state.variant = variant.name
        for text in texts:
            check_prompt(len(engine.prompt_ids(variant.recipe.prompt(text))), opts, "input")
        results = await batcher.submit((kind, variant.name), texts, reserved=streams["active"])
        data = [{"index": i, **result} for i, result in enumerate(results)]
        return {"object": "list", "model": variant.name, "data": data}

    @app.post("/v1/classify")
    async def classify(body: TextsRequest, request: Request) -> dict[str, Any]:
        """Label scoring: each text's label and every label's probability (they sum to 1)."""
        return await texts_endpoint("classify", body, request)

    @app.post("/v1/extract")
    async def extract(body: TextsRequest, request: Request) -> dict[str, Any]:
        """NER: each text's entities with type and character offsets (text[start:end] is the mention)."""
        return await texts_endpoint("extract", body, request)

    return Guard(app, opts.api_key, opts.max_body_bytes, metrics)


def run_batch(engine: Engine, key: Hashable, payloads: list[Any]) -> list[Any]:
    """One model call for a batch of requests that share key = (kind, variant, ...)."""
    kind, name = key[0], key[1]  # type: ignore[index]
    variant = engine.variants[name]
    if kind == "chat":
        return engine.chat(variant, key[2], key[3], payloads)  # type: ignore[index]
    flat = [text for texts in payloads for text in texts]
    results = engine.run_task(variant, kind, flat)
    split, start = [], 0
    for texts in payloads:
        split.append(results[start : start + len(texts)])
        start += len(texts)
    return split


def check_prompt(length: int, opts: ServeOptions, param: str) -> None:
    if length > opts.max_prompt_tokens:
        raise ApiError(
            400,
            f"The prompt is {length} tokens (chat template included), above this server's limit of "
            f"{opts.max_prompt_tokens}",
            param=param,
            code="context_length_exceeded",
        )


def model_card(variant: Variant, base: str) -> dict[str, Any]:
    """What a client may know of a variant: its name and abilities, never where it lives on the server's disk."""
    return {
        "id": variant.name,
        "object": "model",
        "created": variant.created,
        "owned_by": "ftkit",
        "recipe": variant.recipe_name,
        "base_model": base,
        "weight": variant.weight,
        "capabilities": list(variant.kinds),
    }


async def stream_events(
    engine: Engine,
    variant: Variant,
    job: ChatJob,
    body: ChatRequest,
    streams: dict[str, int],
    timeout_s: float | None = None,
) -> AsyncIterator[str]:
    """Server-sent events as OpenAI sends them: a role chunk, content chunks, a finish chunk, then [DONE].

    Text that could be the start of a stop string is held back until it is known not to be one. A stream still
    going after timeout_s ends with an error event (its 200 is already sent) and stops its generation.
    """
    ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def chunk(delta: dict[str, str], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        payload = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": variant.name}
        return f"data: {json.dumps({**payload, 'choices': [choice]})}\n\n"

    halt, info = threading.Event(), {}
    pieces = engine.stream(variant, job, body.temperature, body.top_p, halt, info)
    hold = max((len(s) for s in job.stops), default=1) - 1
    text, sent, stopped = "", 0, False
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    streams["active"] += 1
    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0)
            try:
                piece = await asyncio.wait_for(asyncio.to_thread(next, pieces, None), left)
            except TimeoutError:
                message = f"The request took longer than this server's limit of {timeout_s:g} s; retry later"
                yield f"data: {json.dumps(error_body(message, 'timeout_error', None, 'request_timeout'))}\n\n"
                return
            if piece is None:
                break
            text += piece
            cut, stopped = cut_at_stop(text, job.stops)
            end = len(cut) if stopped else max(sent, len(text) - hold)
            if end > sent:
                yield chunk({"content": text[sent:end]})
                sent = end
            if stopped:
                break
        if not stopped and len(text) > sent:
            yield chunk({"content": text[sent:]})
        finish = "stop" if stopped or info.get("ended") else "length"
        yield chunk({}, finish)
        yield "data: [DONE]\n\n"
    except Exception as error:  # noqa: BLE001 (the stream has started: report in-band, keep the server up)
        failure = server_error(log_failure(error, f"a stream on {variant.name}"))
        yield f"data: {json.dumps(failure.body())}\n\n"
    finally:
        halt.set()  # generation stops at its next token and releases the model
        with contextlib.suppress(ValueError):  # a worker thread may still be inside next(pieces) (client gone)
            pieces.close()
        streams["active"] -= 1


def install_error_handlers(app: FastAPI) -> None:
    """Every error as {"error": {"message", "type", "param", "code"}}, the shape the openai client parses."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        request.state.error_type = error.type
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        request.state.error_type = "invalid_request_error"
        problems = error.errors()
        first = problems[0] if problems else {}
        if first.get("type") == "json_invalid":
            body = error_body(
                f"The body is not valid JSON: {first.get('msg')}", "invalid_request_error", None, "bad_json"
            )
            return JSONResponse(body, status_code=400)
        loc = [str(part) for part in first.get("loc", ()) if part != "body"]
        param = ".".join(loc) or None
        missing = first.get("type") == "missing"
        message = f"Missing required parameter: '{param}'" if missing else f"{param or 'body'}: {first.get('msg')}"
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        code = "missing_required_parameter" if missing else "invalid_value"
        return JSONResponse(error_body(message + more, "invalid_request_error", param, code), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        request.state.error_type = "invalid_request_error"
        body = error_body(str(error.detail), "invalid_request_error", None, None)
        return JSONResponse(body, status_code=error.status_code, headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        request.state.error_type = "server_error"
        ident = log_failure(error, f"{request.method} {request.url.path}")
        request.state.error_id = ident  # the Guard then knows it was answered and logged (no second traceback)
        failure = server_error(ident)
        return JSONResponse(failure.body(), status_code=failure.status)
