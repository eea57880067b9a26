"""Load test of `edgenlp serve` on loopback: open-loop offered rates, with dynamic batching on and off.

    python benchmarks/serve_load.py [--bundle runs/minilm-tweets/bundle] [--seconds 8] [--threads 1 2]

Serves the INT8 MiniLM bundle (`python benchmarks/runtime.py` writes it) in a fresh process per
setting, times start to first answer, then offers requests on a fixed schedule (open loop: a
request is sent at its time whether or not earlier ones have been answered, so a slow server shows
as latency and errors, not as a lower offered rate) for `--seconds` at each rate: single short
texts (the recipe's test tweets) at 25, 50, 100, 200, 300 and 400 requests/s, and batches of 8 texts.
The client is a small asyncio HTTP/1.1 client on keep-alive connections (httpx itself would
saturate a core first). Reports, per rate, the answered requests per second (sustained: answers / time until the last),
p50 / p99 latency and errors; then the highest rate each setting sustains with p99 <= 50 ms and no
error. Every request has a 10 s timeout.
First, the model alone in this process: texts per second over 256 tweets by batch size (length-
sorted), which sets the server's default texts per model run. Saves `benchmarks/results/serve_load.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402

RATES = (25, 50, 75, 100, 150, 200, 300)
BATCH_RATES = (10, 25, 50)
P99_BOUND_MS = 50.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(bundle: Path, port: int, batching: bool, threads: int) -> tuple[subprocess.Popen, float]:
    """The server process, and seconds from its start to the first answer of /predict."""
    import httpx

    command = [
        sys.executable,
        "-m",
        "edgenlp.cli",
        "serve",
        str(bundle),
        "--port",
        str(port),
        "--threads",
        str(threads),
        *([] if batching else ["--no-batching"]),
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.post(f"http://127.0.0.1:{port}/predict", json={"inputs": "hello"}, timeout=1).status_code == 200:
                return proc, time.perf_counter() - started
        except httpx.HTTPError:
            time.sleep(0.02)


class Connections:
    """A pool of keep-alive HTTP/1.1 connections speaking just enough of the protocol for POST /predict.

    A general client (httpx) spends about a millisecond of Python per request: at a few hundred
    requests a second on this 2-core machine the load generator, not the server, would be measured.
    """

    def __init__(self, port: int):
        self.port = port
        self.idle: list = []

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        reader, writer = self.idle.pop() if self.idle else await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(
                b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            payload = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        self.idle.append((reader, writer))
        return status, payload

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def offer(port: int, rate: float, seconds: float, bodies: list[dict]) -> dict:
    encoded = [json.dumps(b).encode() for b in bodies]
    pool = Connections(port)
    latencies, statuses = [], {}

    async def one(body: bytes):
        t0 = time.perf_counter()
        try:
            status, _ = await asyncio.wait_for(pool.post("/predict", body), timeout=10)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, StopIteration):
            status = "transport"
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            latencies.append(1000 * (time.perf_counter() - t0))

    n = int(rate * seconds)
    began = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(encoded[i % len(encoded)])))
    sent = time.perf_counter() - began
    await asyncio.gather(*tasks)
    ended = time.perf_counter()
    pool.close()
    texts = len(bodies[0]["inputs"]) if isinstance(bodies[0]["inputs"], list) else 1
    ordered = sorted(latencies)
    pct = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None  # noqa: E731
    errors = n - len(latencies)
    return {
        "offered_per_s": rate,
        "achieved_offer_per_s": n / sent if sent else None,
        "requests": n,
        "answered": len(latencies),
        "errors": errors,
        "statuses": {str(k): v for k, v in statuses.items()},
        "answered_per_s": len(latencies) / (ended - began),
        "texts_per_s": texts * len(latencies) / (ended - began),
        "p50_ms": statistics.median(latencies) if latencies else None,
        "p99_ms": pct(0.99),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(ROOT / "runs" / "minilm-tweets" / "bundle"))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="onnxruntime threads of the server")
    args = parser.parse_args()
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        raise SystemExit(f"{bundle} is not a bundle: run `python benchmarks/runtime.py` first")

    from edgenlp import data
    from edgenlp import recipe as recipe_module
    from edgenlp.runtime import load

    texts = data.load(recipe_module.default().data).test.texts[:400]
    singles = [{"inputs": t} for t in texts]
    batches = [{"inputs": texts[i : i + 8]} for i in range(0, len(texts), 8)]
    print("model alone, texts per second by batch size ...", flush=True)
    model = load(bundle, threads=1).model
    encoded = model.prepare(texts[:256])
    model.answer(encoded[:64])
    sweep = {}
    for _ in range(2):
        for size in (1, 4, 8, 16, 32, 64):
            t0 = time.perf_counter()
            model.answer(encoded, batch_size=size)
            sweep[size] = max(sweep.get(size, 0.0), len(encoded) / (time.perf_counter() - t0))
    del model
    summary = {
        "bundle": str(bundle.relative_to(ROOT) if ROOT in bundle.resolve().parents else bundle),
        "model_texts_per_s_by_batch_size_1_thread": sweep,
        "seconds_per_level": args.seconds,
        "server_threads": args.threads,
        "client": "asyncio keep-alive HTTP/1.1 connections, open loop, on the same machine (it shares the "
        "2 cores with the server)",
        "settings": {},
    }
    for threads, batching in ((t, b) for t in args.threads for b in (True, False)):
        name = f"{'dynamic_batching' if batching else 'no_batching'}_{threads}t"
        port = free_port()
        proc, ready = start(bundle, port, batching, threads)
        try:
            levels = []
            for rate in RATES:
                print(f"{name}: {rate}/s single texts ...", flush=True)
                levels.append(asyncio.run(offer(port, rate, args.seconds, singles)))
            batch_levels = []
            for rate in BATCH_RATES:
                print(f"{name}: {rate}/s batches of 8 ...", flush=True)
                batch_levels.append(asyncio.run(offer(port, rate, args.seconds, batches)))
            metrics = __import__("httpx").get(f"http://127.0.0.1:{port}/metrics").text
        finally:
            proc.terminate()
            code = proc.wait(60)
        within = [
            lv for lv in levels if lv["errors"] == 0 and lv["p99_ms"] is not None and lv["p99_ms"] <= P99_BOUND_MS
        ]
        best = max(within, key=lambda lv: lv["answered_per_s"], default=None)
        summary["settings"][name] = {
            "start_to_first_answer_s": ready,
            "single_texts": levels,
            "batches_of_8": batch_levels,
            "best_within_p99_bound": best,
            "exit_code_on_sigterm": code,
            "batch_texts_histogram": [line for line in metrics.splitlines() if line.startswith("edgenlp_batch_texts")],
        }
    summary["targets"] = {}
    for threads in args.threads:
        on, off = (
            summary["settings"][f"{k}_{threads}t"]["best_within_p99_bound"] for k in ("dynamic_batching", "no_batching")
        )
        at50 = next(
            lv
            for lv in summary["settings"][f"dynamic_batching_{threads}t"]["single_texts"]
            if lv["offered_per_s"] == 50
        )
        summary["targets"][f"{threads}t"] = {
            "p99<=50ms_at_50_per_s_no_errors": at50["errors"] == 0 and at50["p99_ms"] <= P99_BOUND_MS,
            "texts_per_s_with_batching>=250": bool(on) and on["texts_per_s"] >= 250,
            "batching>=1.5x_no_batching_within_p99": bool(on and off) and on["texts_per_s"] >= 1.5 * off["texts_per_s"],
            "start_to_first_answer<=2s": summary["settings"][f"dynamic_batching_{threads}t"]["start_to_first_answer_s"]
            <= 2,
        }
    print(json.dumps(summary, indent=1)[:5000])
    record.save("serve_load", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
