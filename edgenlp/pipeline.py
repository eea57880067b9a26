"""Wire a recipe's stages into a tree of variants, validate each, benchmark them all, report.

No stage logic lives here: the pipeline checks what can be checked before any work, resolves the
model and data, asks `artifact.build` for each variant in recipe order (finished ones are reused),
and hands the folders to the harness. One process at a time works in a run folder (a lock).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from . import executors, models, progress, stages, tasks
from .artifact import Artifact, build
from .bench import selection
from .bench.harness import Candidate, check_lengths, measure
from .bench.profiles import load as load_profile
from .bundle.checks import check_run
from .errors import BenchError, EdgeNLPError, VariantsSkipped
from .fsio import FolderLock, write_json_atomic
from .recipe import Recipe, SelectionSettings, VariantSpec
from .report import html, markdown
from .search import budget as budget_search
from .search import structure as structure_search
from .tasks import Task

log = logging.getLogger(__name__)
VARIANTS_DIR = "variants"


@dataclass
class RunOutcome:
    out_dir: Path
    variants: dict[str, Artifact]
    reused: list[str]
    results: dict | None


def task_of(recipe: Recipe, source: Artifact) -> Task:
    """The recipe's task for its model: resolved once per run, then passed down."""
    return tasks.resolve(tasks.of_config(source.config()), recipe.task, recipe.model)


def with_task_of_data(recipe: Recipe, source: Artifact) -> Recipe:
    """A recipe for a bare encoder that names no task gets the task its data belongs to (sentence pairs:
    embeddings), so that every stage trains and measures for it; otherwise the recipe as it is."""
    if recipe.task is not None or tasks.of_config(source.config()) is not None:
        return recipe
    claimed = [name for name in tasks.TASK_NAMES if tasks.get(name).claims_data(recipe.data)]
    return recipe.model_copy(update={"task": claimed[0]}) if len(claimed) == 1 else recipe


def source_and_task(recipe: Recipe) -> tuple[Artifact, Task]:
    """The recipe's model, resolved, and its task."""
    source = models.resolve(recipe.model)
    return source, task_of(recipe, source)


def check_before_work(recipe: Recipe, source: Artifact, task: Task) -> None:
    """Refuse, before anything is built or measured, what would fail only after minutes of work."""
    profiles = [load_profile(p) for p in recipe.bench.profiles]
    if recipe.selection.fail_if:
        selection.check_gates(recipe.selection.fail_if, profiles, task.NAME)
    check_lengths([Candidate("source model", source.path, source.format)], profiles, task.NAME)
    longest = max((task.truncated_input(p) or 0 for p in profiles), default=0)
    for spec in recipe.variants:
        limit = getattr(recipe.stage_config(spec), "max_length", None)
        if limit is not None and longest > limit:
            raise BenchError(
                f"the profiles ask for {longest} tokens but variant {spec.name} is made for at most "
                f"{limit} (its max_length): lower the profiles' seq_lengths or raise max_length"
            )
    if recipe.target.check_on:
        from . import targets

        targets.require(recipe.target.check_on)


@dataclass
class BuildJob:
    """One variant's build, described so that any machine with edgenlp installed can run it."""

    name: str
    stage: str
    config: object
    task_name: str
    """The task by name: the job travels to other machines, where the name finds the same task."""
    check_texts: list
    validation: object
    threads: int | None

    @property
    def task(self) -> Task:
        return tasks.get(self.task_name)

    def run(self, parent: Artifact, work: Path):
        with _threads(self.threads):
            return stages.get(self.stage).run(parent, self.config, work)

    def check(self, parent: Artifact, child: Artifact) -> dict:
        with _threads(self.threads):
            return self.task.check_against_parent(parent, child, self.check_texts, self.validation)

    def make(self, plan: dict, parent: Artifact) -> tuple[dict, bytes]:
        """On a node: make the artifact from `parent` (a copy there); return its meta and packed files."""
        import shutil
        import tempfile

        from .artifact import make
        from .executors.transport import pack

        inputs = plan["inputs"]
        if "data_sha256" in inputs:  # the node must read the same data the id was computed from
            here = self.task.fingerprint(self.config.data)
            if here != inputs["data_sha256"]:
                raise EdgeNLPError(
                    f"variant {self.name}: this node reads other data than the run "
                    f"({self.config.data.source}): give every node the same data (EDGENLP_DATA_DIR)"
                )
        scratch = Path(tempfile.mkdtemp(prefix=f"edgenlp-{self.name}-"))
        try:
            checked = self.check if stages.checked_against_parent(stages.get(self.stage)) else None
            meta = make(
                scratch,
                plan,
                lambda w: self.run(parent, w),
                (lambda child: checked(parent, child)) if checked else None,
            )
            return meta, pack(scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


class _threads:
    """Pin torch's intra-op threads for one build: floating-point sums depend on the thread count."""

    def __init__(self, threads: int | None):
        self.threads, self.before = threads, None

    def __enter__(self):
        if self.threads:
            import torch

            self.before = torch.get_num_threads()
            torch.set_num_threads(self.threads)

    def __exit__(self, *exc):
        if self.before:
            import torch

            torch.set_num_threads(self.before)


def _made_on_node(job: BuildJob, plan: dict, parent_meta: dict, parent_path: Path, _reads: list) -> tuple[dict, bytes]:
    """`_reads`: the other folders the stage reads, already brought to this node (see `executors.located`)."""
    return job.make(plan, Artifact(parent_path, parent_meta))


def _on_a_node(executor, job: BuildJob, parent: Artifact, reads: list[Path], needs: executors.Needs):
    """`artifact.build`'s `make_elsewhere`: the job runs on a node; its files are unpacked (checked) into `work`."""
    from .executors.transport import unpack

    def make_elsewhere(work: Path, plan: dict) -> dict:
        meta, blob = executor.call(
            _made_on_node,
            job,
            plan,
            parent.meta,
            executors.Shipped.of(parent.path),
            [executors.Shipped.of(p) for p in reads],
            needs=executors.Needs(needs.cpus, needs.memory_gb, what="its build"),
        )
        unpack(blob, work, f"variant {job.name}")
        return meta

    return make_elsewhere


def build_variants(
    recipe: Recipe, out_dir: Path, dataset, source: Artifact, task: Task, skipped: dict[str, str] | None = None
) -> tuple[dict[str, Artifact], list[str]]:
    """Build (or reuse) every variant, each once its parent is done, as many at once as the executor runs.

    With `skipped` given, a variant whose stage is skippable (an engine conversion) and fails is
    recorded there with its one-line reason, its children too, and the other variants are still
    built; without it, every failure stops the build (finished variants are kept either way).
    """
    executor = executors.current()
    built: dict[str, Artifact] = {}
    reused: list[str] = []
    check_texts = task.validation_texts(dataset, recipe.validation.examples)
    data_hash = task.fingerprint(recipe.data)
    check_settings = {**recipe.validation.model_dump(), "data_sha256": data_hash, "task": task.NAME}
    threads = recipe.executor.build_cpus
    needs = executors.Needs(cpus=threads or 1, memory_gb=recipe.executor.build_memory_gb)

    def build_one(spec: VariantSpec) -> None:
        parent = built[spec.parent] if spec.parent else source
        stage = stages.get(spec.stage)
        config = recipe.stage_config(spec)
        if hasattr(stage, "resolve"):
            config = stage.resolve(config)
        why = stages.satisfied_by(stage, parent, dataset, config)
        if why:
            log.info("%s: %s already is what %s would make; using it as is", spec.name, parent.path, spec.stage)
            progress.note(f"variant {spec.name} ({spec.stage}): the model is used as given: {why}")
            built[spec.name] = parent
            reused.append(spec.name)
            return
        inputs = {"data_sha256": task.fingerprint(config.data)} if stages.uses_data(stage) else {}
        job = BuildJob(spec.name, spec.stage, config, task.NAME, check_texts, recipe.validation, threads)
        # a build that spreads its own work (tuning trials) stays here and sends that work out instead
        elsewhere = (
            _on_a_node(executor, job, parent, stages.reads(stage, parent, config), needs)
            if executor.remote and not stages.fans_out(stage, config)
            else None
        )
        try:
            with progress.stage(spec.name, spec.stage) as ended:
                artifact, was_reused = build(
                    out_dir / VARIANTS_DIR / spec.name,
                    parent,
                    spec.stage,
                    config,
                    run=lambda work: job.run(parent, work),
                    check=(lambda child: job.check(parent, child)) if stages.checked_against_parent(stage) else None,
                    name=spec.name,
                    check_settings=check_settings,
                    inputs=inputs,
                    libraries=stages.libraries(stage),
                    make_elsewhere=elsewhere,
                )
                ended("reused" if was_reused else "built")
        except EdgeNLPError as exc:
            if skipped is not None and stages.skippable(stage):
                log.warning("variant %s (%s) skipped: %s", spec.name, spec.stage, exc)
                skipped[spec.name] = str(exc)
                return
            raise
        built[spec.name] = artifact
        if was_reused:
            reused.append(spec.name)

    todo = [s for s in recipe.variants if not (skipped is not None and s.name in skipped)]  # refused earlier
    failure = executors.build_tree(
        executor, todo, build_one, needs, done=lambda name: name in built, skip=lambda spec: _skip_child(spec, skipped)
    )
    if failure is not None:
        spec, exc = failure
        finished = ", ".join(built) or "none"
        raise type(exc)(
            f"variant {spec.name} ({spec.stage}) failed: {exc} [finished variants kept: {finished}]"
        ) from exc
    return built, reused


def _skip_child(spec: VariantSpec, skipped: dict[str, str] | None) -> bool:
    if skipped is not None and spec.parent in skipped:
        skipped[spec.name] = f"not built because its parent {spec.parent} was not"
        return True
    return False


def _pruned_by(variants: dict[str, Artifact], art: Artifact) -> dict | None:
    """The nearest `prune` in a variant's lineage (itself included): its name and what it removed."""
    seen = set()
    while art is not None and art.id not in seen:
        seen.add(art.id)
        if art.meta.get("stage") == "prune":
            return {"name": art.name, "metadata": art.meta.get("metadata", {})}
        art = variants.get((art.meta.get("parent") or {}).get("name"))
    return None


def candidates_of(variants: dict[str, Artifact]) -> list[Candidate]:
    out = []
    for name, art in variants.items():
        info = {
            "format": art.format,
            "precision": art.precision,
            "stage": art.meta.get("stage"),
            "parent": (art.meta.get("parent") or {}).get("name"),
            "artifact_id": art.id,
            "metadata": art.meta.get("metadata", {}),
            "validation": art.meta.get("validation"),
            "pruned_by": _pruned_by(variants, art),
        }
        out.append(Candidate(name=name, path=art.path, runner=art.format, info=info))
    return out


def model_labels(paths: list[Path]) -> list[str]:
    """The label order the models predict in; they must all agree, or accuracy would be misread."""
    found = {}
    for path in paths:
        labels = Artifact(path if path.is_dir() else path.parent).labels()
        if labels:
            found[str(path)] = labels
    if len({tuple(v) for v in found.values()}) > 1:
        listed = "; ".join(f"{p}: {v}" for p, v in found.items())
        raise BenchError(f"the models predict labels in different orders ({listed}): measure models of one label set")
    return next(iter(found.values()), [])


def training_logs(variants: dict[str, Artifact]) -> dict[str, dict]:
    logs = {}
    for name, art in variants.items():
        path = art.path / "training_log.json"
        if path.exists():
            logs[name] = json.loads(path.read_text())
    return logs


def run(recipe: Recipe, out_dir: Path, bench: bool = True) -> RunOutcome:
    source = models.resolve(recipe.model)
    recipe = with_task_of_data(recipe, source)
    task = task_of(recipe, source)
    check_before_work(recipe, source, task)
    dataset = task.load_data(recipe.data)
    with FolderLock(out_dir):
        executor = executors.open(recipe.executor)
        try:
            with executors.using(executor):
                return _run(recipe, out_dir, bench, source, task, dataset)
        finally:
            executor.close()


def _run(recipe: Recipe, out_dir: Path, bench: bool, source: Artifact, task: Task, dataset) -> RunOutcome:
    skipped: dict[str, str] = {}
    planned = None
    if recipe.structure.enabled:  # candidates of the latency target join the recipe as ordinary variants
        planned, recipe = structure_search.extend(recipe, out_dir, source)
    variants, reused = build_variants(recipe, out_dir, dataset, source, task, skipped)
    found = None
    budget = recipe.selection.max_accuracy_drop
    if bench and budget is not None and recipe.search.enabled:
        found = budget_search.run(recipe, out_dir, dataset, task, variants, budget)
        if found.variants:
            extended = recipe.model_copy(
                update={"variants": [*recipe.variants, *(VariantSpec(**v) for v in found.variants)]}
            )
            variants, again = build_variants(extended, out_dir, dataset, source, task, skipped)
            reused += [name for name in again if name in found.shortlist]
    results = None
    if bench:
        candidates = candidates_of(variants)
        eval_set = task.eval_set(dataset, model_labels([c.path for c in candidates]))
        results = measure(candidates, eval_set, recipe.bench, out_dir / "bench", measure_on=recipe.executor.measure_on)
        results["run"] = {
            "recipe": recipe.name,
            "model": recipe.model_dump(mode="json")["model"],
            "task": task.NAME,
            "data": dataset.describe(),
        }
        results["training"] = training_logs(variants)
        results["executor"] = executors.current().describe()
        if found is not None:
            results["search"] = found.to_json()
        if planned is not None:
            results["structure_search"] = structure_search.verdict(results, planned)
        if skipped:
            results["skipped"] = skipped
        publish(results, out_dir, recipe.selection)
        if recipe.target.check_on:
            results["target_checks"] = check_run(recipe.target, recipe.data, out_dir, variants, results)
            render(results, out_dir)
    if found is not None and not found.shortlist:
        raise found.unmet(out_dir)
    if results is not None and planned is not None and not results["structure_search"]["chosen"]:
        raise structure_search.unmet(results["structure_search"], out_dir)
    if skipped:
        first = next(iter(skipped))
        measured = "built and measured" if bench else "built"
        raise VariantsSkipped(
            f"variant {first} was not built: {skipped[first]} ({len(skipped)} variant(s) skipped; "
            f"the other {len(variants)} were {measured}, see {out_dir})"
        )
    return RunOutcome(out_dir, variants, reused, results)


def publish(results: dict, out_dir: Path, selection_settings: SelectionSettings | None = None) -> dict:
    """Write the measurements, then add the selection and the gate verdict, then the reports.

    `results.json` is written before anything that could fail on it, so minutes of measurement
    are never lost to a selection or gate error. The caller holds the run folder's lock.
    """
    from .bench.results import relative_variant_path

    out_dir.mkdir(parents=True, exist_ok=True)
    for v in results.get("variants") or []:  # relative to the run folder: the folder can move
        if v.get("path"):
            v["path"] = relative_variant_path(out_dir, v["path"])
    write_json_atomic(out_dir / "results.json", results)
    s = selection_settings or SelectionSettings()
    results["selection"] = selection.select(results, s.max_accuracy_drop, s.max_latency_ms, s.max_size_mb)
    results["selection"]["by_target"] = selection.by_target(
        results, s.max_accuracy_drop, s.max_latency_ms, s.max_size_mb
    )
    results["gates"] = selection.evaluate_gates(results, s.fail_if) if s.fail_if else None
    return render(results, out_dir)


def render(results: dict, out_dir: Path) -> dict:
    """results.json, then the reports made from it."""
    write_json_atomic(out_dir / "results.json", results)
    markdown.write(results, out_dir / "report.md")
    html.write(results, out_dir / "report.html")
    return results
