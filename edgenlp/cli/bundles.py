"""Shipping and running a model: `bundle`, `run`, `serve`, `generate`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import EdgeNLPError
from .app import app, guarded, typed
from .options import LABEL_COLUMN, TEXT_COLUMN


@app.command()
@guarded
def bundle(
    source: Path = typer.Argument(..., help="An ONNX variant folder, or a run folder (its selected variant)."),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle folder to write (an earlier bundle there is replaced)."),
    target: list[str] = typer.Option(
        [],
        "--target",
        "-t",
        help="Also add: ort (ORT mobile format + required "
        "operators), strings (one graph with the tokenizer inside). Repeatable.",
    ),
    zip_archive: bool = typer.Option(False, "--zip", help="Also write OUT.zip."),
    data: Optional[str] = typer.Option(
        None, "--data", "-d", help="Data whose test split checks the strings target (default: the run's)."
    ),
    text_column: Optional[str] = TEXT_COLUMN,
    label_column: Optional[str] = LABEL_COLUMN,
    max_label_differences: int = typer.Option(
        0,
        "--max-label-differences",
        min=0,
        help="Test texts on which the strings target may disagree with the two-part pipeline.",
    ),
    check_on: list[str] = typer.Option(
        [],
        "--check-on",
        help="Run the bundle on an emulated machine and compare with this one: arm64 (NEON), arm64-dotprod, "
        "arm64-i8mm. Repeatable; the verdict goes into manifest.json (set up once: `edgenlp target setup arm64`).",
    ),
    check_texts: Optional[int] = typer.Option(
        None,
        "--check-texts",
        min=1,
        help="Held-out texts the --check-on run uses (default: all test texts, 32 prompts).",
    ),
) -> None:
    """Package a variant as a verified folder that transformers.js, Optimum and edgenlp.runtime load as it is."""
    import json

    from ..bundle import TargetSettings, build
    from ..data import DataSpec

    spec = typed(DataSpec, "bundle", source=data, text_column=text_column, label_column=label_column) if data else None
    folder = build(
        source,
        out,
        targets=target,
        zip_archive=zip_archive,
        settings=TargetSettings(data=spec, max_label_differences=max_label_differences, check_texts=check_texts),
        check_on=check_on,
    )
    manifest = json.loads((folder / "manifest.json").read_text())
    size = sum(f["bytes"] for f in manifest["files"].values())
    console = Console()
    console.print(
        f"bundle: {folder} ({manifest['task']}, {manifest['model']['file']}, {size / 1e6:.1f} MB, "
        f"{len(manifest['files'])} files hashed)",
        highlight=False,
    )
    for name, added in manifest["targets"].items():
        console.print(f"  {name}: {added['file']}", highlight=False)
    if zip_archive:
        console.print(f"zip:    {folder.with_name(folder.name + '.zip')}", highlight=False)
    report_checks(console, manifest.get("checked_on") or {}, folder)


def report_checks(console: Console, checks: dict, folder: Path) -> None:
    """Each check's verdict on a line; exit 1 if one failed (the bundle stays, with the evidence)."""
    from ..targets import CheckFailed

    for name, verdict in checks.items():
        console.print(
            f"  checked on {name} ({verdict['emulated_cpu']}, {verdict['int8_kernels']} kernels): "
            f"{'passed' if verdict['passed'] else 'FAILED'}: {verdict['summary']}",
            highlight=False,
        )
    if checks:
        console.print(f"  {next(iter(checks.values()))['timing']}", highlight=False)
    failed = [name for name, v in checks.items() if not v["passed"]]
    if failed:
        raise CheckFailed(
            f"the bundle does not answer on {failed[0]} as it does here ({checks[failed[0]]['summary']}): "
            f"see checked_on in {folder / 'manifest.json'}"
        )


@app.command("run")
@guarded
def run_bundle(
    bundle_path: Path = typer.Argument(..., metavar="BUNDLE", help="A bundle folder or its .zip."),
    texts: list[str] = typer.Argument(None, help="Texts to classify (or prompts); default: one per line on stdin."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the sha256 check (trusted storage only)."),
    no_truncate: bool = typer.Option(False, "--no-truncate", help="Refuse texts longer than the model's maximum."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Text-generation bundles."),
    threads: int = typer.Option(1, min=1),
) -> None:
    """Answer with a bundle, torch-free: one JSON line per text (label and probabilities, or the continuation)."""
    from ..runtime.__main__ import read_texts, run

    run(
        str(bundle_path),
        read_texts(list(texts or []), sys.stdin),
        sys.stdout,
        sys.stderr,
        verify=not no_verify,
        threads=threads,
        batch_size=batch_size,
        truncate=not no_truncate,
        max_new_tokens=max_new_tokens,
    )


@app.command()
@guarded
def serve(
    bundle_path: Path = typer.Argument(..., metavar="BUNDLE", help="A bundle folder or its .zip."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    threads: int = typer.Option(1, "--threads", min=1, help="onnxruntime threads of the model."),
    no_batching: bool = typer.Option(False, "--no-batching", help="Answer requests one by one (dynamic batching off)."),
    max_batch_tokens: int = typer.Option(16384, "--max-batch-tokens", min=1, help="Padded positions per model run."),
    max_batch_texts: int = typer.Option(16, "--max-batch-texts", min=1, help="Texts per model run."),
    max_wait_ms: float = typer.Option(
        2.0, "--max-wait-ms", min=0, help="How long a busy server waits to fill a batch."
    ),
    max_queue: int = typer.Option(256, "--max-queue", min=1, help="Requests that may wait; more get 503."),
    max_client_batch_size: int = typer.Option(32, "--max-client-batch-size", min=1, help="Texts per request."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the sha256 check (trusted storage only)."),
) -> None:
    """Serve a bundle over HTTP: /predict or /generate, /health, /info, /metrics, and a web page at /."""
    from ..serve import BatchSettings, ServeSettings, default_web_assets
    from ..serve import serve as run

    settings = ServeSettings(
        batching=BatchSettings(
            enabled=not no_batching,
            max_batch_tokens=max_batch_tokens,
            max_batch_texts=max_batch_texts,
            max_wait_ms=max_wait_ms,
            max_queue=max_queue,
        ),
        max_client_batch_size=max_client_batch_size,
        web_assets=default_web_assets(),
    )
    run(bundle_path, host=host, port=port, settings=settings, threads=threads, verify=not no_verify)


@app.command()
@guarded
def generate(
    model: Path = typer.Argument(
        ..., help="A text-generation variant folder (ONNX with KV cache) or a PyTorch checkpoint."
    ),
    prompt: str = typer.Argument(..., help="Text to continue."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n", help="Most tokens to add."),
    temperature: float = typer.Option(0.0, help="0 is greedy; above 0 samples."),
    top_k: int = typer.Option(0, help="Sample among the k likeliest tokens (0: off)."),
    top_p: float = typer.Option(1.0, help="Sample among the likeliest tokens holding this much probability (1: off)."),
    repetition_penalty: float = typer.Option(1.0, help="Above 1 discourages repeating earlier tokens."),
    seed: Optional[int] = typer.Option(None, help="Seed for sampling (same seed, same text)."),
    stop: list[str] = typer.Option([], "--stop", help="Stop before this text; repeatable."),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Recompute the whole sequence each step (slow; for checks)."
    ),
    prompt_lookup: int = typer.Option(
        0,
        "--prompt-lookup",
        min=0,
        help="Greedy only: draft up to this many tokens from n-grams already in the text and check them in one "
        "step (same tokens as plain greedy; faster where the output repeats the input). 0: off.",
    ),
    threads: int = typer.Option(1, min=1),
) -> None:
    """Continue a prompt with a text-generation model, streaming the tokens as they come."""

    from ..bench.runners import detect_format, open_causal_runner
    from ..runtime.generation import PromptLookup, Sampling
    from ..tasks import of_config

    if not model.exists():
        raise EdgeNLPError(f"{model} does not exist: pass a text-generation variant folder or checkpoint")
    folder = model if model.is_dir() else model.parent
    from ..model_facts import read_config

    config = read_config(folder / "config.json") if (folder / "config.json").exists() else {}
    task = of_config(config)
    if task != "text-generation":
        raise EdgeNLPError(
            f"{model} is a {task or 'bare encoder'} model, not a text generator: pass a GPT-2-family "
            "variant (e.g. runs/<run>/variants/onnx-int8)"
        )
    sampling = Sampling(
        temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, seed=seed
    )
    generator = open_causal_runner(model, detect_format(model), threads)
    out = Console(highlight=False, soft_wrap=True)
    lookup = PromptLookup.of(prompt_lookup)
    for piece in generator.stream(
        prompt, max_new_tokens, sampling, stop=stop, use_cache=not no_cache, prompt_lookup=lookup
    ):
        out.print(escape(piece), end="")
    out.print()
