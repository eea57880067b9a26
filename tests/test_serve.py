"""The server: every endpoint and error path, the dynamic batcher, graceful shutdown, and the web page
driven in headless Chromium (server and in-browser answers side by side)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from edgenlp.bundle import build
from edgenlp.runtime import load
from edgenlp.serve import BatchSettings, ServeSettings, create_app, default_web_assets
from edgenlp.serve.batching import Batcher, Overloaded, ShuttingDown

TEXTS = ["good film", "the plot was really boring and bad", "fun", "awful"]


@pytest.fixture(scope="module")
def int8_bundle(tiny_run, tmp_path_factory) -> Path:
    return build(tiny_run.variants["onnx-int8-dynamic"].path, tmp_path_factory.mktemp("serve") / "int8")


@pytest.fixture(scope="module")
def fp32_bundle(tiny_run, tmp_path_factory) -> Path:
    return build(tiny_run.variants["onnx-fp32"].path, tmp_path_factory.mktemp("serve") / "fp32")


@pytest.fixture(scope="module")
def gpt2_bundle(tiny_gpt2_run, tmp_path_factory) -> Path:
    return build(tiny_gpt2_run.variants["onnx-fp32"].path, tmp_path_factory.mktemp("serve") / "gpt2")


@pytest.fixture(scope="module")
def client(int8_bundle):
    with TestClient(create_app(load(int8_bundle), ServeSettings(max_client_batch_size=4, max_body_bytes=4096))) as c:
        yield c


def test_predict_answers_in_tei_shape_with_timing_headers(client, int8_bundle):
    one = client.post("/predict", json={"inputs": "good film"})
    assert one.status_code == 200
    ranked = one.json()
    assert [x["label"] for x in ranked] in (["pos", "neg"], ["neg", "pos"])
    assert ranked[0]["score"] >= ranked[1]["score"] and abs(sum(x["score"] for x in ranked) - 1) < 1e-5
    assert ranked[0]["label"] == load(int8_bundle).classify(["good film"], batch_size=1)[0]["label"]
    for header in ("x-compute-time", "x-queue-time", "x-tokenization-time", "x-inference-time"):
        assert float(one.headers[header]) >= 0
    many = client.post("/predict", json={"inputs": TEXTS}).json()
    assert len(many) == 4 and all(len(r) == 2 for r in many)
    raw = client.post("/predict", json={"inputs": "good film", "raw_scores": True}).json()
    assert abs(sum(x["score"] for x in raw) - 1) > 1e-6 or raw[0]["score"] > 1  # logits, not probabilities


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ({"inputs": ""}, 400, "text 0 is empty"),
        ({"inputs": ["fun", "  "]}, 400, "text 1 is empty"),
        ({"inputs": 5}, 422, "inputs"),
        ({"text": "fun"}, 422, "inputs"),
        ({"inputs": "fun", "colour": "red"}, 422, "colour"),
        ({"inputs": ["a", "b", "c", "d", "e"]}, 413, "more than the 4 a request may carry"),
        ({"inputs": "good " * 40, "truncate": False}, 413, "longer than the model's maximum of 32 tokens"),
        ({"inputs": "good " * 2000}, 413, "bytes, more than 4096"),
    ],
)
def test_predict_errors_are_one_json_line_with_the_right_status(client, body, status, fragment):
    response = client.post("/predict", json=body)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error", "error_type"} and fragment in response.json()["error"]


def test_truncation_is_the_default(client):
    assert client.post("/predict", json={"inputs": "good " * 40}).status_code == 200


def test_health_info_metrics_openapi_page_and_bundle_files(client):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert info["task"] == "text-classification" and info["limits"]["max_client_batch_size"] == 4
    assert info["manifest"]["labels"] == ["neg", "pos"] and "files" not in info["manifest"]
    client.post("/predict", json={"inputs": "fun"})
    metrics = client.get("/metrics").text
    for name in (
        "edgenlp_requests_total",
        "edgenlp_request_duration_seconds_bucket",
        "edgenlp_queue_depth",
        "edgenlp_batch_texts_bucket",
        "edgenlp_batch_requests_bucket",
    ):
        assert name in metrics
    assert 'endpoint="/predict",status="200"' in metrics
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/generate", "/generate_stream", "/health", "/info", "/metrics"} <= set(paths)
    assert "<textarea" in client.get("/").text and client.get("/static/app.js").status_code == 200
    assert client.get("/models/bundle/config.json").json()["id2label"] == {"0": "neg", "1": "pos"}
    assert client.get("/models/bundle/onnx/model_quantized.onnx").status_code == 200
    for path in ("/models/bundle/../../etc/passwd", "/models/bundle/artifact.json", "/static/..%2Fapp.py"):
        assert client.get(path).status_code == 404
    wrong = client.post("/generate", json={"inputs": "hello"})
    assert wrong.status_code == 400 and "/generate needs a text-generation bundle" in wrong.json()["error"]


def test_generate_and_stream_follow_tgi(gpt2_bundle):
    bundle = load(gpt2_bundle)
    expected = bundle.generate("the movie was", max_new_tokens=6)
    with TestClient(create_app(bundle)) as c:
        done = c.post("/generate", json={"inputs": "the movie was", "parameters": {"max_new_tokens": 6}})
        assert done.status_code == 200, done.text
        assert done.json()["generated_text"] == expected.text
        assert done.json()["details"]["generated_tokens"] == len(expected.token_ids)
        assert (
            done.json()["details"]["finish_reason"]
            == {"max_new_tokens": "length", "eos": "eos_token"}[expected.stopped_by]
        )
        with c.stream(
            "POST", "/generate_stream", json={"inputs": "the movie was", "parameters": {"max_new_tokens": 6}}
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = [json.loads(line[len("data: ") :]) for line in stream.iter_lines() if line.startswith("data: ")]
        assert [e["token"]["id"] for e in events[:-1]] == expected.token_ids
        assert events[-1]["generated_text"] == expected.text
        assert events[-1]["details"]["finish_reason"] == done.json()["details"]["finish_reason"]
        looked_up = c.post(
            "/generate",
            json={"inputs": "the movie was the movie was the", "parameters": {"max_new_tokens": 8, "prompt_lookup": 5}},
        )
        plain = bundle.generate("the movie was the movie was the", max_new_tokens=8)
        assert looked_up.status_code == 200 and looked_up.json()["generated_text"] == plain.text
        sampled = {"max_new_tokens": 4, "prompt_lookup": 5, "temperature": 0.8}
        refused = c.post("/generate", json={"inputs": "the movie", "parameters": sampled})
        assert refused.status_code == 400 and "greedy" in refused.json()["error"]
        assert c.post("/generate", json={"inputs": "x", "parameters": {"prompt_lookup": -1}}).status_code == 422
        assert c.post("/generate", json={"inputs": " "}).status_code == 400
        assert c.post("/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 500}}).status_code == 413
        assert c.post("/generate", json={"inputs": "x", "parameters": {"top_p": 2}}).status_code == 422
        assert c.post("/predict", json={"inputs": "x"}).status_code == 400


# -- the batcher ----------------------------------------------------------------------------------


class SlowModel:
    """Answers a batch after `release` is set; records the batches it saw."""

    def __init__(self):
        self.release = threading.Event()
        self.batches: list[list] = []

    def __call__(self, items):
        self.release.wait(10)
        self.batches.append(list(items))
        return [f"answer:{x}" for x in items]


def test_an_idle_batcher_adds_no_wait():
    batcher = Batcher(lambda items: list(items), BatchSettings(max_wait_ms=500))
    started = time.perf_counter()
    assert batcher.submit(["a"], [3]).future.result(5) == ["a"]
    assert time.perf_counter() - started < 0.25  # far below the 500 ms a busy batch may wait
    batcher.close()


def test_requests_arriving_while_busy_share_one_batch_within_the_limits():
    model = SlowModel()
    batcher = Batcher(model, BatchSettings(max_wait_ms=0, max_batch_texts=4, max_batch_tokens=1000))
    first = batcher.submit(["x0"], [5])
    time.sleep(0.05)  # the model thread holds x0
    jobs = [batcher.submit([f"y{i}"], [5]) for i in range(6)]
    model.release.set()
    assert first.future.result(5) == ["answer:x0"]
    assert [j.future.result(5) for j in jobs] == [[f"answer:y{i}"] for i in range(6)]
    assert [len(b) for b in model.batches] == [1, 4, 2]  # grouped, and never more than 4 texts
    batcher.close()


def test_a_batch_never_passes_the_token_budget():
    model = SlowModel()
    batcher = Batcher(model, BatchSettings(max_wait_ms=0, max_batch_texts=64, max_batch_tokens=100))
    first = batcher.submit(["x"], [10])
    time.sleep(0.05)
    jobs = [batcher.submit([f"t{i}"], [30]) for i in range(4)]
    model.release.set()
    first.future.result(5)
    [j.future.result(5) for j in jobs]
    assert [len(b) for b in model.batches] == [1, 3, 1]  # 3 x 30 fits in 100, 4 x 30 does not


def test_a_full_queue_refuses_and_close_answers_what_was_queued():
    model = SlowModel()
    batcher = Batcher(model, BatchSettings(max_queue=2))
    held = batcher.submit(["a"], [1])
    time.sleep(0.05)
    queued = [batcher.submit(["b"], [1]), batcher.submit(["c"], [1])]
    with pytest.raises(Overloaded, match="2 requests are already waiting"):
        batcher.submit(["d"], [1])
    closer = threading.Thread(target=batcher.close)
    closer.start()
    time.sleep(0.05)
    with pytest.raises(ShuttingDown):
        batcher.submit(["e"], [1])
    model.release.set()
    closer.join(5)
    assert held.future.result(1) == ["answer:a"] and [q.future.result(1) for q in queued] == [
        ["answer:b"],
        ["answer:c"],
    ]


def test_a_failing_batch_fails_its_requests_and_the_batcher_lives_on():
    calls = []

    def flaky(items):
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return list(items)

    batcher = Batcher(flaky, BatchSettings())
    with pytest.raises(RuntimeError, match="boom"):
        batcher.submit(["a"], [1]).future.result(5)
    assert batcher.submit(["b"], [1]).future.result(5) == ["b"]
    batcher.close()


# -- the process: refusing a bad bundle, start, graceful shutdown, the page in Chromium -----------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read() if proc.stderr else f"server exited {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("server did not start")


def test_serve_refuses_to_start_on_a_tampered_bundle(int8_bundle, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from edgenlp.cli import app

    bad = tmp_path / "bad"
    shutil.copytree(int8_bundle, bad)
    (bad / "tokenizer.json").write_text((bad / "tokenizer.json").read_text() + " ")
    done = CliRunner().invoke(app, ["serve", str(bad), "--port", str(_free_port())])
    assert done.exit_code == 2 and "does not match its sha256" in done.output and "Traceback" not in done.output


SLOW_SERVER = """
import sys, time
from edgenlp.runtime import load
from edgenlp.serve import BatchSettings, ServeSettings, run_server
bundle, port, delay, max_queue = load(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
answer = bundle.model.answer
def slow(items, **kw):
    time.sleep(delay)
    return answer(items, **kw)
bundle.model.answer = slow
settings = ServeSettings(batching=BatchSettings(enabled=False, max_queue=max_queue)) if max_queue else ServeSettings()
run_server(bundle, port=port, settings=settings)
"""


@contextlib.contextmanager
def _slow_server(bundle, delay: float, max_queue: int = 0):
    """A server in its own process whose model takes `delay` seconds a run (and, with `max_queue`,
    no batching and a queue of that size); yields (port, process) once it answers, kills it after."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_SERVER, str(bundle), str(port), str(delay), str(max_queue)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_ready(port, proc)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_sigterm_finishes_requests_in_flight_refuses_new_ones_and_exits_0(int8_bundle):
    import httpx

    # 0.4 s a run: long enough that requests are in flight when SIGTERM arrives
    with _slow_server(int8_bundle, 0.4) as (port, proc):
        results = []

        def ask():
            results.append(
                httpx.post(f"http://127.0.0.1:{port}/predict", json={"inputs": "fun"}, timeout=30).status_code
            )

        askers = [threading.Thread(target=ask) for _ in range(3)]
        for t in askers:
            t.start()
        time.sleep(0.2)  # all three are in flight: the first in the model, the others queued
        proc.send_signal(signal.SIGTERM)
        for t in askers:
            t.join(30)
        assert results == [200, 200, 200]
        assert proc.wait(30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


def test_a_full_queue_answers_503_at_once_over_http(int8_bundle):
    import httpx

    with _slow_server(int8_bundle, 0.5, max_queue=1) as (port, proc):
        time.sleep(1.0)  # the warm-up run (slowed too) is over
        replies = []

        def ask():
            r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"inputs": "fun"}, timeout=30)
            replies.append((r.status_code, r.json(), r.elapsed.total_seconds()))

        askers = [threading.Thread(target=ask) for _ in range(4)]
        for t in askers:
            t.start()
            time.sleep(0.05)  # one in the model, one queued, the rest find the queue full
        for t in askers:
            t.join(30)
        statuses = sorted(code for code, _, _ in replies)
        assert statuses.count(200) >= 2 and 503 in statuses
        refused = [(body, seconds) for code, body, seconds in replies if code == 503]
        assert all(body["error_type"] == "overloaded" and "already waiting" in body["error"] for body, _ in refused)
        assert all(seconds < 0.4 for _, seconds in refused)  # refused at once, not after waiting


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.browser
@pytest.mark.skipif(
    (default_web_assets() is None or not Path(CHROMIUM).exists()) and not os.environ.get("CI"),
    reason="needs Debian's chromium and transformers.js (`npm ci --ignore-scripts` in web/); "
    ".ci/run installs both, and CI never skips this",
)
def test_the_page_shows_server_and_in_browser_answers_side_by_side(fp32_bundle):
    from playwright.sync_api import sync_playwright

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgenlp.cli", "serve", str(fp32_bundle), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_ready(port, proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('model').textContent.includes('text-classification')")
            page.click("#text")
            page.keyboard.type("the movie was a really good film")
            page.check("#in-browser")
            page.click("#run")
            page.wait_for_selector("#server-answer .bar.top", timeout=30000)
            page.wait_for_selector("#browser-answer .bar.top", timeout=60000)
            server = page.get_attribute("#server-answer .bar.top", "data-label")
            in_browser = page.get_attribute("#browser-answer .bar.top", "data-label")
            assert server == in_browser == load(fp32_bundle).classify(["the movie was a really good film"])[0]["label"]
            assert "ms" in page.inner_text("#server-latency") and "ms" in page.inner_text("#browser-latency")
            shares = page.eval_on_selector_all("#server-answer .pct", "els => els.map(e => parseFloat(e.textContent))")
            assert abs(sum(shares) - 100) < 0.5
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
