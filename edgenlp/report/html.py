"""`results.json` -> one self-contained `report.html` (tables and embedded PNG plots, no network)."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, PackageLoader

from ..bench.results import task_of
from ..fsio import write_text_atomic
from . import attention, engines, plots, pruning, search, structure, targets, tuning

MB = 1e6
MIB = 2**20


def render(results: dict) -> str:
    # every value escaped: continuations, prompts, explained texts and data notes come from strangers
    env = Environment(loader=PackageLoader("edgenlp.report", "templates"), autoescape=True)
    figures = [
        *task_of(results).figures(results),
        ("Pruning: quality against size (labels: parameters)", plots.quality_vs_size(results)),
        ("Quantisation sensitivity: the most damaging nodes", plots.sensitivity_ranking(results)),
        ("Size on disk", plots.sizes(results)),
        ("Latency distributions", plots.latency_distributions(results)),
        ("Training", plots.training_curves(results)),
        ("Hyper-parameter search: trials and parameter importances", tuning.figure(results)),
        ("Attention rollout per token (`edgenlp explain`)", attention.run_figure(results)),
    ]
    return env.get_template("report.html.j2").render(
        r=results,
        task_template=f"{task_of(results).NAME}.html.j2",
        figures=[(title, png) for title, png in figures if png],
        MB=MB,
        MIB=MIB,
        pruning_rows=pruning.rows(results),
        pruning_recovery=pruning.recovery(results),
        structure=structure.summary(results),
        search=results.get("search"),
        trials=search.trial_rows(results),
        calibrations=search.calibration_rows(results),
        sensitivities=search.sensitivity_rows(results),
        studies=tuning.studies(results),
        verdict=tuning.verdict,
        quality=task_of(results).QUALITY.metric,
        speed=task_of(results).SPEED[0],
        engine_rows=engines.rows(results),
        engines=engines.engines_measured(results),
        target_rows=targets.rows(results),
        target_speed_note=targets.SPEED_NOTE,
    )


def write(results: dict, path: Path) -> Path:
    return write_text_atomic(path, render(results))
