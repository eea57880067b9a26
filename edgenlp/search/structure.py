"""Prune to a latency target: which encoder structures (layers x heads x feed-forward width) to build.

No tool prunes to a speed; they prune to a percentage and let the user find the speed out. Here the
speed of a structure is predicted from latencies measured on this CPU: a few structures are built
with random weights (the weights do not change the time), exported and quantised exactly as the
pipeline's variants are (stages `export`, `quantize`), and timed at the primary profile's threads and
the target length, interleaved. A linear model in the work per pass, latency ~ a + b*layers +
c*layers*heads + d*layers*width, is fitted to them (its fit is recorded). Every structure of the grid
is predicted; those predicted to meet the target with a margin to spare (the harness times them again,
later) are ranked by what they keep (non-embedding parameters) and the best `candidates` of distinct
depths become ordinary recipe variants (prune -> distill -> export -> quantize), built like any sweep
(on the executor). After the harness has
measured them, `verdict` keeps the most accurate candidate whose measured speed-up meets the target,
against the fastest unpruned variant measured in the same run, and shows predicted against measured.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import RecipeError

TABLE_FILE = "structure_search.json"
RATIOS = (0.0, 0.25, 0.4, 0.5, 0.6, 0.75)


@dataclass(frozen=True)
class Shape:
    layers: int
    heads: int
    width: int  # feed-forward channels a layer

    @property
    def tag(self) -> str:
        return f"l{self.layers}h{self.heads}w{self.width}"

    def parameters(self, hidden: int, head_size: int) -> int:
        """Non-embedding parameters (weights and biases of attention and feed-forward)."""
        attention = 4 * hidden * self.heads * head_size + 3 * self.heads * head_size + hidden
        return self.layers * (attention + 2 * hidden * self.width + self.width + hidden + 4 * hidden)

    def macs(self, hidden: int, head_size: int, length: int) -> int:
        """Multiply-accumulates of one pass of `length` tokens through the layers: the projections and
        feed-forward per token, and the attention scores and weighted sum, which grow with length squared."""
        per_token = 4 * hidden * self.heads * head_size + 2 * hidden * self.width
        return self.layers * (length * per_token + 2 * length * length * self.heads * head_size)


def base_shape(config: dict) -> tuple[Shape, int, int]:
    """(the structure, hidden size, head size) of an unpruned BERT-family config."""
    if config.get("layer_heads"):
        raise RecipeError(
            "a latency target starts from an unpruned model, and this one is already pruned: give the "
            "model it was pruned from"
        )
    if "num_attention_heads" not in config or "intermediate_size" not in config:
        raise RecipeError("a latency target prunes BERT-family encoders (no GPT-2 yet): remove the target")
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    return Shape(int(config["num_hidden_layers"]), heads, int(config["intermediate_size"])), hidden, hidden // heads


def probe_shapes(base: Shape) -> list[Shape]:
    """Structures to time: the base, shallower, narrower, and both (enough to fit four coefficients)."""
    half = Shape(base.layers, max(1, base.heads // 2), max(1, base.width // 2))
    quarter = Shape(base.layers, max(1, base.heads // 4), max(1, base.width // 4))
    shapes = {
        base,
        Shape(max(1, base.layers // 2), base.heads, base.width),
        Shape(1, base.heads, base.width),
        half,
        Shape(max(1, base.layers // 2), half.heads, half.width),
        Shape(max(1, base.layers // 2), base.heads, quarter.width),
        Shape(max(1, base.layers // 3), quarter.heads, base.width),
        Shape(1, quarter.heads, quarter.width),
    }
    return sorted(shapes, key=lambda s: (s.layers, s.heads, s.width))


def grid(base: Shape) -> list[tuple[Shape, float, float]]:
    """Every structure the search may build: (shape, head ratio, width ratio) for each depth and ratio pair."""
    out = {}
    for layers, head_ratio, width_ratio in itertools.product(range(1, base.layers + 1), RATIOS, RATIOS):
        heads = base.heads - math.ceil(head_ratio * base.heads) if head_ratio else base.heads
        width = base.width - round(width_ratio * base.width)
        if heads >= 1 and width >= 1:
            out.setdefault(Shape(layers, heads, width), (head_ratio, width_ratio))
    return [(shape, *ratios) for shape, ratios in out.items()]


@dataclass
class LatencyModel:
    """latency_ms = a + b*layers + c*layers*heads + d*layers*width, fitted to measured structures."""

    coefficients: list[float]
    measured: list[dict]
    length: int | str
    threads: int

    @staticmethod
    def features(shape: Shape) -> list[float]:
        return [1.0, shape.layers, shape.layers * shape.heads, shape.layers * shape.width]

    def predict(self, shape: Shape) -> float:
        return float(sum(c * f for c, f in zip(self.coefficients, self.features(shape))))

    @classmethod
    def fit(cls, measured: list[dict], length, threads: int) -> LatencyModel:
        import numpy as np

        x = np.array([cls.features(Shape(**m["shape"])) for m in measured])
        y = np.array([m["p50_ms"] for m in measured])
        coefficients = np.linalg.lstsq(x, y, rcond=None)[0]
        model = cls([float(c) for c in coefficients], measured, length, threads)
        for m in measured:
            m["predicted_ms"] = round(model.predict(Shape(**m["shape"])), 4)
        return model

    def fit_error(self) -> float:
        """Largest relative error of the fit on the measured structures."""
        return max(abs(m["predicted_ms"] - m["p50_ms"]) / m["p50_ms"] for m in self.measured)


def _random_checkpoint(base_config: dict, shape: Shape, folder: Path, tokenizer_from: Path) -> Path:
    """A pruned-BERT classifier of `shape` with random weights, saved with the source's tokenizer files."""
    import torch
    import transformers

    from .. import architectures

    architectures.register()
    values = {k: v for k, v in base_config.items() if k not in ("model_type", "architectures", "auto_map")}
    values.update(
        num_hidden_layers=shape.layers,
        layer_heads=[shape.heads] * shape.layers,
        attention_head_size=int(base_config["hidden_size"]) // int(base_config["num_attention_heads"]),
        layer_intermediate_sizes=[shape.width] * shape.layers,
        num_labels=max(2, len(base_config.get("id2label") or {})),
    )
    values.pop("id2label", None)
    values.pop("label2id", None)
    config = transformers.AutoConfig.for_model("edgenlp-pruned-bert", **values)
    torch.manual_seed(0)
    transformers.AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (tokenizer_from / name).is_file():
            shutil.copy2(tokenizer_from / name, folder / name)
    return folder


def _build_int8(checkpoint: Path, work: Path) -> Path:
    """The structure as the pipeline would ship it: Optimum's export, then dynamic INT8."""
    from .. import models, stages
    from ..artifact import build

    source = models.resolve(str(checkpoint))
    export, quantize = stages.get("export"), stages.get("quantize")
    exported, _ = build(
        work / "onnx", source, export.NAME, export.Config(), run=lambda w: export.run(source, export.Config(), w)
    )
    config = quantize.Config(op_types=["MatMul", "Gather"])
    quantised, _ = build(
        work / "int8", exported, quantize.NAME, config, run=lambda w: quantize.run(exported, config, w)
    )
    return quantised.onnx_path


def measure(
    base_config: dict, tokenizer_from: Path, shapes: list[Shape], length: int, threads: int, work: Path, rounds: int = 5
) -> list[dict]:
    """p50 latency (ms, batch 1, `length` tokens) of each structure's INT8 graph, rounds interleaved."""
    import numpy as np

    from ..runtime.session import OnnxModel

    sessions = {}
    for shape in shapes:
        folder = work / shape.tag
        if not (folder / "int8").is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            checkpoint = _random_checkpoint(base_config, shape, folder / "checkpoint", tokenizer_from)
            _build_int8(checkpoint, folder)
        sessions[shape] = OnnxModel(folder / "int8" / "model.onnx", threads=threads)
    rng = np.random.default_rng(0)
    vocab = int(base_config["vocab_size"])
    feed = {
        "input_ids": rng.integers(min(1000, vocab // 2), vocab, (1, length)).astype(np.int64),  # past the specials
        "attention_mask": np.ones((1, length), np.int64),
        "token_type_ids": np.zeros((1, length), np.int64),
    }
    times: dict[Shape, list[float]] = {s: [] for s in shapes}
    for model in sessions.values():
        for _ in range(3):
            model.run(feed)
    for _ in range(rounds):
        for shape, model in sessions.items():
            for _ in range(10):
                start = time.perf_counter()
                model.run(feed)
                times[shape].append((time.perf_counter() - start) * 1e3)
    return [{"shape": asdict(s), "p50_ms": round(float(np.median(times[s])), 4)} for s in shapes]


@dataclass
class Plan:
    """What the search decided before building: the fitted model and the structures to build."""

    target_ms: float
    target_speedup: float | None
    base: Shape
    base_predicted_ms: float
    model: LatencyModel
    chosen: list[dict]
    margin: float = 0.0

    def to_json(self) -> dict:
        return {
            "target_ms": round(self.target_ms, 4),
            "target_speedup": self.target_speedup,
            "margin": self.margin,
            "length": self.model.length,
            "threads": self.model.threads,
            "base": asdict(self.base),
            "base_predicted_ms": round(self.base_predicted_ms, 4),
            "latency_model": {
                "form": "a + b*layers + c*layers*heads + d*layers*width (ms)",
                "coefficients": [round(c, 6) for c in self.model.coefficients],
                "measured": self.model.measured,
                "largest_fit_error": round(self.model.fit_error(), 4),
            },
            "candidates": self.chosen,
        }


def choose(
    model: LatencyModel, base: Shape, hidden: int, head_size: int, target_ms: float, count: int, margin: float = 0.0
) -> list[dict]:
    """The structures predicted to meet `target_ms` with `margin` to spare that keep the most, one per depth,
    best first."""
    aim = target_ms * (1 - margin)
    meeting, closest = [], None
    for shape, head_ratio, width_ratio in grid(base):
        predicted = model.predict(shape)
        row = {
            "shape": asdict(shape),
            "head_ratio": head_ratio,
            "width_ratio": width_ratio,
            "parameters": shape.parameters(hidden, head_size),
            "macs": shape.macs(hidden, head_size, model.length) if isinstance(model.length, int) else None,
            "predicted_ms": round(predicted, 4),
        }
        if predicted <= aim:
            meeting.append(row)
        elif closest is None or predicted < closest["predicted_ms"]:
            closest = row
    if not meeting:
        c = closest["shape"]
        spare = f" with {margin:.0%} to spare ({aim:.2f} ms)" if margin else ""
        raise RecipeError(
            f"no structure is predicted to reach {target_ms:.2f} ms{spare}: the closest, {c['layers']} layer(s) x "
            f"{c['heads']} heads x {c['width']} channels, is predicted at {closest['predicted_ms']:.2f} ms: "
            "ask for less"
        )
    meeting.sort(key=lambda r: (-r["parameters"], r["predicted_ms"]))
    chosen, depths = [], set()
    for row in meeting:
        if row["shape"]["layers"] not in depths:
            depths.add(row["shape"]["layers"])
            chosen.append(row)
        if len(chosen) == count:
            break
    return chosen


def plan(settings, base_config: dict, tokenizer_from: Path, threads: int, work: Path) -> Plan:
    """Measure the probe structures (reused from `work` when there), fit, and choose the candidates."""
    base, hidden, head_size = base_shape(base_config)
    length = settings.length
    table = work / TABLE_FILE
    from ..hardware import cpu_info

    key = {
        "base": asdict(base),
        "length": length,
        "threads": threads,
        "vocab": base_config.get("vocab_size"),
        "cpu": cpu_info().summary(),  # latencies of another CPU are not this one's
    }
    cached = json.loads(table.read_text()) if table.is_file() else None
    if cached and cached.get("key") == key:
        measured = cached["measured"]
    else:
        measured = measure(base_config, tokenizer_from, probe_shapes(base), length, threads, work / "probes")
        from ..fsio import write_json_atomic

        write_json_atomic(table, {"key": key, "measured": measured})
    model = LatencyModel.fit(measured, length, threads)
    base_ms = model.predict(base)
    target_ms = settings.target_ms if settings.target_ms is not None else base_ms / settings.target_speedup
    chosen = choose(model, base, hidden, head_size, target_ms, settings.candidates, settings.margin)
    return Plan(target_ms, settings.target_speedup, base, base_ms, model, chosen, settings.margin)


def variants(plan: Plan, settings, parent: str | None) -> list[dict]:
    """Each candidate as recipe variants: prune -> distill -> export -> quantize (named by its shape)."""
    out = []
    for row in plan.chosen:
        tag = Shape(**row["shape"]).tag
        prune = {
            "layers": row["shape"]["layers"],
            "head_ratio": row["head_ratio"],
            "ffn_ratio": row["width_ratio"],
            **settings.prune,
        }
        out += [
            {"name": f"pruned-{tag}", "stage": "prune", "parent": parent, "config": prune},
            {"name": f"recovered-{tag}", "stage": "distill", "parent": f"pruned-{tag}", "config": settings.distill},
            {"name": f"onnx-{tag}", "stage": "export", "parent": f"recovered-{tag}"},
            {"name": f"int8-{tag}", "stage": "quantize", "parent": f"onnx-{tag}", "config": settings.quantize},
        ]
        row.update(variant=f"int8-{tag}", pruned=f"pruned-{tag}", recovered=f"recovered-{tag}")
    return out


def verdict(results: dict, planned: dict) -> dict:
    """Measured against predicted for every candidate, and the most accurate that meets the target."""
    from ..bench.results import metric, primary_profile, task_of

    task = task_of(results)
    profile = primary_profile(results)
    shape = "real" if planned["length"] == "real" else f"len{planned['length']}"
    by_name = {v["name"]: v for v in results["variants"]}
    candidates = {row["variant"] for row in planned["candidates"]}

    def p50(v: dict) -> float:
        return v["latency_ms"][profile][shape]["p50"]

    unpruned = [
        v
        for v in results["variants"]
        if not v.get("pruned_by") and v["name"] not in candidates and v.get("format") != "pytorch"
    ]
    fastest = min(unpruned, key=p50) if unpruned else None

    def quality(name: str | None) -> float | None:
        return metric(results, by_name[name], task.QUALITY.metric, profile) if name in by_name else None

    rows = []
    for planned_row in planned["candidates"]:
        # the task's quality straight after pruning, and after recovery (both in PyTorch, FP32)
        row = {
            **planned_row,
            "after_pruning": quality(planned_row.get("pruned")),
            "after_recovery": quality(planned_row.get("recovered")),
        }
        v = by_name.get(row["variant"])
        if v is None:
            rows.append({**row, "measured_ms": None, "speedup": None, "quality": None, "meets": False})
            continue
        measured = p50(v)
        speedup = p50(fastest) / measured if fastest else None
        meets = (
            measured <= planned["target_ms"]
            if planned["target_speedup"] is None
            else (speedup or 0) >= planned["target_speedup"]
        )
        rows.append(
            {
                **row,
                "measured_ms": round(measured, 4),
                "speedup": round(speedup, 4) if speedup else None,
                "quality": metric(results, v, task.QUALITY.metric, profile),
                "meets": meets,
            }
        )
    meeting = [r for r in rows if r["meets"]]
    best = max(meeting, key=lambda r: r["quality"]) if meeting else None
    return {
        **planned,
        "profile": profile,
        "against": fastest["name"] if fastest else None,
        "against_ms": round(p50(fastest), 4) if fastest else None,
        "candidates": rows,
        "chosen": best["variant"] if best else None,
    }


def extend(recipe, out_dir: Path, source) -> tuple[dict, object]:
    """The plan for `recipe.structure`'s target, and the recipe with the candidates' variants added."""
    from ..bench.profiles import load as load_profile
    from ..recipe import VariantSpec

    settings = recipe.structure
    profile = load_profile(recipe.bench.profiles[0])
    if settings.length not in profile.seq_lengths:
        raise RecipeError(
            f"the latency target is at {settings.length} tokens but profile {profile.name} measures "
            f"{profile.seq_lengths}: add {settings.length} to its seq_lengths or set structure.length"
        )
    names = [v.name for v in recipe.variants]
    parent = settings.parent or next((v.name for v in recipe.variants if v.stage == "finetune"), None)
    if parent is not None and parent not in names:
        raise RecipeError(f"structure.parent '{parent}' is not a variant of the recipe: use one of {', '.join(names)}")
    planned = plan(settings, source.config(), source.path, profile.threads, out_dir / "structure")
    added = [VariantSpec(**v) for v in variants(planned, settings, parent)]
    clash = sorted({v.name for v in added} & set(names))
    if clash:
        raise RecipeError(f"the recipe already has a variant named {clash[0]}: rename it (the search names its own)")
    return planned.to_json(), recipe.model_copy(update={"variants": [*recipe.variants, *added]})


def unmet(verdict_json: dict, out_dir: Path) -> RecipeError:
    measured = [r for r in verdict_json["candidates"] if r.get("measured_ms") is not None]
    if not measured:
        return RecipeError(f"no candidate of the latency search was measured: see {out_dir}")
    closest = min(measured, key=lambda r: r["measured_ms"])
    if verdict_json["target_speedup"] is None or closest["speedup"] is None:
        target = f"the latency target ({verdict_json['target_ms']:.2f} ms)"
        took = f"took {closest['measured_ms']:.2f} ms (predicted {closest['predicted_ms']:.2f})"
    else:  # a speed-up is measured against the run's own unpruned variant, not against the predicted base
        target = f"the target speed-up ({verdict_json['target_speedup']:g}x over {verdict_json['against']})"
        took = (
            f"was {closest['speedup']:.2f}x ({closest['measured_ms']:.2f} against {verdict_json['against_ms']:.2f} ms; "
            f"predicted {closest['predicted_ms']:.2f} against {verdict_json['base_predicted_ms']:.2f})"
        )
    return RecipeError(
        f"no candidate met {target} as measured: the closest, {closest['variant']}, {took}; "
        f"the candidates are kept in {out_dir}: ask for less, or plan with more to spare (structure.margin)"
    )
