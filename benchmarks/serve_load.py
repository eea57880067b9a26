"""Load test of `edgenlp serve` on loopback: open-loop offered rates, with dynamic batching on and off.

    python benchmarks/serve_load.py [--bundle runs/minilm-tweets/bundle] [--seconds 8] [--threads 2]

Serves the INT8 MiniLM bundle (`python benchmarks/runtime.py` writes it) in a fresh process per
setting, times start to first answer, then offers requests on a fixed schedule (open loop: a
request is sent at its time whether or not earlier ones have been answered, so a slow server shows
as latency and errors, not as a lower offered rate) for `--seconds` at each rate: single short
texts (the recipe's test tweets) at 25, 50, 100, 200, 300 and 400 requests/s, and batches of 8 texts.
Reports, per rate, the answered requests per second (sustained: answers / time until the last),
p50 / p99 latency and errors; then the highest rate each setting sustains with p99 <= 50 ms and no
error. Every request has a 10 s timeout; a level stops early when answers fall behind by 10 s.
Saves `benchmarks/results/serve_load.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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

RATES = (25, 50, 100, 200, 300, 400)
BATCH_RATES = (10, 25, 50)
P99_BOUND_MS = 50.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(bundle: Path, port: int, batching: bool, threads: int) -> tuple[subprocess.Popen, float]:
    """The server process, and seconds from its start to the first answer of /predict."""
    import httpx

    command = [sys.executable, "-m", "edgenlp.cli", "serve", str(bundle), "--port", str(port),
               "--threads", str(threads), *([] if batching else ["--no-batching"])]
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


async def offer(port: int, rate: float, seconds: float, bodies: list[dict]) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    latencies, errors, statuses = [], 0, {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=10) as client:
        async def one(body):
            nonlocal errors
            t0 = time.perf_counter()
            try:
                response = await client.post("/predict", json=body)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 200:
                    latencies.append(1000 * (time.perf_counter() - t0))
                else:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
                statuses["transport"] = statuses.get("transport", 0) + 1

        n = int(rate * seconds)
        began = time.perf_counter()
        tasks = []
        for i in range(n):
            due = began + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(bodies[i % len(bodies)])))
        await asyncio.gather(*tasks)
        ended = time.perf_counter()
    texts = sum(len(b["inputs"]) if isinstance(b["inputs"], list) else 1 for b in bodies[:1])
    ordered = sorted(latencies)
    pct = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None  # noqa: E731
    return {"offered_per_s": rate, "requests": n, "answered": len(latencies), "errors": errors, "statuses": statuses,
            "answered_per_s": len(latencies) / (ended - began), "texts_per_s": texts * len(latencies) / (ended - began),
            "p50_ms": statistics.median(latencies) if latencies else None, "p99_ms": pct(0.99)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(ROOT / "runs" / "minilm-tweets" / "bundle"))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads of the server")
    args = parser.parse_args()
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        raise SystemExit(f"{bundle} is not a bundle: run `python benchmarks/runtime.py` first")

    from edgenlp import data, recipe as recipe_module

    texts = data.load(recipe_module.default().data).test.texts[:400]
    singles = [{"inputs": t} for t in texts]
    batches = [{"inputs": texts[i:i + 8]} for i in range(0, len(texts), 8)]
    summary = {"bundle": str(bundle.relative_to(ROOT) if ROOT in bundle.resolve().parents else bundle),
               "seconds_per_level": args.seconds, "server_threads": args.threads, "client": "httpx AsyncClient, "
               "same machine (it shares the 2 cores)", "settings": {}}
    for batching in (True, False):
        name = "dynamic_batching" if batching else "no_batching"
        port = free_port()
        proc, ready = start(bundle, port, batching, args.threads)
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
        within = [lv for lv in levels if lv["errors"] == 0 and lv["p99_ms"] is not None and lv["p99_ms"] <= P99_BOUND_MS]
        best = max(within, key=lambda lv: lv["answered_per_s"], default=None)
        summary["settings"][name] = {
            "start_to_first_answer_s": ready, "single_texts": levels, "batches_of_8": batch_levels,
            "best_within_p99_bound": best, "exit_code_on_sigterm": code,
            "batch_texts_histogram": [line for line in metrics.splitlines() if line.startswith("edgenlp_batch_texts")],
        }
    on, off = (summary["settings"][k]["best_within_p99_bound"] for k in ("dynamic_batching", "no_batching"))
    at50 = next(lv for lv in summary["settings"]["dynamic_batching"]["single_texts"] if lv["offered_per_s"] == 50)
    summary["targets"] = {
        "p99<=50ms_at_50_per_s_no_errors": at50["errors"] == 0 and at50["p99_ms"] <= P99_BOUND_MS,
        "texts_per_s_with_batching>=250": bool(on) and on["texts_per_s"] >= 250,
        "batching>=1.5x_no_batching_within_p99": bool(on and off) and on["texts_per_s"] >= 1.5 * off["texts_per_s"],
        "start_to_first_answer<=2s": summary["settings"]["dynamic_batching"]["start_to_first_answer_s"] <= 2,
    }
    print(json.dumps(summary, indent=1)[:5000])
    record.save("serve_load", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
