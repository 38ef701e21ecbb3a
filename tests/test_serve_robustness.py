"""`ftkit serve` keeps answering when things go wrong, in process, on fake batch functions (no model is loaded).

A failing batch (it raises, returns the wrong number of results, or its on_batch hook raises) costs that batch a 500
and nothing more; a 500 says an error id, never the exception's text; a request that outlives its timeout gets a 504
and frees its queue slot; a dead consumer turns /health to 503 and new requests to an immediate 503; the flags refuse
nan, inf, out-of-range numbers, a non-ASCII key and a non-loopback address without a key; /v1/models shows no paths.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ftkit.errors import FtkitError
from ftkit.serve.app import create_app, stream_events
from ftkit.serve.batching import DynamicBatcher
from ftkit.serve.engine import ChatJob
from ftkit.serve.options import ServeOptions, parse
from ftkit.serve.protocol import ApiError, ChatRequest
from ftkit.serve.variants import Served, Variant

SECRET = "secret-detail at /home/alice/private/run-7"  # what an exception may hold and a client must never see


class Fatal(BaseException):
    """Not an Exception: nothing in the consumer catches it, so it kills the consumer task."""


class FakeTokenizer:
    pad_token_id, eos_token_id = 0, 2

    def apply_chat_template(self, messages: list[dict[str, str]], **kwargs: Any) -> list[int]:
        text = " ".join(m["content"] for m in messages)
        if "explode" in text:  # a failure outside the batcher, in the route itself
            raise RuntimeError(SECRET)
        return [1] * len(text.split())


class FakeRecipe:
    serves = ("classify",)

    def prompt(self, text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": text}]


def served(run_dir: Path) -> Served:
    variant = Variant(
        name="tickets",
        run_dir=str(run_dir),
        weight=1.0,
        recipe=FakeRecipe(),
        recipe_name="tickets",
        adapter=None,
        kinds=("chat", "classify"),
    )
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=2))
    return Served(model=model, tokenizer=FakeTokenizer(), variants={"tickets": variant}, base_name="tiny-llama")


def labels(key: Hashable, payloads: list[list[str]]) -> list[list[dict[str, str]]]:
    """A classify batch function: each request's texts, each labelled with its own text."""
    return [[{"label": text} for text in texts] for texts in payloads]


@pytest.fixture()
def serve(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """serve(run, **options) -> a TestClient on the app with that batch function (lifespan started)."""
    clients: list[TestClient] = []

    def start(run: Callable[[Hashable, list[Any]], list[Any]], **options: Any) -> TestClient:
        opts = ServeOptions(runs=[], max_wait_ms=1, **options)
        client = TestClient(create_app(served(tmp_path / "runs" / "tickets"), opts, run=run))
        clients.append(client)
        return client.__enter__()

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def classify(client: TestClient, text: str = "pump leaks", **headers: Any) -> Any:
    return client.post("/v1/classify", json={"input": text}, headers=headers)


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


# --- a failing batch fails only its own requests


def raises_once(key: Hashable, payloads: list[Any], calls: list[int]) -> list[Any]:
    calls.append(1)
    if len(calls) == 1:
        raise RuntimeError(SECRET)
    return labels(key, payloads)


def wrong_length_once(key: Hashable, payloads: list[Any], calls: list[int]) -> list[Any]:
    calls.append(1)
    return [] if len(calls) == 1 else labels(key, payloads)


@pytest.mark.parametrize("run", [raises_once, wrong_length_once], ids=["raises", "wrong-length"])
def test_a_failing_batch_answers_500_and_the_next_request_is_served(serve, run, caplog):
    calls: list[int] = []
    client = serve(lambda key, payloads: run(key, payloads, calls))
    with caplog.at_level(logging.ERROR, logger="ftkit"):
        failed = classify(client)
    error = error_of(failed, 500)
    assert error["code"] == "internal_error" and error["type"] == "server_error"
    assert "secret" not in failed.text and "/home/alice" not in failed.text and "RuntimeError" not in failed.text
    ident = error["message"].split("error id ")[1].split(")")[0]
    logged = [r for r in caplog.records if ident in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the exception is in the server's log, under that id
    assert ("secret" in logged[0].getMessage()) == (run is raises_once)
    answered = classify(client, "valve sticks")
    assert answered.status_code == 200, answered.text
    assert answered.json()["data"] == [{"index": 0, "label": "valve sticks"}]
    assert client.get("/health").json()["status"] == "ok"


def test_an_error_in_the_route_answers_500_without_its_text(serve, caplog):
    client = serve(labels)
    with caplog.at_level(logging.ERROR, logger="ftkit"):
        failed = classify(client, "please explode")  # the fake tokenizer raises in the route, before the batcher
    error = error_of(failed, 500)
    assert error["code"] == "internal_error" and "secret" not in failed.text and "/home/alice" not in failed.text
    ident = error["message"].split("error id ")[1].split(")")[0]
    assert [r for r in caplog.records if ident in r.getMessage() and SECRET in r.getMessage()]
    assert classify(client).status_code == 200


def test_an_on_batch_hook_that_raises_fails_its_batch_only():
    hooked: list[int] = []

    def on_batch(key: Hashable, size: int) -> None:
        hooked.append(size)
        if len(hooked) == 1:
            raise ValueError(SECRET)

    async def scenario() -> tuple[ApiError, list[int]]:
        batcher = DynamicBatcher(lambda key, xs: [x * 10 for x in xs], 4, 1, 8, on_batch=on_batch)
        batcher.start()
        with pytest.raises(ApiError) as failed:
            await batcher.submit("a", 1)
        later = [await batcher.submit("a", 2), await batcher.submit("b", 3)]
        await batcher.stop()
        return failed.value, later

    failed, later = asyncio.run(scenario())
    assert failed.status == 500 and failed.code == "internal_error" and "secret" not in failed.message
    assert later == [20, 30]


# --- timeouts


def test_a_request_that_outlives_its_timeout_gets_504(serve):
    release = threading.Event()

    def slow(key: Hashable, payloads: list[Any]) -> list[Any]:
        release.wait(30)
        return labels(key, payloads)

    client = serve(slow, request_timeout_s=0.3)
    try:
        error = error_of(classify(client), 504)
        assert error["code"] == "request_timeout" and "0.3 s" in error["message"]
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["queue"] == 0
    finally:
        release.set()  # the worker thread must end before the app shuts down


def test_a_timed_out_request_gives_its_queue_slot_back_at_once():
    """max_queue=1: a request that timed out while queued behind a running batch must not hold the one slot."""
    entered, release, calls = threading.Event(), threading.Event(), []

    def run(key: Hashable, payloads: list[int]) -> list[int]:
        entered.set()
        release.wait(30)
        calls.append(payloads)
        return [p * 10 for p in payloads]

    async def scenario() -> list[int]:
        batcher = DynamicBatcher(run, max_batch_size=4, max_wait_ms=1, max_queue=1, timeout_s=0.3)
        batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit("a", 1))
            await asyncio.to_thread(entered.wait, 30)  # the first request's batch is running (and blocked)
            with pytest.raises(ApiError) as late:
                await batcher.submit("a", 2)  # queued behind the blocked batch, it times out
            assert late.value.status == 504 and batcher.waiting == 0
            batcher.timeout = None  # the next request waits as long as the blocked batch takes
            third = asyncio.ensure_future(batcher.submit("a", 3))  # refused with 503 if the slot had leaked
            await asyncio.sleep(0.05)
            assert not third.done()  # queued, not refused
        finally:
            release.set()  # a failing assertion must not leave the worker thread blocked
        first_result = await asyncio.gather(first, return_exceptions=True)
        result = await asyncio.wait_for(third, 30)  # a safety net: a lost request fails here instead of hanging
        await batcher.stop()
        assert isinstance(first_result[0], ApiError) and first_result[0].status == 504
        return [result, batcher.waiting]

    assert asyncio.run(scenario()) == [30, 0]
    assert calls == [[1], [3]]  # the request that gave up was never run


def test_a_stream_that_outlives_its_timeout_ends_with_an_error_event():
    release = threading.Event()

    class Stuck:
        def stream(self, variant, job, temperature, top_p, halt: threading.Event, info: dict) -> Iterator[str]:
            yield "Hel"
            release.wait(30)  # the model is busy elsewhere
            if not halt.is_set():
                yield "lo"

    async def collect() -> tuple[list[str], dict[str, int]]:
        body, streams = ChatRequest(messages=[{"role": "user", "content": "x"}]), {"active": 0}
        events = stream_events(Stuck(), SimpleNamespace(name="m"), ChatJob([1], 8, []), body, streams, 0.3)
        try:
            return [line async for line in events], streams
        finally:
            release.set()

    lines, streams = asyncio.run(collect())
    last = json.loads(lines[-1][6:])
    assert last["error"]["code"] == "request_timeout" and "data: [DONE]\n\n" not in lines
    assert streams["active"] == 0


def test_a_stream_that_fails_reports_an_error_id_not_the_exception():
    class Failing:
        def stream(self, *args: Any) -> Iterator[str]:
            yield "Hel"
            raise RuntimeError(SECRET)

    async def collect() -> list[str]:
        body = ChatRequest(messages=[{"role": "user", "content": "x"}])
        events = stream_events(Failing(), SimpleNamespace(name="m"), ChatJob([1], 8, []), body, {"active": 0})
        return [line async for line in events]

    last = json.loads(asyncio.run(collect())[-1][6:])
    assert last["error"]["code"] == "internal_error" and "secret" not in json.dumps(last)


# --- a dead consumer


def test_a_dead_consumer_makes_health_unhealthy_and_requests_503_at_once(serve):
    def fatal(key: Hashable, payloads: list[Any]) -> list[Any]:
        raise Fatal("the consumer cannot survive this")

    client = serve(fatal, request_timeout_s=20)  # a hang would end in a 504 after 20 s, and fail below
    assert client.get("/health").status_code == 200
    assert error_of(classify(client), 503)["code"] == "service_unavailable"  # its batch killed the consumer
    health = client.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "unhealthy" and "Fatal" in health.json()["reason"]
    assert error_of(classify(client), 503)["code"] == "service_unavailable"


def test_requests_waiting_when_the_consumer_dies_are_answered_503():
    entered, release = threading.Event(), threading.Event()

    def run(key: Hashable, payloads: list[int]) -> list[int]:
        entered.set()
        release.wait(30)
        raise Fatal

    async def scenario() -> tuple[list[Any], DynamicBatcher]:
        batcher = DynamicBatcher(run, max_batch_size=1, max_wait_ms=1, max_queue=8)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit("a", 1))
        await asyncio.to_thread(entered.wait, 30)
        queued = [asyncio.ensure_future(batcher.submit(key, i)) for i, key in enumerate("ab", start=2)]
        await asyncio.sleep(0.05)
        release.set()
        # wait_for: safety nets, so a request left hanging fails the test instead of stalling it
        results = await asyncio.wait_for(asyncio.gather(first, *queued, return_exceptions=True), 30)
        with pytest.raises(ApiError) as refused:
            await asyncio.wait_for(batcher.submit("a", 4), 30)
        results.append(refused.value)
        return results, batcher

    results, batcher = asyncio.run(scenario())
    assert [(r.status, r.code) for r in results] == [(503, "service_unavailable")] * 4
    assert batcher.waiting == 0 and "Fatal" in (batcher.failure or "")


# --- what the API shows and whom it lets in


def test_models_shows_names_and_no_paths(serve, tmp_path):
    client = serve(labels)
    response = client.get("/v1/models")
    assert response.status_code == 200
    [card] = response.json()["data"]
    assert card["id"] == "tickets" and card["recipe"] == "tickets" and card["base_model"] == "tiny-llama"
    assert str(tmp_path) not in response.text and "/runs/" not in response.text
    assert not any(isinstance(value, str) and value.startswith("/") for value in card.values())


def test_the_api_key_is_compared_as_utf8_bytes(serve):
    client = serve(labels, api_key="s3cret-key")
    assert classify(client, Authorization="Bearer s3cret-key").status_code == 200
    assert error_of(classify(client, Authorization="Bearer s3cret-kez"), 401)["code"] == "invalid_api_key"
    assert classify(client).status_code == 401
    assert client.get("/health").status_code == 200
    # parse refuses a non-ASCII key; the guard, given one anyway, matches the header's bytes to the key's UTF-8
    client = serve(labels, api_key="clé-ключ")
    assert classify(client, Authorization="Bearer clé-ключ".encode()).status_code == 200
    assert classify(client, Authorization="Bearer clé-ключ".encode("utf-16")).status_code == 401


# --- the flags


@pytest.fixture()
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FTKIT_API_KEY", raising=False)


def refused(*args: str) -> str:
    with pytest.raises(FtkitError) as error:
        parse(["--run", "some/run", *args])
    return str(error.value)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--max-wait-ms", "inf"], ["--max-wait-ms", "not a finite number"]),
        (["--max-wait-ms", "nan"], ["--max-wait-ms", "not a finite number"]),
        (["--max-wait-ms", "1e999"], ["--max-wait-ms", "not a finite number"]),
        (["--max-wait-ms", "-1"], ["--max-wait-ms", "below its minimum 0"]),
        (["--request-timeout-s", "nan"], ["--request-timeout-s", "not a finite number"]),
        (["--request-timeout-s", "inf"], ["--request-timeout-s", "not a finite number"]),
        (["--request-timeout-s", "0"], ["--request-timeout-s is 0"]),
        (["--request-timeout-s", "-5"], ["--request-timeout-s", "below its minimum"]),
        (["--max-wait-ms", "2000", "--request-timeout-s", "2"], ["--max-wait-ms 2000 is not below"]),
        (["--port", "0"], ["--port 0 is not a TCP port", "1-65535"]),
        (["--port", "65536"], ["--port 65536 is not a TCP port"]),
        (["--max-queue", "-1"], ["--max-queue", "below its minimum 1"]),
        (["--run", "other/run:nan"], ["weight nan"]),
    ],
)
def test_numeric_flags_must_be_finite_and_in_range(no_env_key, args, fragments):
    message = refused(*args)
    assert all(fragment in message for fragment in fragments), message
    assert "Fix:" in message


def test_defaults_are_accepted(no_env_key):
    opts = parse(["--run", "some/run"])
    assert opts.request_timeout_s == 300 and opts.max_wait_ms == 10 and opts.port == 8000
    assert opts.api_key is None and not opts.allow_unauthenticated


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "myhost.example"])
def test_a_non_loopback_host_needs_a_key_or_the_explicit_flag(no_env_key, monkeypatch, host):
    message = refused("--host", host)
    assert f"--host {host} is not a loopback address" in message and "--allow-unauthenticated" in message
    assert parse(["--run", "r", "--host", host, "--allow-unauthenticated"]).allow_unauthenticated
    assert parse(["--run", "r", "--host", host, "--api-key", "k3y"]).api_key == "k3y"
    monkeypatch.setenv("FTKIT_API_KEY", "from-env")
    assert parse(["--run", "r", "--host", host]).api_key == "from-env"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_a_loopback_host_needs_no_key(no_env_key, host):
    assert parse(["--run", "r", "--host", host]).api_key is None


@pytest.mark.parametrize(
    ("key", "fragment"),
    [("clé", "'é'"), ("tab\there", "'\\t'"), (" padded", "starts or ends with a space"), ("end ", "a space")],
)
def test_an_api_key_must_be_printable_ascii(no_env_key, monkeypatch, key, fragment):
    message = refused("--api-key", key)
    assert message.startswith("--api-key: ") and fragment in message and "printable ASCII" in message
    monkeypatch.setenv("FTKIT_API_KEY", key)
    assert refused().startswith("FTKIT_API_KEY: ")
    assert parse(["--run", "r", "--api-key", "inner space ok"]).api_key == "inner space ok"
