"""`ftkit serve`: a real server on a loopback port (tiny model, a tickets run as A/B adapters a/b and a NER run),
driven by the official openai client and httpx; plus the flag errors and the entity-offset mapping."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import tiny_overrides

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TICKET_LABELS = {"Mechanical", "Electrical", "Hydraulic/Pneumatic", "Software/Controls", "Safety/Facilities"}
FTKIT = str(Path(sys.executable).with_name("ftkit"))


def ftkit_env(folder: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("FTKIT_DEBUG", "FTKIT_API_KEY")}
    return {**base, "FTKIT_CACHE": str(folder / "cache"), "HF_HUB_OFFLINE": "1"}


def train(folder: Path, model: Path, *extra: str) -> Path:
    run_dir = folder / "run"
    overrides = tiny_overrides(model, run_dir, "evaluate.base=false", "evaluate.max_examples=4", *extra)
    result = subprocess.run(
        [FTKIT, "train", *overrides], cwd=folder, env=ftkit_env(folder), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tickets run served twice (a: weight 3, b: weight 1) and a NER run (weight 0: by name or for extract)."""
    folder = tmp_path_factory.mktemp("serve")
    (folder / "tickets").mkdir()
    (folder / "ner").mkdir()
    tickets = train(folder / "tickets", tiny_model)
    ner = train(folder / "ner", tiny_model, "recipe=ner", "recipe.max_new_tokens=12")
    port = free_port()
    command = [
        FTKIT, "serve", "--run", f"a={tickets}:3", "--run", f"b={tickets}:1", "--run", f"ner={ner}:0",
        "--port", str(port), "--max-tokens-limit", "64", "--max-body-bytes", "20000", "--max-wait-ms", "20",
    ]  # fmt: skip
    log = (folder / "server.log").open("w")
    env = {**ftkit_env(folder), "FTKIT_API_KEY": KEY}
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, (folder / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not answer /health in 300 s"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=120)


HTTP: dict[str, httpx.Client] = {}


def post(server: str, path: str, body: object) -> httpx.Response:
    """POST with the API key, on one kept-alive client per server (a new client per call costs ~1 s of TLS setup)."""
    if server not in HTTP:
        HTTP[server] = httpx.Client(headers=AUTH, timeout=120)
    return HTTP[server].post(f"{server}{path}", json=body)


def assert_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_models_lists_every_variant(client):
    models = {model.id: model for model in client.models.list().data}
    assert set(models) == {"a", "b", "ner"}
    assert models["a"].model_extra["recipe"] == "tickets" and models["ner"].model_extra["recipe"] == "ner"


def test_chat_and_streaming_agree_at_temperature_0(client):
    messages = [{"role": "user", "content": "The pump on line 3 leaks oil."}]
    reply = client.chat.completions.create(model="a", messages=messages, max_tokens=8, temperature=0)
    assert reply.model == "a" and reply.object == "chat.completion"
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert 0 < reply.usage.completion_tokens <= 8 and reply.usage.prompt_tokens > 0

    stream = client.chat.completions.create(model="a", messages=messages, max_tokens=8, temperature=0, stream=True)
    chunks = list(stream)
    assert len(chunks) >= 3 and chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == choice.message.content
    assert chunks[-1].choices[0].finish_reason == choice.finish_reason


def test_stop_strings_cut_streamed_and_whole_answers_alike(client):
    messages = [{"role": "user", "content": "Valve V-12 sticks when cold."}]
    whole = client.chat.completions.create(model="b", messages=messages, max_tokens=12, temperature=0)
    text = whole.choices[0].message.content
    if len(text) < 4:
        pytest.skip(f"the tiny model's answer {text!r} is too short to hold a stop string")
    stop = text[len(text) // 2 :][:2]  # (the tiny model may answer only line breaks: then the answer is empty)
    expected = text[: text.find(stop)]
    cut = client.chat.completions.create(model="b", messages=messages, max_tokens=12, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == expected and cut.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(
        model="b", messages=messages, max_tokens=12, temperature=0, stop=stop, stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stream_holds_back_a_possible_stop_string():
    """The SSE generator on scripted pieces: a stop string split across pieces is never sent, text before it is."""
    import threading
    from types import SimpleNamespace

    from ftkit.serve.app import stream_events
    from ftkit.serve.engine import ChatJob
    from ftkit.serve.protocol import ChatRequest

    class Scripted:
        def stream(self, variant, job, temperature, top_p, halt: threading.Event, info: dict):
            for piece in ["Hel", "lo wo", "rld, and", " more"]:
                if halt.is_set():
                    return
                yield piece

    async def collect(stops: list[str]) -> list[dict]:
        body = ChatRequest(messages=[{"role": "user", "content": "x"}], stop=stops)
        events = stream_events(Scripted(), SimpleNamespace(name="m"), ChatJob([1], 8, stops), body, {"active": 0})
        lines = [line async for line in events]
        assert lines[-1] == "data: [DONE]\n\n"
        return [json.loads(line[6:]) for line in lines[:-1]]

    chunks = asyncio.run(collect(["o wor"]))
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hell"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    chunks = asyncio.run(collect([]))
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hello world, and more"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"  # no end-of-turn token was reported


def test_classify_single_and_batched(server):
    single = post(server, "/v1/classify", {"model": "a", "input": "Hydraulic hose on press 4 burst"})
    assert single.status_code == 200, single.text
    [result] = single.json()["data"]
    assert result["label"] in TICKET_LABELS and set(result["probabilities"]) == TICKET_LABELS
    assert sum(result["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert result["label"] == max(result["probabilities"], key=result["probabilities"].get)

    texts = ["Conveyor motor trips its breaker", "PLC lost its program", "Fire exit blocked"]
    batched = post(server, "/v1/classify", {"model": "b", "input": texts}).json()
    assert batched["model"] == "b" and [r["index"] for r in batched["data"]] == [0, 1, 2]
    assert all(r["label"] in TICKET_LABELS for r in batched["data"])


def test_extract_gives_entities_with_offsets(server):
    texts = ["The patient has gout and asthma.", "No complaints today."]
    for body in ({"model": "ner", "input": texts}, {"input": texts[0]}):  # named, and routed (ner alone can)
        response = post(server, "/v1/extract", body)
        assert response.status_code == 200, response.text
        assert response.json()["model"] == "ner"
        for text, result in zip(texts, response.json()["data"], strict=False):
            assert isinstance(result["parsed"], bool) and isinstance(result["output"], str)
            for entity in result["entities"]:
                assert entity["type"] == "Disease" and text[entity["start"] : entity["end"]] == entity["text"]
    wrong = post(server, "/v1/extract", {"model": "a", "input": "gout"})
    assert assert_error(wrong, 400)["param"] == "model"


def test_entity_offsets_index_the_text():
    from ftkit.config.compose import compose
    from ftkit.recipes import get_recipe_class

    recipe = get_recipe_class("ner")(compose(["recipe=ner", "recipe.entity_types=[Disease]"]).recipe)
    text = "Gout flares, then gout again; asthma too."
    result = recipe.locate(text, "Disease: gout\nDisease: asthma\nDisease: lupus")
    assert result["parsed"] and result["unaligned"] == 1  # lupus is not in the text
    assert [(e["start"], e["end"]) for e in result["entities"]] == [(18, 22), (30, 36)]  # exact case first
    assert all(text[e["start"] : e["end"]].casefold() == e["text"].casefold() for e in result["entities"])
    assert recipe.locate(text, "not an answer")["parsed"] is False


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server, client):
    chat = "/v1/chat/completions"
    good = {"model": "a", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2, "temperature": 0}
    bad_json = httpx.post(
        f"{server}{chat}", content=b'{"messages": [', headers={**AUTH, "Content-Type": "application/json"}
    )
    assert assert_error(bad_json, 400)["code"] == "bad_json"
    assert assert_error(post(server, chat, {"model": "a"}), 400)["param"] == "messages"
    assert assert_error(post(server, "/v1/classify", {"model": "a"}), 400)["param"] == "input"
    oversize = post(server, "/v1/classify", {"model": "a", "input": "x" * 30000})
    assert assert_error(oversize, 413)["code"] == "body_too_large"
    assert assert_error(post(server, chat, {**good, "max_tokens": 1000}), 400)["param"] == "max_tokens"
    assert assert_error(post(server, chat, {**good, "model": "nope"}), 404)["code"] == "model_not_found"
    assert assert_error(post(server, chat, {**good, "n": 2}), 400)["param"] == "n"
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="a", messages=good["messages"], max_tokens=1000)
    assert raised.value.body["param"] == "max_tokens"
    assert post(server, chat, good).status_code == 200


def test_api_key_is_required_except_for_health(server):
    body = {"model": "a", "input": "valve stuck"}
    assert assert_error(httpx.post(f"{server}/v1/classify", json=body), 401)["code"] == "invalid_api_key"
    wrong = httpx.post(f"{server}/v1/classify", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert httpx.get(f"{server}/v1/models").status_code == 401
    assert httpx.get(f"{server}/health").status_code == 200
    assert httpx.get(f"{server}/docs", headers=AUTH).status_code == 200
    assert post(server, "/v1/classify", body).status_code == 200


def test_ab_routing_by_weight_and_sticky_per_user(server):
    routed = [post(server, "/v1/classify", {"input": "belt slipping", "user": f"user-{i}"}) for i in range(40)]
    models = [r.json()["model"] for r in routed]
    assert models.count("a") > models.count("b") > 0  # weights 3:1; ner (weight 0) cannot classify anyway
    for user in ("user-1", "user-2", "user-3"):
        seen = {post(server, "/v1/classify", {"input": "fan noise", "user": user}).json()["model"] for _ in range(4)}
        assert len(seen) == 1
    metrics = httpx.get(f"{server}/metrics", headers=AUTH).text
    for variant in ("a", "b"):
        assert re.search(
            rf'ftkit_requests_total{{endpoint="/v1/classify",status="200",variant="{variant}"}} \d', metrics
        )


async def _load(server: str, clients: int, requests: int) -> list[int]:
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=server, headers=AUTH, timeout=300, limits=limits) as http:

        async def one_client(index: int) -> list[int]:
            codes = []
            for turn in range(requests):
                if index % 16 == 0:  # a few streams share the model with the batches
                    body = {"messages": [{"role": "user", "content": f"t {index}"}], "max_tokens": 4, "stream": True}
                    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                        events = [line async for line in response.aiter_lines() if line.startswith("data: ")]
                    complete = events[-1:] == ["data: [DONE]"] and not any('"error"' in e for e in events)
                    codes.append(response.status_code if complete else 599)
                    continue
                if (index + turn) % 2:
                    body = {"messages": [{"role": "user", "content": f"ticket {index}"}], "max_tokens": 4}
                    response = await http.post("/v1/chat/completions", json={**body, "temperature": 0})
                else:
                    response = await http.post("/v1/classify", json={"input": f"motor {index} hums loudly"})
                codes.append(response.status_code)
            return codes

        results = await asyncio.gather(*(one_client(i) for i in range(clients)))
    return [code for codes in results for code in codes]


def test_load_64_clients_are_batched(server):
    started = time.monotonic()
    codes = asyncio.run(_load(server, clients=64, requests=2))
    assert codes == [200] * 128, codes
    print(f"\n128 requests from 64 concurrent clients in {time.monotonic() - started:.1f} s")
    metrics = httpx.get(f"{server}/metrics", headers=AUTH).text
    counts = {}
    for kind, le, variant, value in re.findall(
        r'ftkit_batch_size_bucket{kind="(\w+)",le="([^"]+)",variant="(\w+)"} ([\d.]+)', metrics
    ):
        counts.setdefault((kind, variant), {})[le] = float(value)
    # some model call served more than one request: its batch is counted above the le="1.0" bucket
    assert any(buckets["+Inf"] > buckets["1.0"] for buckets in counts.values()), metrics
    assert "ftkit_request_latency_seconds_bucket" in metrics and "ftkit_queue_depth" in metrics


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run", "x", "--max-batch-size", "0"], "--max-batch-size is 0"),
        (["--run", "x:0"], "every --run has weight 0"),
        (["--run", "bad name=x"], "not a valid model id"),
        (["--run", "x", "--port", "70000"], "is not a TCP port"),
        (["--run", "x", "--threads", "0"], "--threads is 0"),
        (["--run", "x", "--bogus"], "unrecognized arguments: --bogus"),
        ([], "the following arguments are required: --run"),
        (["--run", "no/such/run", "--port", str(free_port())], "is not a finished ftkit run"),  # free: 0 is refused
    ],
)
def test_bad_flags_exit_2_with_one_paragraph(tmp_path, args, message):
    result = subprocess.run(
        [FTKIT, "serve", *args], cwd=tmp_path, env=ftkit_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("ftkit: error: ") and message in result.stderr and "Fix:" in result.stderr
    assert "Traceback" not in result.stderr


def test_json_error_shape_for_unknown_route(server):
    response = httpx.get(f"{server}/v1/nothing", headers=AUTH)
    assert assert_error(response, 404)["type"] == "invalid_request_error"
    assert json.loads(response.text)["error"]["message"]


def test_batcher_groups_by_key_and_refuses_when_full():
    """DynamicBatcher alone: same-key requests share a call, other keys wait their turn, a full queue gives 503."""
    import threading

    from ftkit.serve.batching import DynamicBatcher
    from ftkit.serve.protocol import ApiError

    calls: list[tuple[str, list[int]]] = []
    release = threading.Event()

    def run(key: str, payloads: list[int]) -> list[int]:
        release.wait(10)  # the first call blocks until the queue has filled behind it
        calls.append((key, payloads))
        return [p * 10 for p in payloads]

    async def scenario() -> list[int]:
        batcher = DynamicBatcher(run, max_batch_size=8, max_wait_ms=5, max_queue=5)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit("a", 0))
        await asyncio.sleep(0.1)  # the first batch, [0], is running
        rest = [asyncio.ensure_future(batcher.submit(key, i)) for i, key in enumerate("abab", start=1)]
        await asyncio.sleep(0.05)
        with pytest.raises(ApiError) as full:
            await batcher.submit("a", 5, reserved=1)  # 4 waiting + 1 reserved (a stream) = max_queue
        assert full.value.status == 503 and full.value.code == "queue_full"
        release.set()
        results = await asyncio.gather(first, *rest)
        await batcher.stop()
        return results

    assert asyncio.run(scenario()) == [0, 10, 20, 30, 40]
    assert calls == [("a", [0]), ("a", [1, 3]), ("b", [2, 4])]
