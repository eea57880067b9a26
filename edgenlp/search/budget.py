"""The accuracy-budget search: the fastest INT8 variant whose quality loss stays within a budget.

`--max-accuracy-drop B` (recipe `selection.max_accuracy_drop`) no longer only filters finished
variants. For every FP32 ONNX export the recipe has (the unpruned model and every pruned one) and
every quantisation setting in the search space (dynamic, static with each calibrator, per-tensor or
per-channel weights, embeddings quantised or not, and at 8 or 4 bits), the search

1. builds the fully quantised model and scores it on the *tuning* split (carved from the training
   data; the test split is never read here) against the reference's ONNX export;
2. when that loses more than B, returns nodes to float in order of sensitivity (most damaging
   first, from `quantization/sensitivity.py`): doubling the count until the budget holds, then
   bisecting for the fewest nodes that keep it;
3. keeps one candidate per distinct graph (calibrators that leave the same nodes quantised differ
   only in their scales, so they run the same kernels: the most accurate stands for them), and
   takes a short latency look at each under the primary profile's thread count;
4. hands the `measure_top` fastest to the pipeline, which builds them as ordinary variants and
   measures them with everything else in one harness run; selection then picks the fastest by that
   measurement, and the report shows test-split figures next to the tuning ones.

Every trial is kept in `search/trials.json` in the run folder (what was tried, its tuning
quality and drop, its latency look, and why it was rejected), so a rerun resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from .. import executors, stages
from ..artifact import Artifact, copy_support_files, stable_id
from ..errors import EdgeNLPError, RecipeError
from ..executors.transport import unpack
from ..fsio import write_json_atomic
from ..quantization import sensitivity
from .settings import SearchSettings

log = logging.getLogger(__name__)

MODES = {"dynamic": "quantize", "static": "quantize-static"}
"""Search mode -> the stage that builds it (each offers `resolve`, `quantize_file` and `run`)."""
WEIGHT_OPS = ["MatMul", "Gemm"]
EMBEDDING_OPS = ["Gather"]
SEARCH_DIR = "search"


@dataclass
class Trial:
    base: str
    mode: str
    stage: str
    config: dict
    float_nodes: list[str]
    label: str
    id: str = ""
    tuning_quality: float | None = None
    tuning_drop: float | None = None
    latency_look_ms: float | None = None
    status: str = "pending"
    """shortlisted (built and measured), same-graph, superseded, not-shortlisted, over-budget, failed."""
    reason: str = ""
    variant: str | None = None


@dataclass
class Outcome:
    budget: float
    drop_unit: str
    tuning: dict
    reference_quality: float
    bases: dict = field(default_factory=dict)
    trials: list[Trial] = field(default_factory=list)
    sensitivity: dict = field(default_factory=dict)
    variants: list[dict] = field(default_factory=list)
    """Recipe variant specs of the shortlisted candidates (the pipeline builds and measures them)."""

    @property
    def shortlist(self) -> list[str]:
        return [t.variant for t in self.trials if t.status == "shortlisted"]

    def closest(self) -> Trial | None:
        scored = [t for t in self.trials if t.tuning_drop is not None]
        return min(scored, key=lambda t: t.tuning_drop) if scored else None

    def unmet(self, out_dir: Path) -> BudgetNotMet:
        """The error for a search that found nothing within the budget, naming the closest trial."""
        closest = self.closest()
        near = (
            f"closest: {closest.base}.{closest.label}, {closest.tuning_drop:.2f} {self.drop_unit} on the tuning split"
            if closest
            else "no trial could be scored"
        )
        return BudgetNotMet(
            f"no variant keeps the quality budget of {self.budget:g} {self.drop_unit} ({near}): raise "
            "--max-accuracy-drop, or widen the recipe's search; finished variants and the report are "
            f"kept in {out_dir}"
        )

    def to_json(self) -> dict:
        return {
            "budget": self.budget,
            "drop_unit": self.drop_unit,
            "tuning": self.tuning,
            "reference_quality": self.reference_quality,
            "bases": self.bases,
            "trials": [asdict(t) for t in self.trials],
            "sensitivity": self.sensitivity,
            "shortlist": self.shortlist,
        }


class BudgetNotMet(EdgeNLPError):
    """No variant keeps the quality budget on the tuning split (the CLI exits 1: a verdict, not bad input)."""

    exit_code = 1


def _reference_export(recipe, variants: dict[str, Artifact]) -> str:
    reference = recipe.bench.reference
    if reference and variants[reference].format == "onnx" and variants[reference].precision == "fp32":
        return reference
    for name, art in variants.items():  # by id: a finetune the source already satisfies is the source itself
        if _parent_id(art) == variants[reference].id and art.format == "onnx" and art.precision == "fp32":
            return name
    raise RecipeError(
        f"the accuracy-budget search scores the reference on the tuning split through its FP32 ONNX "
        f"export, but no variant exports '{reference}': add an export variant with parent {reference}"
    )


def _bases(settings: SearchSettings, variants: dict[str, Artifact]) -> list[str]:
    if settings.bases:
        for name in settings.bases:
            art = variants.get(name)
            if art is None or art.format != "onnx" or art.precision != "fp32":
                raise RecipeError(
                    f"search.bases names '{name}', which is not an FP32 ONNX variant of the recipe: "
                    "name export variants"
                )
        return list(settings.bases)
    by_id = {art.id: art for art in variants.values()}
    exports = []
    for name, art in variants.items():
        parent = by_id.get(_parent_id(art))
        if art.format == "onnx" and art.precision == "fp32" and (parent is None or parent.format != "onnx"):
            exports.append(name)
    return exports


def _parent_id(art: Artifact) -> str | None:
    return (art.meta.get("parent") or {}).get("id")


class Search:
    """One search over one run folder: trials are scored once and remembered across reruns."""

    def __init__(self, recipe, out_dir: Path, dataset, task, variants: dict[str, Artifact], budget: float):
        from ..bench.profiles import load as load_profile

        self.recipe, self.settings, self.task = recipe, recipe.search, task
        self.variants, self.budget, self.dataset = variants, budget, dataset
        self.dir = out_dir / SEARCH_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.threads = self.settings.threads or os.cpu_count() or 1
        self.look_threads = load_profile(recipe.bench.profiles[0]).threads
        self.reference = _reference_export(recipe, variants)
        labels = variants[self.reference].labels()
        seen = [
            a.meta.get("stage_config") or {}
            for a in variants.values()
            if a.meta.get("stage") in stages.STAGE_NAMES
            and not stages.checked_against_parent(stages.get(a.meta["stage"]))
        ]
        minimum = self.settings.min_tuning_examples
        self.tuning = task.tuning_set(dataset, labels, self.settings.tuning_examples, seen=seen, minimum=minimum)
        self.small_tuning = task.tuning_set(
            dataset,
            labels,
            self.settings.sensitivity_examples,
            seen=seen,
            minimum=min(minimum, self.settings.sensitivity_examples),
        )
        # what every score was computed on: the data and exactly which examples (memo keys include it)
        self.data_id = stable_id(task.fingerprint(recipe.data), _texts(self.tuning), _texts(self.small_tuning))
        self.memo_file = self.dir / "trials.json"
        self.memo: dict[str, dict] = json.loads(self.memo_file.read_text()) if self.memo_file.exists() else {}
        self._lock = threading.RLock()
        self._local = threading.local()  # the trials of the setting this thread searches

    # -- scoring ----------------------------------------------------------------------------------
    def _remember(self, key: str, record: dict) -> None:
        with self._lock:
            self.memo[key] = record
            write_json_atomic(self.memo_file, self.memo)

    def quality(self, art: Artifact) -> float:
        key = stable_id("quality", art.id, self.data_id)
        if key not in self.memo:
            self._remember(key, {"quality": self.task.tuning_quality(art.path, self.tuning, self.threads)})
        return self.memo[key]["quality"]

    def _config(
        self,
        mode: str,
        calibrator: str | None,
        per_channel: bool,
        embeddings: bool,
        float_nodes: list[str],
        attention: bool = False,
        embedding_bits: int = 8,
    ):
        stage = stages.get(MODES[mode])
        raw = {
            "per_channel": per_channel,
            "op_types": WEIGHT_OPS + (EMBEDDING_OPS if embeddings else []),
            "nodes_to_exclude": sorted(float_nodes),
        }
        if attention:  # dynamic only: static quantisation takes the attention MatMuls anyway
            raw["attention_matmuls"] = True
        if embedding_bits != 8:  # dynamic only, like the attention MatMuls
            raw["embedding_bits"] = embedding_bits
        if mode == "static":
            raw.update(
                calibrator=calibrator,
                calibration_samples=self.settings.calibration_samples,
                data=self.recipe.data.model_dump(),
            )
        return stage, stage.resolve(stage.Config(**raw))

    def score(self, trial: Trial) -> Trial:
        """Build the trial's model, score it on the tuning split and take its latency look; keep the record.

        The build and the score run wherever the executor puts them; the look only on a measuring node.
        """
        base = self.variants[trial.base]
        stage, config = self._config(
            trial.mode,
            trial.config.get("calibrator"),
            trial.config["per_channel"],
            trial.config["embeddings"],
            trial.float_nodes,
            trial.config.get("attention_matmuls", False),
            trial.config.get("embedding_bits", 8),
        )
        trial.id = stable_id(base.id, trial.stage, config.model_dump(mode="json"), self.data_id)
        if trial.id not in self.memo:
            work = self.dir / "work" / trial.id
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            executor = executors.current()
            threads = (executor.settings.build_cpus or 1) if executor.remote else self.threads
            try:
                quality, blob = executor.call(
                    _quantise_and_score,
                    stage.NAME,
                    config,
                    base.meta,
                    executors.Shipped.of(base.path),
                    self.task.NAME,
                    self.tuning,
                    threads,
                    work if not executor.remote else None,
                    needs=executors.Needs(threads, what=f"search trial {trial.base}.{trial.label}"),
                )
                if blob is not None:
                    unpack(blob, work, f"search trial {trial.label}")
                look = executor.call(
                    _latency_look,
                    self.task.NAME,
                    executors.Shipped.of(work),
                    self.tuning,
                    self.look_threads,
                    needs=executors.Needs(self.look_threads, measure=True, what="a search latency look"),
                )
                self._remember(trial.id, {"quality": quality, "latency_look_ms": look})
            except executors.ExecutorError:
                raise
            except (
                Exception
            ) as exc:  # onnxruntime's quantiser can refuse one node subset: that trial fails, not the search
                log.warning("search: %s.%s failed: %s", trial.base, trial.label, exc)
                self._remember(trial.id, {"failed": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"})
            finally:
                shutil.rmtree(work, ignore_errors=True)
        record = self.memo[trial.id]
        if "failed" in record:
            trial.status, trial.reason = "failed", record["failed"]
            return trial
        trial.tuning_quality, trial.latency_look_ms = record["quality"], record["latency_look_ms"]
        trial.tuning_drop = self.task.quality_drop(self.reference_quality, trial.tuning_quality)
        if trial.tuning_drop > self.budget:
            trial.status = "over-budget"
            trial.reason = f"tuning drop {trial.tuning_drop:.2f} {self.task.QUALITY.drop_unit} > budget {self.budget:g}"
        else:
            trial.status = "candidate"
        return trial

    # -- sensitivity ------------------------------------------------------------------------------
    def sensitivity(self, base: str, mode: str) -> list[dict]:
        with self._lock:  # settings searched at once share one analysis per base and mode
            return self._sensitivity(base, mode)

    def _sensitivity(self, base: str, mode: str) -> list[dict]:
        art = self.variants[base]
        calibrator = self.settings.calibrators[0] if mode == "static" else None
        stage, config = self._config(mode, calibrator, self.settings.per_channel[-1], True, [])
        key = stable_id(
            "sensitivity", art.id, stage.NAME, config.model_dump(mode="json"), self.data_id, self.settings.probe_samples
        )
        if key not in self.memo:
            log.info("search: sensitivity of every node of %s (%s)", base, mode)
            nodes = stage.quantisable_nodes(art.onnx_path, config.op_types)
            import onnx

            op_types = {n.name: n.op_type for n in onnx.load(str(art.onnx_path), load_external_data=False).graph.node}
            probe = list(
                self.task.calibration_batches(
                    self.dataset, art.path, self.settings.probe_samples, min(16, self.settings.probe_samples), seed=1
                )
            )
            extra = {}
            if mode == "static":
                extra["calib"] = stage.calibrate(art, config)
            reference_small = self.task.tuning_quality(
                self.variants[self.reference].path, self.small_tuning, self.threads
            )
            rows = sensitivity.analyse(
                art.onnx_path,
                nodes,
                op_types,
                lambda node, out: stage.quantize_file(art, config, out, only=[node], **extra),
                probe,
                tuning=lambda folder: self.task.tuning_quality(folder, self.small_tuning, self.threads),
                reference_quality=reference_small,
                quality_drop=self.task.quality_drop,
            )
            self._remember(
                key,
                {
                    "rows": rows,
                    "setting": {
                        "mode": mode,
                        "calibrator": calibrator,
                        "per_channel": config.per_channel,
                        "tuning_examples": len(_texts(self.small_tuning)),
                    },
                },
            )
        self.outcome.sensitivity.setdefault(base, {})[mode] = self.memo[key]
        return self.memo[key]["rows"]

    # -- the search -------------------------------------------------------------------------------
    def _space(self):
        for mode in self.settings.modes:
            for calibrator in self.settings.calibrators if mode == "static" else [None]:
                for per_channel in self.settings.per_channel:
                    for embeddings in self.settings.embeddings:
                        for attention in self.settings.attention_matmuls if mode == "dynamic" else [False]:
                            for bits in self.settings.embedding_bits if embeddings and mode == "dynamic" else [8]:
                                yield mode, calibrator, per_channel, embeddings, attention, bits

    def _trial(self, base, mode, calibrator, per_channel, embeddings, attention, bits, float_nodes) -> Trial:
        label = (
            f"{mode}"
            + (f"-{calibrator}" if calibrator else "")
            + ("-per-channel" if per_channel else "")
            + ("" if embeddings else "-float-embeddings")
            + ("-attention" if attention else "")
            + ("-4bit-embeddings" if bits == 4 else "")
            + (f"-{len(float_nodes)}-in-float" if float_nodes else "")
        )
        config = {"calibrator": calibrator, "per_channel": per_channel, "embeddings": embeddings}
        if attention:
            config["attention_matmuls"] = True
        if bits != 8:  # absent at 8, so the trials recorded before this setting keep their ids
            config["embedding_bits"] = bits
        trial = self.score(Trial(base, mode, MODES[mode], config, list(float_nodes), label))
        self._local.tried.append(trial)
        return trial

    def _fall_back(self, base: str, first: Trial) -> Trial | None:
        """Return nodes to float, most sensitive first, until the budget holds: the fewest that do."""
        order = [r["node"] for r in self.sensitivity(base, first.mode)]
        stage = stages.get(MODES[first.mode])
        op_types = WEIGHT_OPS + (EMBEDDING_OPS if first.config["embeddings"] else [])
        quantised = set(stage.quantisable_nodes(self.variants[base].onnx_path, op_types))
        order = [n for n in order if n in quantised][: self.settings.max_float_nodes or None]
        args = (
            base,
            first.mode,
            first.config["calibrator"],
            first.config["per_channel"],
            first.config["embeddings"],
            first.config.get("attention_matmuls", False),
            first.config.get("embedding_bits", 8),
        )
        failed, passed, k = 0, None, 1
        while k <= len(order):
            trial = self._trial(*args, order[:k])
            if trial.status == "candidate":
                passed = (k, trial)
                break
            failed, k = k, min(2 * k, len(order)) if k < len(order) else k + 1
        if passed is None:
            return None
        high, best = passed
        passing = [best]
        while high - failed > 1:
            middle = (failed + high) // 2
            trial = self._trial(*args, order[:middle])
            if trial.status == "candidate":
                high, best = middle, trial
                passing.append(trial)
            else:
                failed = middle
        for trial in passing:
            if trial is not best:
                trial.status = "superseded"
                trial.reason = f"more nodes in float than {best.label}, which keeps the budget too"
        return best

    def _setting(self, base: str, setting: tuple) -> list[Trial]:
        """The trials of one setting of the space on one base: the fully quantised one, then its fall-back."""
        self._local.tried = []
        trial = self._trial(base, *setting, [])
        if trial.status == "over-budget" and self._fall_back(base, trial) is None:
            trial.reason += "; no count of nodes returned to float keeps the budget"
        return self._local.tried

    def run(self) -> Outcome:
        task = self.task
        self.reference_quality = self.quality(self.variants[self.reference])
        self.outcome = Outcome(
            self.budget,
            task.QUALITY.drop_unit,
            {
                "name": getattr(self.tuning, "name", "tuning"),
                "examples": len(_texts(self.tuning)),
                "split": "validation examples carved from the training data that no training stage "
                "picked its checkpoint on",
            },
            self.reference_quality,
        )
        bases = _bases(self.settings, self.variants)
        for base in bases:
            quality = self.quality(self.variants[base])
            drop = task.quality_drop(self.reference_quality, quality)
            self.outcome.bases[base] = {"tuning_quality": quality, "tuning_drop": drop}
            if drop > self.budget:
                self.outcome.bases[base]["skipped"] = (
                    f"its FP32 model already loses {drop:.2f} {task.QUALITY.drop_unit} on the tuning split"
                )
                continue
            if self.settings.sensitivity == "all" or (
                self.settings.sensitivity == "reference" and base == self.reference
            ):
                for mode in self.settings.modes:
                    self.sensitivity(base, mode)
            # each setting (with its fall-back) is independent: as many at once as the executor runs,
            # recorded in the order of the space so that the outcome does not depend on which finished first
            for tried in executors.run_all(
                executors.current(),
                partial(self._setting, base),
                list(self._space()),
                executors.Needs(executors.current().settings.build_cpus or 1),
            ):
                self.outcome.trials += tried
        self._shortlist()
        write_json_atomic(self.dir / "search.json", self.outcome.to_json())
        return self.outcome

    def _shortlist(self) -> None:
        """One candidate per distinct graph, the `measure_top` fastest by the latency look become variants."""
        by_graph: dict[tuple, Trial] = {}
        for t in self.outcome.trials:
            if t.status != "candidate":
                continue
            graph = (
                t.base,
                t.mode,
                t.config["per_channel"],
                t.config["embeddings"],
                t.config.get("attention_matmuls", False),
                t.config.get("embedding_bits", 8),
                tuple(sorted(t.float_nodes)),
            )
            kept = by_graph.get(graph)
            better = self.task.QUALITY.higher_is_better
            if kept is None or (
                (t.tuning_quality > kept.tuning_quality) if better else (t.tuning_quality < kept.tuning_quality)
            ):
                if kept is not None:
                    kept.status, kept.reason = "same-graph", f"same graph as {t.base}.{t.label}: only the scales differ"
                by_graph[graph] = t
            else:
                t.status, t.reason = "same-graph", f"same graph as {kept.base}.{kept.label}: only the scales differ"
        ranked = sorted(by_graph.values(), key=lambda t: t.latency_look_ms)
        for i, t in enumerate(ranked):
            if i < self.settings.measure_top:
                t.status, t.variant = "shortlisted", f"{t.base}.{t.label}"
                stage, config = self._config(
                    t.mode,
                    t.config["calibrator"],
                    t.config["per_channel"],
                    t.config["embeddings"],
                    t.float_nodes,
                    t.config.get("attention_matmuls", False),
                    t.config.get("embedding_bits", 8),
                )
                self.outcome.variants.append(
                    {
                        "name": t.variant,
                        "stage": t.stage,
                        "parent": t.base,
                        "config": config.model_dump(mode="json", exclude_defaults=True),
                    }
                )
            else:
                t.status = "not-shortlisted"
                t.reason = (
                    f"latency look {t.latency_look_ms:.2f} ms: slower than the {self.settings.measure_top} measured"
                )


def _quantise_and_score(
    stage_name: str, config, base_meta: dict, base_path: Path, task_name: str, tuning, threads: int, out: Path | None
) -> tuple[float, bytes | None]:
    """Quantise `base` with `config` into `out` (or into scratch, returned packed) and score it on `tuning`."""
    import tempfile

    from .. import tasks
    from ..executors.transport import pack

    base = Artifact(base_path, base_meta)
    work = out or Path(tempfile.mkdtemp(prefix="edgenlp-search-"))
    try:
        stages.get(stage_name).quantize_file(base, config, work / "model.onnx")
        copy_support_files(base.path, work)
        return tasks.get(task_name).tuning_quality(work, tuning, threads), (None if out else pack(work))
    finally:
        if out is None:
            shutil.rmtree(work, ignore_errors=True)


def _latency_look(task_name: str, model_dir: Path, tuning, threads: int) -> float:
    from .. import tasks

    return tasks.get(task_name).screen_latency(model_dir, tuning, threads)


def _texts(tuning) -> list:
    return tuning.texts if hasattr(tuning, "texts") else [tuning]


def run(recipe, out_dir: Path, dataset, task, variants: dict[str, Artifact], budget: float) -> Outcome:
    for hook in ("tuning_set", "tuning_quality", "quality_drop", "calibration_batches", "screen_latency"):
        if not hasattr(task, hook):
            raise RecipeError(f"the accuracy-budget search does not support {task.NAME} yet: set search.enabled: false")
    return Search(recipe, out_dir, dataset, task, variants, budget).run()
