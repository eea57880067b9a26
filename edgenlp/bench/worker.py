"""One model in one fresh process, answering measurement requests from the harness.

    python -m edgenlp.bench.worker TASK PATH RUNNER THREADS PAYLOAD_JSON

Requests and answers are JSON lines on stdin and on a private copy of stdout (libraries that print
are sent to stderr). Thread counts are fixed through the environment before any numeric library
loads. Only the runner's own imports happen here, so an ONNX worker's peak memory is that of the
torch-free inference path.
"""

from __future__ import annotations

import json
import os
import sys
import time


def _pin_threads(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def _status_bytes(field: str) -> int | None:
    status = "/proc/self/status"
    if os.path.exists(status):
        with open(status) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    return None


def _peak_rss_bytes() -> int:
    """High-water mark of this process's resident memory.

    Linux's VmHWM, not getrusage: ru_maxrss survives exec, so a worker spawned by a large parent
    (the pipeline holds torch) would report the parent's peak.
    """
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _rss_bytes() -> int | None:
    """Resident memory now (VmRSS): what the process holds in steady state, not its peak."""
    return _status_bytes("VmRSS")


class Worker:
    """The task's session for one model, plus what every task reports: load time and memory."""

    def __init__(self, task: str, path: str, runner: str, threads: int, payload_file: str):
        from ..tasks import get

        started = time.perf_counter()
        self.session = get(task).Session(path, runner, threads, payload_file)
        self.load_seconds = time.perf_counter() - started
        self.load_peak_rss = _peak_rss_bytes()
        self.rss_after_load = _rss_bytes()

    def handle(self, req: dict) -> dict:
        if req["op"] == "stats":
            return {
                "peak_rss_bytes": _peak_rss_bytes(),
                "load_peak_rss_bytes": self.load_peak_rss,
                "rss_after_load_bytes": self.rss_after_load,
                "steady_rss_bytes": _rss_bytes(),
                "load_seconds": self.load_seconds,
                **self.session.stats(),
            }
        return self.session.handle(req)


def main(argv: list[str]) -> int:
    task, path, runner, threads, payload_file = argv[1], argv[2], argv[3], int(argv[4]), argv[5]
    _pin_threads(threads)
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    try:
        worker = Worker(task, path, runner, threads, payload_file)
    except Exception as exc:  # reported to the harness, which turns it into a one-line error
        reply.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 1
    reply.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("op") == "quit":
            break
        try:
            reply.write(json.dumps(worker.handle(req)) + "\n")
        except Exception as exc:
            reply.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
