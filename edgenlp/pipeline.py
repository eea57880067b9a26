"""Wire a recipe's stages into a tree of variants, validate each, benchmark them all, report.

No stage logic lives here: the pipeline resolves the model and data, asks `artifact.build` for each
variant in recipe order (finished ones are reused), and hands the folders to the harness.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from . import data as data_module
from . import models, stages, validate
from .artifact import Artifact, build, write_json_atomic
from .bench import selection
from .bench.harness import Candidate, EvalSet, measure
from .errors import EdgeNLPError
from .recipe import Recipe, SelectionSettings
from .report import html, markdown

log = logging.getLogger(__name__)
VARIANTS_DIR = "variants"


@dataclass
class RunOutcome:
    out_dir: Path
    variants: dict[str, Artifact]
    reused: list[str]
    results: dict | None


def _already_finetuned(parent: Artifact, labels: list[str]) -> bool:
    return parent.task == "text-classification" and parent.labels() == labels


def build_variants(recipe: Recipe, out_dir: Path, dataset: data_module.ClassificationData) -> tuple[dict[str, Artifact], list[str]]:
    source = models.resolve(recipe.model)
    built: dict[str, Artifact] = {}
    reused: list[str] = []
    check_texts = dataset.validation.sample(recipe.validation.examples, seed=0).texts
    tolerance = validate.Tolerance(recipe.validation.atol, recipe.validation.min_label_agreement)
    for spec in recipe.variants:
        parent = built[spec.parent] if spec.parent else source
        stage = stages.get(spec.stage)
        config = recipe.stage_config(spec)
        if hasattr(stage, "resolve"):
            config = stage.resolve(config)
        if spec.stage == "finetune" and _already_finetuned(parent, dataset.labels):
            log.info("%s: %s is already fine-tuned for %s; using it as is", spec.name, parent.path, dataset.labels)
            built[spec.name] = parent
            reused.append(spec.name)
            continue

        def check(child: Artifact, parent: Artifact = parent) -> dict:
            return validate.against_parent(parent, child, check_texts, tolerance)

        try:
            artifact, was_reused = build(
                out_dir / VARIANTS_DIR / spec.name, parent, spec.stage, config,
                run=lambda work, stage=stage, parent=parent, config=config: stage.run(parent, config, work),
                check=None if spec.stage == "finetune" else check, name=spec.name,
                check_settings=recipe.validation.model_dump())
        except EdgeNLPError as exc:
            done = ", ".join(built) or "none"
            raise type(exc)(f"variant {spec.name} ({spec.stage}) failed: {exc} [finished variants kept: {done}]") from exc
        built[spec.name] = artifact
        if was_reused:
            reused.append(spec.name)
    return built, reused


def candidates_of(variants: dict[str, Artifact]) -> list[Candidate]:
    out = []
    for name, art in variants.items():
        info = {"format": art.format, "precision": art.precision, "stage": art.meta.get("stage"),
                "parent": (art.meta.get("parent") or {}).get("name"), "artifact_id": art.id,
                "metadata": art.meta.get("metadata", {}), "validation": art.meta.get("validation")}
        out.append(Candidate(name=name, path=art.path, runner=art.format, info=info))
    return out


def training_logs(variants: dict[str, Artifact]) -> dict[str, dict]:
    logs = {}
    for name, art in variants.items():
        path = art.path / "training_log.json"
        if path.exists():
            logs[name] = json.loads(path.read_text())
    return logs


def run(recipe: Recipe, out_dir: Path, bench: bool = True) -> RunOutcome:
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = data_module.load(recipe.data)
    variants, reused = build_variants(recipe, out_dir, dataset)
    results = None
    if bench:
        eval_set = EvalSet(dataset.test.texts, dataset.test.labels, dataset.labels, name=f"{dataset.name}/test")
        results = measure(candidates_of(variants), eval_set, recipe.bench, out_dir / "bench")
        results["run"] = {"recipe": recipe.name, "model": recipe.model, "data": dataset.describe()}
        results["training"] = training_logs(variants)
        publish(results, out_dir, recipe.selection)
    return RunOutcome(out_dir, variants, reused, results)


def publish(results: dict, out_dir: Path, selection_settings: SelectionSettings | None = None) -> dict:
    """Add the selection (and the gate verdict), then write results.json, report.md and report.html."""
    s = selection_settings or SelectionSettings()
    results["selection"] = selection.select(results, s.max_accuracy_drop, s.max_latency_ms, s.max_size_mb)
    results["gates"] = selection.evaluate_gates(results, s.fail_if) if s.fail_if else None
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "results.json", results)
    markdown.write(results, out_dir / "report.md")
    html.write(results, out_dir / "report.html")
    return results
