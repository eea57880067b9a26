"""The main job and what reads its results: `optimize`, `report`, `compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import EdgeNLPError
from .app import app, err_console, guarded, setup, typed
from .options import (
    EXECUTOR,
    FAIL_IF,
    LABEL_COLUMN,
    MAX_DROP,
    MAX_LATENCY,
    MAX_SIZE,
    PAIR_COLUMN,
    TASK,
    TEXT_COLUMN,
    TRUST_REMOTE_CODE,
    VERBOSE,
)


def selection_settings(base, max_accuracy_drop, max_latency_ms, max_size_mb, fail_if):
    """The recipe's (or a previous run's) selection settings with the command-line flags on top."""
    from ..bench.selection import parse_gates
    from ..recipe import SelectionSettings

    if fail_if:
        parse_gates(fail_if)  # a typo fails now, not after minutes of measuring
    flags = {
        "max_accuracy_drop": max_accuracy_drop,
        "max_latency_ms": max_latency_ms,
        "max_size_mb": max_size_mb,
        "fail_if": fail_if,
    }
    merged = {**(base or SelectionSettings()).model_dump(), **{k: v for k, v in flags.items() if v is not None}}
    return typed(SelectionSettings, "selection", **merged)


def conclude(results: dict, out_dir: Path) -> None:
    from ..bench.selection import verdict_line

    console = Console()
    selected = (results.get("selection") or {}).get("selected")
    console.print(f"selected: {selected or 'none meets the limits'}", highlight=False)
    console.print(
        f"results: {out_dir / 'results.json'}\nreport:  {out_dir / 'report.md'}, {out_dir / 'report.html'}",
        highlight=False,
    )
    failed = []
    for variant, checked in (results.get("target_checks") or {}).items():
        for machine, verdict in checked["checked_on"].items():
            console.print(
                f"checked on {machine} ({verdict['int8_kernels']} kernels, emulated): `{variant}` "
                f"{'passed' if verdict['passed'] else 'FAILED'}: {verdict['summary']}",
                highlight=False,
                soft_wrap=True,
            )
            failed += [] if verdict["passed"] else [f"{variant} on {machine}"]
    gates = results.get("gates")
    if failed:
        err_console.print(f"target check FAILED: {', '.join(failed)} (see the report)", highlight=False)
    if gates:
        err_console.print(escape(verdict_line(gates)), highlight=False, soft_wrap=True)
        if gates["failed"]:
            raise typer.Exit(1)
    if failed:
        raise typer.Exit(1)


def run_name(recipe_name: str, model: str | None, data: str | None) -> str:
    """Default run folder: overriding the model or data gets its own folder, so it never replaces
    the finished variants of another run."""
    import re

    parts = [recipe_name] + [Path(x.rstrip("/")).stem or x for x in (model, data) if x]
    return "-".join(re.sub(r"[^A-Za-z0-9_.\-]+", "_", p) for p in parts)


@app.command()
@guarded
def optimize(
    model: Optional[str] = typer.Argument(
        None, help="Checkpoint folder, hub id, or packaged name (minilm). Default: the recipe's."
    ),
    data: Optional[str] = typer.Option(
        None, "--data", "-d", help="tweets, sst2, bbc-news, medical-abstracts, a CSV/TSV/JSONL file, or hub:NAME."
    ),
    recipe_file: Optional[Path] = typer.Option(
        None, "--recipe", "-r", help="Recipe YAML (default: recipes/default.yaml)."
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: runs/<recipe name>)."),
    text_column: Optional[str] = TEXT_COLUMN,
    label_column: Optional[str] = LABEL_COLUMN,
    pair_column: Optional[str] = PAIR_COLUMN,
    no_bench: bool = typer.Option(False, "--no-bench", help="Build and validate the variants, skip the benchmark."),
    task: Optional[str] = TASK,
    max_accuracy_drop: Optional[float] = MAX_DROP,
    max_latency_ms: Optional[float] = MAX_LATENCY,
    max_size_mb: Optional[float] = MAX_SIZE,
    fail_if: Optional[str] = FAIL_IF,
    search: Optional[bool] = typer.Option(
        None,
        "--search/--no-search",
        help="With --max-accuracy-drop: search quantisation settings and nodes to keep in float (default: the recipe's search.enabled, on).",
    ),
    executor: Optional[str] = EXECUTOR,
    target_isa: Optional[str] = typer.Option(
        None,
        "--target-isa",
        help="Build the quantised variants for this instruction set (arm64, arm64-dotprod, avx2, ...; "
        "default: the recipe's target.isa, else this CPU's).",
    ),
    check_on: list[str] = typer.Option(
        [],
        "--check-on",
        help="Bundle the variants built for the target and check them on an emulated machine (arm64, "
        "arm64-dotprod, arm64-i8mm). Repeatable.",
    ),
    target_speedup: Optional[float] = typer.Option(
        None,
        "--target-speedup",
        help="Prune to this speed-up over the fastest unpruned variant: structures (layers x heads x width) "
        "predicted from latencies measured on this CPU, built, recovered and measured; the most accurate that "
        "meets it is chosen.",
    ),
    target_ms: Optional[float] = typer.Option(
        None,
        "--target-ms",
        help="Prune to this p50 latency (ms, batch 1, the primary profile, structure.length tokens).",
    ),
    finetune: bool = typer.Option(
        False,
        "--finetune",
        help="Train a language model on the corpus even when it is a trained checkpoint (default: use it as given).",
    ),
    trust_remote_code: bool = TRUST_REMOTE_CODE,
    verbose: bool = VERBOSE,
) -> None:
    """Fine-tune (if needed), export, optimise, quantise, validate and benchmark every variant."""
    setup(verbose, trust_remote_code)
    from .. import pipeline
    from .. import recipe as recipe_module

    recipe = recipe_module.load(recipe_file) if recipe_file else recipe_module.default()
    recipe = recipe.model_copy(
        update={
            "selection": selection_settings(recipe.selection, max_accuracy_drop, max_latency_ms, max_size_mb, fail_if)
        }
    )
    if search is not None:
        recipe = recipe.model_copy(update={"search": recipe.search.model_copy(update={"enabled": search})})
    if executor is not None:
        from ..executors import parse as parse_executor

        recipe = recipe.model_copy(update={"executor": recipe.executor.model_copy(update=parse_executor(executor))})
    if target_speedup is not None or target_ms is not None:
        from ..search.settings import StructureSearchSettings

        wanted = {"target_speedup": target_speedup, "target_ms": target_ms}
        recipe = recipe.model_copy(
            update={
                "structure": typed(
                    StructureSearchSettings,
                    "structure",
                    {"target_speedup": ("--target-speedup",), "target_ms": ("--target-ms",)},
                    **{**recipe.structure.model_dump(), "target_speedup": None, "target_ms": None, **wanted},
                )
            }
        )
    if finetune:
        recipe = recipe.model_copy(
            update={
                "variants": [
                    v.model_copy(update={"config": {**v.config, "train": "always"}}) if v.stage == "finetune" else v
                    for v in recipe.variants
                ]
            }
        )
    if target_isa or check_on:
        from ..recipe import TargetSpec

        wanted = {"isa": target_isa, "check_on": check_on or None}
        base = recipe.target.model_dump()
        recipe = recipe.model_copy(
            update={
                "target": typed(
                    TargetSpec,
                    "target",
                    {"isa": ("--target-isa",), "check_on": ("--check-on",)},
                    **{**base, **{k: v for k, v in wanted.items() if v}},
                )
            }
        )
    updates: dict = {}
    if model:
        updates["model"] = model
    if task:
        updates["task"] = task
    columns = {"source": data, "text_column": text_column, "label_column": label_column, "pair_column": pair_column}
    if any(columns.values()):
        updates["data"] = recipe.data.model_copy(update={k: v for k, v in columns.items() if v})
    if updates:
        recipe = recipe_module.parse(
            {
                **recipe.model_dump(mode="json"),
                **{k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in updates.items()},
            },
            "recipe",
        )
    out_dir = out or Path("runs") / run_name(recipe.name, model, data)
    outcome = pipeline.run(recipe, out_dir, bench=not no_bench)
    console = Console()
    for name in outcome.variants:
        state = "reused" if name in outcome.reused else "built"
        console.print(f"  {name:<24} {state:<7} {outcome.variants[name].path}", highlight=False)
    if outcome.results:
        conclude(outcome.results, out_dir)
    elif recipe.target.check_on:
        console.print("target checks skipped: they check the measured run's bundles (drop --no-bench)")


def previous_selection(results: dict):
    """The selection limits and gate a run was last reported with."""
    from ..recipe import SelectionSettings

    previous = results.get("selection") or {}
    return typed(
        SelectionSettings,
        "report",
        **(previous.get("constraints") or {}),
        fail_if=(results.get("gates") or {}).get("expression"),
    )


def read_results(run_dir: Path) -> dict:
    import json

    from ..bench.results import check

    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise EdgeNLPError(
            f"{results_path} not found: pass a run folder written by `edgenlp optimize` or `edgenlp bench`"
        )
    try:
        results = json.loads(results_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgeNLPError(f"{results_path} is not valid JSON ({exc}): rerun the benchmark") from exc
    return check(results, str(results_path))


@app.command()
@guarded
def report(
    run_dir: Path = typer.Argument(..., help="A run folder holding results.json."),
    max_accuracy_drop: Optional[float] = MAX_DROP,
    max_latency_ms: Optional[float] = MAX_LATENCY,
    max_size_mb: Optional[float] = MAX_SIZE,
    fail_if: Optional[str] = FAIL_IF,
) -> None:
    """Render results.json of a run into report.md and report.html (re-selecting and gating if asked)."""
    from ..fsio import FolderLock
    from ..pipeline import publish

    results = read_results(run_dir)
    settings = selection_settings(previous_selection(results), max_accuracy_drop, max_latency_ms, max_size_mb, fail_if)
    if settings.fail_if:
        from ..bench.profiles import Profile
        from ..bench.selection import check_gates

        check_gates(settings.fail_if, [Profile(**p) for p in results["profiles"]])
    with FolderLock(run_dir):
        conclude(publish(results, run_dir, settings), run_dir)


@app.command()
@guarded
def compare(
    run_dir: Path = typer.Argument(..., help="A run folder holding results.json."),
    a: str = typer.Argument(..., help="First variant."),
    b: str = typer.Argument(..., help="Second variant."),
    across_node_kinds: bool = typer.Option(
        False, "--across-node-kinds", help="Compare latencies even when the two were timed on different kinds of node."
    ),
) -> None:
    """Paired tests between two variants of one run: McNemar for accuracy, round-paired for latency."""
    from ..bench.stats import compare_variants

    results = read_results(run_dir)
    from ..bench.results import WITH_ROUNDS

    if results.get("schema") not in WITH_ROUNDS:
        raise EdgeNLPError(
            f"{run_dir / 'results.json'} is {results.get('schema')}, which keeps no per-round timings "
            "or predictions: measure again to compare"
        )
    names = [v["name"] for v in results["variants"]]
    for name in (a, b):
        if name not in names:
            raise EdgeNLPError(f"variant '{name}' is not in {run_dir / 'results.json'} (variants: {', '.join(names)})")
    from ..bench.stats import CrossNodeComparison

    try:
        verdict = compare_variants(results, a, b, across_node_kinds)
    except CrossNodeComparison as exc:
        raise EdgeNLPError(str(exc)) from None
    console = Console()
    acc = verdict["accuracy"]
    if acc:
        console.print(
            f"accuracy: {a} {100 * acc['a']:.2f}% vs {b} {100 * acc['b']:.2f}%; only {a} right on "
            f"{acc['a_only_correct']}, only {b} right on {acc['b_only_correct']}; McNemar p = {acc['p_value']:.3g} "
            f"({'a real difference' if acc['significant'] else 'no significant difference'})",
            highlight=False,
        )
    for key, t in verdict["latency"].items():
        ratio = t["speedup_b_over_a"]
        console.print(
            f"{key}: {b} is {ratio['ratio']:.2f}x as fast as {a} [95% CI {ratio['ci'][0]:.2f}-{ratio['ci'][1]:.2f}]; "
            f"{a} slower in {t['rounds_a_slower']} of {t['rounds']} rounds; Wilcoxon p = {t['p_value']:.3g} "
            f"({'a real difference' if t['significant'] else 'no significant difference'})",
            highlight=False,
        )
