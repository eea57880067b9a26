"""`edgenlp serve`: one bundle behind FastAPI, with dynamic batching, metrics and a web page.

app.py        the endpoints (text-embeddings-inference / text-generation-inference shapes), errors,
              timing headers, Prometheus metrics, the page and the files the in-browser mode loads
batching.py   the dynamic batcher: one model thread, a bounded queue, no added wait when idle
static/       the page: server and in-browser (transformers.js, WebAssembly) answers side by side
"""

from __future__ import annotations

from pathlib import Path

from .app import ServeSettings, create_app
from .batching import BatchSettings

__all__ = ["BatchSettings", "ServeSettings", "create_app", "default_web_assets", "run_server", "serve"]


def default_web_assets() -> Path | None:
    """transformers.js's browser build as `npm ci` in the checkout's web/ folder installs it, if it is there."""
    dist = Path(__file__).resolve().parents[2] / "web" / "node_modules" / "@huggingface" / "transformers" / "dist"
    return dist if (dist / "transformers.min.js").is_file() else None


def serve(
    bundle_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
    threads: int = 1,
    verify: bool = True,
) -> None:
    """Verify and load the bundle (refusing to start on any mismatch), then serve until SIGTERM or Ctrl-C.

    On SIGTERM uvicorn stops accepting connections, lets the requests in flight finish (the batcher
    answers everything queued), and the process exits 0.
    """
    from ..runtime import load

    run_server(load(bundle_path, verify_hashes=verify, threads=threads), host, port, settings)


def run_server(bundle, host: str = "127.0.0.1", port: int = 8000, settings: ServeSettings | None = None) -> None:
    """Serve a loaded bundle with uvicorn until SIGTERM or Ctrl-C."""
    import signal

    import uvicorn

    settings = settings or ServeSettings(web_assets=default_web_assets())
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the handler it found:
    # with this one, the process ends normally (exit 0) once every request in flight has its answer.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.run(create_app(bundle, settings), host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)
