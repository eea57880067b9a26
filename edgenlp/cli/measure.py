"""Measuring and looking inside models: `bench`, `explain`, `preflight`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..bench.profiles import BenchSettings
from ..data import DataSpec
from ..errors import EdgeNLPError
from .app import app, err_console, guarded, setup, typed
from .options import FAIL_IF, MAX_DROP, MAX_LATENCY, MAX_SIZE, TASK, TRUST_REMOTE_CODE, VERBOSE, Settings, from_settings
from .run import conclude, previous_selection, read_results, selection_settings


@app.command()
@guarded
@from_settings(
    Settings(BenchSettings, "measuring", only=("reference", "iterations", "max_eval_examples")),
    Settings(
        DataSpec,
        "data",
        only=("source", "text_column", "label_column", "pair_column"),
        flags={"source": ("--data", "-d")},
        help={"source": "Labelled data (classifiers) or a corpus (language models) whose test split is replayed."},
    ),
)
def bench(
    paths: list[Path] = typer.Argument(
        ..., help="Variant folders, model folders or .onnx files (tokenizer beside them)."
    ),
    task: Optional[str] = TASK,
    profile: list[str] = typer.Option(
        BenchSettings.model_fields["profiles"].default,
        "--profile",
        "-p",
        help="Built-in name or YAML file; repeatable.",
    ),
    out: Path = typer.Option(Path("runs/bench"), "--out", "-o"),
    runner: Optional[str] = typer.Option(None, help="Run every path with this runner: onnx, pytorch or module:Class."),
    max_accuracy_drop: Optional[float] = MAX_DROP,
    max_latency_ms: Optional[float] = MAX_LATENCY,
    max_size_mb: Optional[float] = MAX_SIZE,
    fail_if: Optional[str] = FAIL_IF,
    trust_remote_code: bool = TRUST_REMOTE_CODE,
    verbose: bool = VERBOSE,
    *,
    measuring: dict,
    data: dict,
) -> None:
    """Measure any models side by side under target profiles; writes results.json and report.md."""
    setup(verbose, trust_remote_code)

    from .. import tasks
    from ..bench import profiles as profile_module
    from ..bench.harness import Candidate, measure, preflight
    from ..bench.runners import detect_format
    from ..bench.selection import check_gates
    from ..fsio import FolderLock
    from ..pipeline import model_labels, publish

    selection = selection_settings(None, max_accuracy_drop, max_latency_ms, max_size_mb, fail_if)
    profiles = [profile_module.load(p) for p in profile]
    settings = typed(BenchSettings, "bench", profiles=profiles, **measuring)
    if selection.fail_if:
        check_gates(selection.fail_if, profiles)
    candidates = []
    for p in paths:
        if not p.exists():
            raise EdgeNLPError(f"{p} does not exist: pass a model folder, a variant folder or an .onnx file")
        name = p.stem if p.is_file() else p.name
        candidates.append(Candidate(name=name, path=p.resolve(), runner=runner or detect_format(p)))
    from ..model_facts import read_config
    from ..trust import check_model_folder

    for c in candidates:  # a folder that would run its own code is refused before any worker starts
        folder = c.path if c.path.is_dir() else c.path.parent
        if (folder / "config.json").exists():
            check_model_folder(folder, read_config(folder / "config.json"), f"the model {folder}")
    first = candidates[0].path if candidates[0].path.is_dir() else candidates[0].path.parent
    config = read_config(first / "config.json") if (first / "config.json").exists() else {}
    chosen = tasks.resolve(tasks.of_config(config), task, str(first))
    preflight(candidates, settings, chosen.NAME)  # before the data loads: a bad profile or length costs nothing
    spec = typed(DataSpec, "bench", flags={"source": ("--data", "-d")}, **data)
    dataset = chosen.load_data(spec)
    with FolderLock(out):
        results = measure(
            candidates, chosen.eval_set(dataset, model_labels([c.path for c in candidates])), settings, out
        )
        results["run"] = {
            "recipe": "benchmark",
            "model": ", ".join(c.name for c in candidates),
            "task": chosen.NAME,
            "data": dataset.describe(),
        }
        conclude(publish(results, out, selection), out)


@app.command()
@guarded
def explain(
    target: str = typer.Argument(
        ..., help="A checkpoint or variant folder (PyTorch or unfused ONNX), or a run folder."
    ),
    text: str = typer.Argument(..., help="The text whose attention to show."),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="Folder for the PNG files, explain.json and explain.html (default: explain/<name>, or RUN/explain).",
    ),
    reference: Optional[str] = typer.Option(
        None,
        help="The model to compare with (default: the nearest fine-tuned PyTorch ancestor; in a run, its reference).",
    ),
    max_length: int = typer.Option(128, help="Longest input in tokens."),
    trust_remote_code: bool = TRUST_REMOTE_CODE,
    verbose: bool = VERBOSE,
) -> None:
    """Attention heatmaps per layer and head, and attention rollout, with the rank correlation against the reference.

    Given a run folder, every variant is explained against the run's reference and the run's
    report gains an attention section.
    """
    setup(verbose, trust_remote_code)
    from .. import explain as explaining

    path = Path(target)
    if (path / "results.json").is_file() and (path / "variants").is_dir():
        results = read_results(path)
        from ..bench.results import variant_folder

        chosen = {v["name"]: variant_folder(path, v["path"]) for v in results["variants"]}
        ref = reference or results["reference"]
        if ref not in chosen:
            raise EdgeNLPError(f"--reference {ref} is not a variant of {path}: use one of {', '.join(chosen)}")
        from ..fsio import FolderLock
        from ..pipeline import publish

        with FolderLock(path):
            summary = explaining.explain(
                {ref: chosen.pop(ref), **chosen}, text, out or path / "explain", ref, max_length
            )
            results["attention"] = summary
            publish(results, path, previous_selection(results))
    else:
        ref_path = Path(reference) if reference else explaining.reference_of(path)
        name = path.name or target
        models_to_read = {name: path}
        ref_name = None
        if ref_path is not None:
            ref_name = ref_path.name if ref_path.name != name else f"{ref_path.name} (reference)"
            models_to_read = {ref_name: ref_path, name: path}
        summary = explaining.explain(
            models_to_read, text, out or Path("explain") / name, ref_name, max_length, required=(name,)
        )
    console = Console()
    for model, entry in summary["models"].items():
        rho = entry["rollout_spearman"]
        console.print(
            f"{model}: {entry['source']}, heads {entry['heads']}, most attended {' '.join(entry['top_tokens'])}"
            + ("" if rho is None else f", rollout Spearman vs {summary['reference']} {rho:.3f}")
        )
    for model, why in summary["skipped"].items():
        console.print(f"{model}: skipped ({why})")
    console.print(f"figures: {summary['folder']}/explain.html")


@app.command()
@guarded
def preflight(
    isa: Optional[str] = typer.Option(
        None,
        "--isa",
        help="Instruction set to tune for (default: this CPU's): avx512_vnni, avx_vnni, avx512, avx2, arm64, arm64-dotprod, generic.",
    ),
    reduce_range: bool = typer.Option(False, "--reduce-range", help="Ask about 7-bit weights."),
    activation: Optional[str] = typer.Option(None, "--activation", help="Ask about uint8 or int8 activations."),
    per_channel: bool = typer.Option(False, "--per-channel", help="Ask about per-channel weights."),
) -> None:
    """Which INT8 settings suit this CPU (VNNI, AVX-512, ARM dot product), and warnings for the ones asked about."""
    from ..quantization import preflight as advice
    from ..stages.quantize import ISAS

    if isa is not None and isa not in ISAS:
        raise EdgeNLPError(f"unknown --isa '{isa}': use one of {', '.join(ISAS)}")
    if activation is not None and activation not in ("uint8", "int8"):
        raise EdgeNLPError(f"unknown --activation '{activation}': use uint8 or int8")
    found = advice.advise(isa, reduce_range=reduce_range, activation=activation, per_channel=per_channel)
    console = Console()
    console.print(
        f"CPU: {found['cpu']}; INT8 instruction set: {found['isa']} (VNNI {'yes' if found['vnni'] else 'no'}, "
        f"AVX-512 {'yes' if found['avx512'] else 'no'}, ARM dot product "
        f"{'yes' if found['arm_dot_product'] else 'no'})",
        highlight=False,
    )
    for line in found["suits"]:
        console.print(f"  suits: {line}", highlight=False)
    for line in found["warnings"]:
        err_console.print(f"[yellow]warning:[/yellow] {escape(line)}", highlight=False, soft_wrap=True)
