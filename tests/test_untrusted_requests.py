"""Requests from strangers, over real HTTP on loopback: bodies past the limit however they are sent, clients
that leave, settings at the edges, and the whole API fuzzed from its own OpenAPI schema (Schemathesis)."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from edgenlp.bundle import build
from edgenlp.runtime import InputError, load
from edgenlp.runtime.generation import Sampling
from edgenlp.serve import ServeSettings, create_app


@pytest.fixture(scope="module")
def int8_bundle(tiny_run, tmp_path_factory) -> Path:
    return build(tiny_run.variants["onnx-int8-dynamic"].path, tmp_path_factory.mktemp("req") / "int8")


@pytest.fixture(scope="module")
def gpt2_bundle(tiny_gpt2_run, tmp_path_factory) -> Path:
    return build(tiny_gpt2_run.variants["onnx-fp32"].path, tmp_path_factory.mktemp("req") / "gpt2")


@contextlib.contextmanager
def serving(bundle, settings: ServeSettings = ServeSettings()):
    """uvicorn in a thread of this process (so a test can slow the model down), on a free loopback port."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(bundle, settings), host="127.0.0.1", port=port, log_level="error", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def _post_chunked(port: int, path: str, chunks) -> tuple[int, dict, int]:
    """POST a chunked body; returns (status, JSON answer, bytes sent before the answer came)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("POST", path)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    sent = 0
    try:
        for chunk in chunks:
            conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sent += len(chunk)
        conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed before the rest arrived
    response = conn.getresponse()
    body = json.loads(response.read() or b"{}")
    conn.close()
    return response.status, body, sent


def test_a_chunked_body_past_the_limit_is_refused_as_it_arrives(int8_bundle):
    bundle = load(int8_bundle)
    with serving(bundle, ServeSettings(max_body_bytes=1 << 20)) as port:
        piece = b'"' + b"good film " * 6553 + b'"'  # 64 KiB of a JSON string
        chunks = [b'{"inputs": [' + piece] + [b"," + piece] * 159 + [b"]}"]  # about 10 MiB in all
        started = time.perf_counter()
        status, body, _ = _post_chunked(port, "/predict", chunks)
        assert status == 413 and body["error_type"] == "validation" and "more than 1048576 bytes" in body["error"]
        assert time.perf_counter() - started < 5
        small = [b'{"inputs": ', b'"good film"}']  # a chunked body within the limit is read as usual
        status, body, _ = _post_chunked(port, "/predict", small)
        assert status == 200 and body[0]["label"] in ("neg", "pos")


def test_a_long_body_is_parsed_and_tokenised_off_the_event_loop(int8_bundle):
    import httpx

    with serving(load(int8_bundle), ServeSettings(max_body_bytes=2 << 20)) as port:
        text = "the movie was really a film " * 36000  # about 1 MB
        done = {}

        def predict():
            done["status"] = httpx.post(
                f"http://127.0.0.1:{port}/predict", json={"inputs": [text] * 1}, timeout=60
            ).status_code
            done["at"] = time.perf_counter()

        asker = threading.Thread(target=predict)
        asker.start()
        health = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            while asker.is_alive():
                t = time.perf_counter()
                assert c.get("/health").status_code == 200
                health.append((t, time.perf_counter()))
        asker.join()
        assert done["status"] == 200
        answered_meanwhile = [h for h in health if h[1] < done["at"]]
        assert len(answered_meanwhile) >= 3, f"/health answered {len(answered_meanwhile)} time(s) during the request"


class Slow:
    """Wraps a decoder's `step` with a delay and counts the calls, to see generations run and stop."""

    def __init__(self, model, seconds: float):
        self.calls, self.model, self.seconds = 0, model, seconds
        self.original = model.step

    def __call__(self, *args, **kwargs):
        self.calls += 1
        time.sleep(self.seconds)
        return self.original(*args, **kwargs)


def _open_stream(port: int, prompt: str) -> socket.socket:
    body = json.dumps({"inputs": prompt, "parameters": {"max_new_tokens": 40}}).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        b"POST /generate_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


def test_abandoned_generations_stop_and_free_their_slots(gpt2_bundle):
    import httpx

    bundle = load(gpt2_bundle)
    slow = Slow(bundle.model, 0.05)
    bundle.model.step = slow
    with serving(bundle, ServeSettings(max_waiting_generations=8)) as port:
        streams = [_open_stream(port, "the movie") for _ in range(9)]
        received = b""
        while b"data:" not in received:  # the first one is generating
            received += streams[0].recv(4096)
        for s in streams:
            s.close()
        time.sleep(0.5)
        settled = slow.calls
        time.sleep(0.5)
        assert slow.calls - settled <= 1, "an abandoned generation kept running"
        reply = httpx.post(
            f"http://127.0.0.1:{port}/generate",
            json={"inputs": "the movie", "parameters": {"max_new_tokens": 3}},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        # a plain /generate whose client leaves stops too
        body = json.dumps({"inputs": "the movie", "parameters": {"max_new_tokens": 40}}).encode()
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(
            b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.3)
        sock.close()
        time.sleep(0.5)
        settled = slow.calls
        time.sleep(0.5)
        assert slow.calls - settled <= 1
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'endpoint="/generate"' in metrics


def test_settings_at_the_edges_are_documented_errors_or_answers(gpt2_bundle):
    with pytest.raises(InputError, match="seed"):
        Sampling(seed=-1)
    with pytest.raises(InputError, match="finite"):
        Sampling(temperature=float("inf"))
    client = TestClient(create_app(load(gpt2_bundle), ServeSettings()))
    for endpoint in ("/generate", "/generate_stream"):
        refused = client.post(endpoint, json={"inputs": "the movie", "parameters": {"seed": -1}})
        assert refused.status_code == 422 and set(refused.json()) == {"error", "error_type"}
        tiny = client.post(
            endpoint,
            json={"inputs": "the movie", "parameters": {"temperature": 1e-310, "seed": 1, "max_new_tokens": 4}},
        )
        assert tiny.status_code == 200 and tiny.content
        greedy = client.post(endpoint, json={"inputs": "the movie", "parameters": {"max_new_tokens": 4}})
        assert tiny.content == greedy.content  # a vanishing temperature samples the likeliest token
        too_long = client.post(endpoint, json={"inputs": "the movie", "parameters": {"max_new_tokens": 10**9}})
        assert too_long.status_code == 413 and too_long.json()["error_type"] == "validation"


def test_a_failure_is_json_counted_and_a_stream_that_fails_ends_with_an_error_event(gpt2_bundle):
    bundle = load(gpt2_bundle)
    client = TestClient(create_app(bundle, ServeSettings()), raise_server_exceptions=False)

    def broken(*args, **kwargs):
        raise RuntimeError("the model broke")

    bundle.model.step = broken
    asked = {"inputs": "the movie", "parameters": {"max_new_tokens": 3}}
    failed = client.post("/generate", json=asked)
    assert failed.status_code == 500 and failed.json()["error_type"] == "internal"
    streamed = client.post("/generate_stream", json=asked)
    events = [json.loads(line[5:]) for line in streamed.text.splitlines() if line.startswith("data:")]
    assert events and events[-1]["error_type"] == "internal" and "error" in events[-1]
    metrics = client.get("/metrics").text
    assert 'edgenlp_requests_total{endpoint="/generate",status="500"} 1.0' in metrics


@pytest.mark.parametrize("which", ["classifier", "generator"])
def test_the_api_holds_against_its_own_schema(which, int8_bundle, gpt2_bundle):
    """Schemathesis generates bodies from /openapi.json: no 500, every answer's status, type and body as
    documented. (Its check that schema-valid data is accepted is left out: an all-blank text fits the
    schema and is refused with a documented 400, as an empty prompt or a prompt past the context is.)"""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    bundle = load(int8_bundle if which == "classifier" else gpt2_bundle)
    app = create_app(bundle, ServeSettings(max_waiting_generations=64))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    with TestClient(app):  # the lifespan starts the batcher
        for operation in schema.get_all_operations():

            @given(case=operation.ok().as_strategy())
            @settings(
                max_examples=25, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
            )
            def check(case):
                case.call_and_validate(excluded_checks=[positive_data_acceptance])

            check()


def test_a_raw_path_out_of_the_bundle_is_not_served_whatever_the_flag(int8_bundle, tmp_path):
    """The path as sent on the wire, not as an HTTP client would normalise it first."""
    with serving(load(int8_bundle, verify_hashes=False)) as port:
        for path in (
            "/models/bundle/../../../../../etc/passwd",
            "/models/bundle/onnx/../../../../etc/passwd",
            "/models/bundle/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            "/models/bundle//etc/passwd",
        ):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
            status = int(answer.split(b" ", 2)[1])
            assert status == 404 and b"root:" not in answer, (path, answer[:200])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /models/bundle/config.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(64).startswith(b"HTTP/1.1 200")


def test_no_cors_header_lets_another_origin_read_the_answers(int8_bundle):
    with TestClient(create_app(load(int8_bundle), ServeSettings())) as client:
        headers = {"Origin": "https://elsewhere.example"}
        answer = client.post("/predict", json={"inputs": "fun"}, headers=headers)
        preflight = client.options("/predict", headers={**headers, "Access-Control-Request-Method": "POST"})
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers
    assert "access-control-allow-origin" not in preflight.headers
