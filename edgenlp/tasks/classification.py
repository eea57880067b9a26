"""Text classification: labelled texts, accuracy with its interval, one forward pass per request.

Data are labelled splits (`data.py`); a variant is faithful when FP32 logits match its parent and a
quantised one keeps its labels; the evaluation replays the test texts one by one; the timed
workloads are batch-1 latency at real and fixed lengths, end-to-end (tokenise + run + argmax) and
batched throughput. Quality is accuracy; its loss is counted in points.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .. import architectures
from ..trust import pretrained_options
from . import Quality, Workload

NAME = "text-classification"
AUTO_MODEL = "AutoModelForSequenceClassification"
"""The transformers Auto class that loads a PyTorch model for this task."""
QUALITY = Quality(metric="accuracy", higher_is_better=True, drop_metric="accuracy_drop", drop_unit="points",
                  label="accuracy, %")
GATE_METRICS = ("accuracy", "accuracy_drop", "macro_f1")
SPEED = ("p50_ms", "lowest p50 latency at real lengths")


@dataclass
class EvalSet:
    texts: list[str]
    labels: list[int]
    label_names: list[str]
    name: str = "eval"
    task: str = NAME


# -- data and validation --------------------------------------------------------------------------

def load_data(spec):
    from .. import data

    return data.load(spec)


def fingerprint(spec) -> str:
    from .. import data

    return data.fingerprint(spec)


def validation_texts(dataset, n: int) -> list[str]:
    return dataset.validation.sample(n, seed=0).texts


def check_against_parent(parent, child, texts: list[str], settings) -> dict:
    from .. import validate

    return validate.against_parent(parent, child, texts, validate.Tolerance(settings.atol, settings.min_label_agreement))


def eval_set(dataset, model_labels: list[str]) -> EvalSet:
    test = dataset.aligned_to(model_labels)
    return EvalSet(test.test.texts, test.test.labels, test.labels, name=f"{dataset.name}/test")


def payload(eval_set: EvalSet, settings) -> dict:
    """The evaluation texts in a seeded order (a sample, if the settings cap it) with their labels."""
    import random

    order = list(range(len(eval_set.texts)))
    random.Random(settings.seed).shuffle(order)
    if settings.max_eval_examples:
        order = order[:settings.max_eval_examples]
    return {"task": NAME, "name": eval_set.name, "label_names": eval_set.label_names,
            "texts": [eval_set.texts[i] for i in order], "labels": [eval_set.labels[i] for i in order]}


def check_profiles(candidates, profiles) -> None:
    """Refuse a profile length that a candidate cannot take, before any process starts."""
    from ..model_facts import max_tokens
    from ..errors import BenchError

    for c in candidates:
        limit = max_tokens(c.path)
        for p in profiles:
            too_long = [n for n in p.seq_lengths if n != "real" and n > limit]
            if too_long:
                raise BenchError(f"profile '{p.name}' asks for {too_long[0]} tokens but {c.name} takes at most "
                                 f"{limit}: lower the profile's seq_lengths")


def speed_targets(profile: dict) -> list[tuple[str, str]]:
    """What selection ranks variants by in a profile: batch-1 p50 at each measured input length."""
    return [("real lengths" if s == "real" else f"{s} tokens", "p50_ms" if s == "real" else f"p50_ms_len{s}")
            for s in profile["seq_lengths"]]


def truncated_input(profile) -> int | None:
    """The longest input a profile feeds, which a variant's `max_length` (its tokenizer's cut) must allow."""
    return max((n for n in profile.seq_lengths if n != "real"), default=None)


# -- the worker side (torch-free for ONNX runners) ------------------------------------------------

class Session:
    """One model answering the harness: `eval`, `latency`, `throughput`, `e2e`."""

    def __init__(self, path: str, runner: str, threads: int, payload_file: str):
        import json
        from pathlib import Path

        from ..bench.runners import open_runner
        from ..runtime import TextTokenizer

        model_path = Path(path)
        self.runner = open_runner(model_path, runner, threads)
        self.tokenizer = TextTokenizer(model_path if model_path.is_dir() else model_path.parent)
        with open(payload_file, encoding="utf-8") as f:
            self.texts = json.load(f)["texts"]
        self._encoded: dict = {}

    def _single(self, shape) -> list:
        """Batch-1 inputs for every text: at its own length (`real`), or exactly `shape` tokens.

        A fixed length is filled with real text (the text, then the ones after it, truncated), with
        no padding: padded positions make onnxruntime's Softmax take a slow exp path for the mask
        value (4.8 of 12.6 ms for INT8 MiniLM at 128), which would measure the mask, not the model.
        """
        if shape not in self._encoded:
            if shape == "real":
                self._encoded[shape] = [self.tokenizer.encode([t]) for t in self.texts]
            else:
                length, n = int(shape), len(self.texts)
                if length > self.tokenizer.max_length:
                    raise ValueError(f"the profile asks for {length} tokens but this model takes at most "
                                     f"{self.tokenizer.max_length}: lower the profile's seq_lengths")
                packed = []
                for i in range(n):
                    parts, j = [self.texts[i]], i
                    while self.tokenizer.lengths([" ".join(parts)])[0] < length and j < i + 64:
                        j += 1
                        parts.append(self.texts[j % n])
                    packed.append(self.tokenizer.encode([" ".join(parts)], pad_to=length))
                self._encoded[shape] = packed
        return self._encoded[shape]

    def _batched(self, batch: int) -> list:
        """Consecutive batches of the texts (the last one may be short), each padded to its longest text."""
        key = ("batch", batch)
        if key not in self._encoded:
            self._encoded[key] = [self.tokenizer.encode(self.texts[i:i + batch])
                                  for i in range(0, len(self.texts), batch)]
        return self._encoded[key]

    def _latency_inputs(self, shape, batch: int) -> list:
        """Inputs of the latency op: single texts, or batches (fixed lengths stack rows of real text)."""
        if batch == 1:
            return self._single(shape)
        if shape == "real":
            return self._batched(batch)
        key = ("stacked", batch, shape)
        if key not in self._encoded:
            rows = self._single(shape)
            self._encoded[key] = [{k: np.concatenate([rows[(i + j) % len(rows)][k] for j in range(batch)])
                                   for k in rows[0]} for i in range(0, len(rows), batch)]
        return self._encoded[key]

    def _throughput(self, batch: int, start: int, n: int, warmup: int) -> dict:
        """Timed batches with what each really held: sequences, real tokens and padded positions."""
        inputs = self._batched(batch)
        ms = self._timed(inputs, start, n, warmup)
        picked = [inputs[(start + warmup + i) % len(inputs)]["attention_mask"] for i in range(n)]
        return {"ms": ms, "sequences": [int(m.shape[0]) for m in picked],
                "tokens": [int(m.sum()) for m in picked], "positions": [int(m.size) for m in picked]}

    def _timed(self, inputs: list, start: int, n: int, warmup: int) -> list[float]:
        logits, clock = self.runner.logits, time.perf_counter_ns
        for i in range(warmup):
            logits(inputs[(start + i) % len(inputs)])
        times = []
        for i in range(n):
            x = inputs[(start + warmup + i) % len(inputs)]
            t0 = clock()
            logits(x)
            times.append((clock() - t0) / 1e6)
        return times

    def stats(self) -> dict:
        return {"mean_tokens": sum(self.tokenizer.lengths(self.texts)) / max(1, len(self.texts))}

    def handle(self, req: dict) -> dict:
        op = req["op"]
        if op == "eval":
            probs, preds = [], []
            for enc in self._single("real"):
                logits = self.runner.logits(enc)[0].astype("float64")
                e = np.exp(logits - logits.max())
                p = e / e.sum()
                probs.append(p.round(6).tolist())
                preds.append(int(p.argmax()))
            return {"preds": preds, "probs": probs}
        if op == "latency":
            inputs = self._latency_inputs(req.get("shape", "real"), req.get("batch", 1))
            return {"ms": self._timed(inputs, req.get("start", 0), req["n"], req.get("warmup", 2))}
        if op == "throughput":
            return self._throughput(req["batch"], req.get("start", 0), req["n"], req.get("warmup", 1))
        if op == "e2e":
            texts, clock, out = self.texts, time.perf_counter_ns, []
            start = req.get("start", 0)
            for i in range(req.get("warmup", 2) + req["n"]):
                text = texts[(start + i) % len(texts)]
                t0 = clock()
                logits = self.runner.logits(self.tokenizer.encode([text]))
                int(logits[0].argmax())
                if i >= req.get("warmup", 2):
                    out.append((clock() - t0) / 1e6)
            return {"ms": out}
        raise ValueError(f"unknown op {op}")


# -- the harness side -----------------------------------------------------------------------------

def eval_request(candidate, reference) -> dict:
    return {}


def shape_key(shape) -> str:
    return "real" if shape == "real" else f"len{shape}"


def workloads(profile, settings, round_index: int, candidate: str, reference: str) -> list[Workload]:
    per_round = -(-settings.iterations // settings.rounds)  # ceil: at least `iterations` in all
    batches_per_round = -(-settings.throughput_batches // settings.rounds)
    start, warm = round_index * per_round, settings.warmup if round_index == 0 else 2
    out = [Workload(f"latency/{shape_key(s)}", {"op": "latency", "shape": s, "batch": profile.batch_size,
                                                "n": per_round, "start": start, "warmup": warm})
           for s in profile.seq_lengths]
    out.append(Workload("e2e", {"op": "e2e", "n": max(1, per_round // 2), "start": start, "warmup": 2}))
    if profile.throughput_batch:
        out.append(Workload("throughput", {"op": "throughput", "batch": profile.throughput_batch,
                                           "n": batches_per_round, "start": round_index * batches_per_round,
                                           "warmup": 1}))
    return out


def _throughput(rounds: list[dict], batch: int) -> dict | None:
    """Sequences and real tokens per second over all timed batches; padding stated, not hidden."""
    if not rounds:
        return None
    ms = sum(sum(r["ms"]) for r in rounds)
    sequences = sum(sum(r["sequences"]) for r in rounds)
    tokens = sum(sum(r["tokens"]) for r in rounds)
    positions = sum(sum(r["positions"]) for r in rounds)
    return {"batch": batch, "batches": sum(len(r["ms"]) for r in rounds), "sequences": sequences,
            "seq_per_s": 1000.0 * sequences / ms, "real_tokens_per_s": 1000.0 * tokens / ms,
            "padding_share": 1.0 - tokens / positions if positions else 0.0,
            "how": "consecutive batches of the evaluation texts, each padded to its longest text"}


def summarise(candidate, raw: dict, reference_raw: dict, payload: dict, profiles, settings) -> dict:
    """Accuracy with its interval and paired test, and the latency, end-to-end and throughput figures."""
    from ..bench import stats
    from ..model_facts import encoder_macs

    labels = payload["labels"]
    preds = raw["eval"]["preds"]
    metrics = stats.classification_metrics(labels, preds, len(payload["label_names"]), settings.bootstrap)
    probs = np.asarray(raw["eval"]["probs"])
    metrics["pr_curves"] = stats.pr_curves(labels, probs)
    metrics["calibration"] = stats.calibration(labels, probs)
    if raw is not reference_raw:
        ref_preds = np.asarray(reference_raw["eval"]["preds"])
        metrics["mcnemar_vs_reference"] = stats.mcnemar(ref_preds == np.asarray(labels),
                                                        np.asarray(preds) == np.asarray(labels))
        metrics["label_agreement_with_reference"] = float(np.mean(np.asarray(preds) == ref_preds))
        metrics["changed_vs_reference"] = stats.changed_predictions(
            labels, np.asarray(reference_raw["eval"]["probs"]), probs, payload["texts"])
        metrics["per_class_delta"] = stats.per_class_deltas(labels, preds, reference_raw["eval"]["preds"],
                                                            len(payload["label_names"]))
    latency, samples, per_profile = {}, {}, {}
    for p in profiles:
        slot = raw["profiles"][p.name]
        timed = {k.split("/", 1)[1]: [r["ms"] for r in v] for k, v in slot.items() if k.startswith("latency/")}
        latency[p.name] = {k: stats.latency_summary(v, settings.bootstrap) for k, v in timed.items()}
        samples[p.name] = {k: [[round(x, 4) for x in one] for one in v] for k, v in timed.items()}
        throughput = _throughput(slot.get("throughput", []), p.throughput_batch)
        per_profile[p.name] = {
            "threads": p.threads,
            "e2e_ms": stats.latency_summary([r["ms"] for r in slot["e2e"]], settings.bootstrap),
            "throughput": throughput,
            "throughput_seq_per_s": throughput["seq_per_s"] if throughput else None,
            "throughput_batch": p.throughput_batch,
        }
    mean_tokens = raw["profiles"][profiles[0].name]["process"]["mean_tokens"]
    return {
        "macs": {"real_mean": encoder_macs(candidate.path, mean_tokens),
                 **{f"len{L}": encoder_macs(candidate.path, L) for p in profiles for L in p.seq_lengths if L != "real"}},
        "metrics": metrics,
        "predictions": [int(x) for x in preds],
        "latency_ms": latency,
        "latency_samples_ms": samples,
        "profiles": per_profile,
    }


def eval_section(payload: dict, reference_raw: dict, profiles) -> dict:
    return {"name": payload["name"], "examples": len(payload["texts"]), "labels": payload["label_names"],
            "labels_true": [int(y) for y in payload["labels"]],
            "mean_tokens": reference_raw["profiles"][profiles[0].name]["process"]["mean_tokens"]}


def ratios(v: dict, ref: dict, settings) -> dict:
    """Speed-ups against the reference with a 95% interval paired by round, and the accuracy deltas."""
    from ..bench import stats

    speedup, speedup_ci = {}, {}
    for pname, shapes in v["latency_samples_ms"].items():
        for shape, rounds in shapes.items():
            base = ref["latency_samples_ms"].get(pname, {}).get(shape)
            if base and rounds:
                one = stats.speedup(base, rounds, settings.bootstrap)
                speedup[f"{pname}/{shape}"] = one["ratio"]
                speedup_ci[f"{pname}/{shape}"] = one["ci"]
    return {
        "speedup_p50": speedup,
        "speedup_p50_ci": speedup_ci,
        "accuracy_delta_points": 100.0 * (v["metrics"]["accuracy"] - ref["metrics"]["accuracy"]),
        "macro_f1_delta_points": 100.0 * (v["metrics"]["macro_f1"] - ref["metrics"]["macro_f1"]),
    }


# -- selection and gates --------------------------------------------------------------------------

def metric(results: dict, variant: dict, name: str, profile: str) -> float | None:
    """accuracy / accuracy_drop / macro_f1 in %, or None for a name this task does not define."""
    ref = next(v for v in results["variants"] if v["name"] == results["reference"])
    if name == "accuracy":
        return 100.0 * variant["metrics"]["accuracy"]
    if name == "accuracy_drop":
        return 100.0 * (ref["metrics"]["accuracy"] - variant["metrics"]["accuracy"])
    if name == "macro_f1":
        return 100.0 * variant["metrics"]["macro_f1"]
    return None


# -- static quantisation and the accuracy-budget search (torch-free) ------------------------------

CALIBRATION_BATCH = 16
"""Sentences per calibration batch."""

def calibration_batches(dataset, model_dir, samples: int, batch_size: int, seed: int = 0):
    """`samples` training texts as graph feeds, in batches of similar length (less padding), streamed."""
    from ..quantization.calibration import check_sample_count, graph_input_names
    from ..runtime import TextTokenizer, onnx_file

    texts = dataset.train.sample(samples, seed).texts
    check_sample_count(len(texts), samples, f"the training split of {dataset.name}")
    tokenizer = TextTokenizer(model_dir)
    names = graph_input_names(onnx_file(model_dir))
    lengths = tokenizer.lengths(texts)
    order = sorted(range(len(texts)), key=lengths.__getitem__)

    def stream():
        for start in range(0, len(order), batch_size):
            encoded = tokenizer.encode([texts[i] for i in order[start:start + batch_size]])
            yield {k: v for k, v in encoded.items() if k in names}

    return stream()


def tuning_set(dataset, model_labels: list[str], limit: int | None, seed: int = 0, seen: list[dict] = (),
               minimum: int = 100) -> EvalSet:
    """Validation examples (carved from the training data, never the test split) that no training stage
    picked its checkpoint on: `seen` are those stages' configs, whose Trainer evaluated on
    `validation.sample(max_eval_examples, seed)`; a checkpoint chosen on an example flatters it."""
    from ..data import Split
    from ..errors import DataError

    data = dataset.aligned_to(model_labels)
    used: set[str] = set()
    for config in seen:
        if "max_eval_examples" in config:
            used |= set(data.validation.sample(config["max_eval_examples"], config.get("seed", 0)).texts)
    pool = [(t, y) for t, y in zip(data.validation.texts, data.validation.labels) if t not in used]
    if len(pool) < minimum:
        raise DataError(f"only {len(pool)} validation examples were not used to pick a training checkpoint, fewer than "
                        f"{minimum} for the search's tuning split: lower the training stages' max_eval_examples or "
                        "raise the data's validation_fraction")
    split = Split([t for t, _ in pool], [y for _, y in pool]).sample(limit, seed)
    return EvalSet(split.texts, split.labels, data.labels, name=f"{dataset.name}/tuning")


def tuning_quality(model_dir, tuning: EvalSet, threads: int = 1) -> float:
    """Accuracy (%) of an ONNX variant on the tuning split, one text at a time as deployed."""
    from ..runtime import TextClassifier

    classifier = TextClassifier(model_dir, threads=threads)
    hits = sum(int(classifier.logits(classifier.tokenizer.encode([t]))[0].argmax()) == y
               for t, y in zip(tuning.texts, tuning.labels))
    return 100.0 * hits / max(1, len(tuning.texts))


def quality_drop(reference: float, value: float) -> float:
    """Accuracy points lost against the reference."""
    return reference - value


def screen_latency(model_dir, tuning: EvalSet, threads: int, n: int = 60, repeats: int = 3) -> float:
    """Batch-1 p50 (ms) at real lengths on `n` tuning texts: a short first look, to shortlist candidates
    for the harness, which measures them properly."""
    from ..runtime import TextClassifier

    classifier = TextClassifier(model_dir, threads=threads)
    encoded = [classifier.tokenizer.encode([t]) for t in tuning.texts[:n]]
    for x in encoded[:5]:
        classifier.logits(x)
    times = []
    for _ in range(repeats):
        for x in encoded:
            t0 = time.perf_counter_ns()
            classifier.logits(x)
            times.append((time.perf_counter_ns() - t0) / 1e6)
    return float(np.median(times))


# -- training -------------------------------------------------------------------------------------

def pad_with(tokenizer, config, where) -> None:
    """Give a tokenizer without a pad token the model's own pad id; never change the model's special ids.

    A model whose config names a pad id keeps it (RoBERTa's position embeddings use it as their padding
    index: another id breaks the export); a model with none (GPT-2) pads with its end-of-text token, which
    its classifier skips (it reads the last non-pad token).
    """
    from ..errors import DataError

    pad_id = config.pad_token_id
    if pad_id is None:
        if tokenizer.eos_token is None:
            raise DataError(f"{where}: neither the model nor its tokenizer names a pad token: set pad_token_id in "
                            "config.json (and pad_token in tokenizer_config.json)")
        tokenizer.pad_token = tokenizer.eos_token
        config.pad_token_id = tokenizer.eos_token_id
        return
    token = tokenizer.convert_ids_to_tokens(int(pad_id)) if 0 <= int(pad_id) < len(tokenizer) else None
    if token is None:
        raise DataError(f"{where}: config.json's pad_token_id {pad_id} is not a token of its tokenizer "
                        f"({len(tokenizer)} tokens): set pad_token in tokenizer_config.json to the model's pad token")
    tokenizer.pad_token = token


class Trainer:
    """The classifier's half of the fine-tuning loop: a sequence-classification head on the parent."""

    METRIC = "accuracy"
    METRICS = {"accuracy": True, "macro_f1": True, "loss": False}
    """Metric name -> higher is better."""

    def __init__(self, parent_path, dataset, config):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.labels = dataset.labels
        architectures.register()  # a pruned checkpoint's classes
        self.tokenizer = AutoTokenizer.from_pretrained(str(parent_path), **pretrained_options(parent_path))
        self.model = AutoModelForSequenceClassification.from_pretrained(
            str(parent_path), **pretrained_options(parent_path), num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)),
            label2id={name: i for i, name in enumerate(self.labels)}, ignore_mismatched_sizes=True)
        if self.tokenizer.pad_token is None:
            pad_with(self.tokenizer, self.model.config, parent_path)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.max_length = config.max_length

        def encode(texts: list[str]) -> list[list[int]]:
            return self.tokenizer(texts, truncation=True, max_length=config.max_length)["input_ids"]

        self.train_ids, self.train_y = encode(dataset.train.texts), dataset.train.labels
        val = dataset.validation.sample(config.max_eval_examples, config.seed)
        self.val_ids, self.val_y = encode(val.texts), val.labels
        self.train_size = len(self.train_ids)
        self.data_description = dataset.describe()

    def describe(self) -> dict:
        return {"labels": self.labels, "train_examples": len(self.train_ids), "validation_examples": len(self.val_ids)}

    def _batches(self, encoded, labels, order, batch_size):
        import torch

        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, :len(encoded[i])] = torch.tensor(encoded[i])
                mask[row, :len(encoded[i])] = 1
            yield {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([labels[i] for i in idx])}

    def batches(self, rng, batch_size: int):
        order = list(range(len(self.train_ids)))
        rng.shuffle(order)
        yield from self._batches(self.train_ids, self.train_y, order, batch_size)

    def evaluate(self, batch_size: int = 64) -> dict:
        from sklearn.metrics import accuracy_score, f1_score

        order = sorted(range(len(self.val_ids)), key=lambda i: len(self.val_ids[i]))  # similar lengths pad less
        preds = [0] * len(self.val_ids)
        loss_sum = 0.0
        for batch, start in zip(self._batches(self.val_ids, self.val_y, order, batch_size),
                                range(0, len(order), batch_size)):
            out = self.model(**batch)
            loss_sum += float(out.loss) * len(batch["labels"])
            for i, p in zip(order[start:start + batch_size], out.logits.argmax(-1).tolist()):
                preds[i] = p
        return {"accuracy": float(accuracy_score(self.val_y, preds)),
                "macro_f1": float(f1_score(self.val_y, preds, average="macro")),
                "loss": loss_sum / max(len(self.val_y), 1)}

    def save(self, workdir) -> None:
        self.model.save_pretrained(str(workdir), safe_serialization=True)
        self.tokenizer.model_max_length = self.max_length
        self.tokenizer.save_pretrained(str(workdir))


# -- report ---------------------------------------------------------------------------------------

def report_sections(results: dict) -> list[str]:
    """Accuracy and size, then one latency table per profile (Markdown lines)."""
    from ..report.markdown import MB, MIB, _few, _memory, _ms, _throughput, _x

    sel = results.get("selection")
    lines = ["## Accuracy and size", "",
              "| variant | format | size MB | size vs ref | accuracy % [95% CI] | Δ acc (points) | McNemar p | macro-F1 % | agreement with ref | peak RSS MiB |",
              "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for v in results["variants"]:
        m, r = v["metrics"], v["ratios"]
        lo, hi = m["accuracy_ci"]
        mc = m.get("mcnemar_vs_reference", {}).get("p_value")
        agree = m.get("label_agreement_with_reference")
        mark = " (selected)" if sel and v["name"] == sel["selected"] else ""
        lines.append(
            f"| {v['name']}{mark} | {v.get('format', '?')} {v.get('precision', '')} | {v['size_bytes'] / MB:.1f} | {_x(r['size'])} | "
            f"{100 * m['accuracy']:.2f} [{100 * lo:.1f}-{100 * hi:.1f}] | {r['accuracy_delta_points']:+.2f} | "
            f"{'-' if mc is None else f'{mc:.3f}'} | {100 * m['macro_f1']:.2f} | "
            f"{'-' if agree is None else f'{100 * agree:.1f}%'} | {v['peak_rss_bytes'] / MIB:.0f} |")
    lines += error_analysis_section(results)
    for p in results["profiles"]:
        name = p["name"]
        shapes = [("real" if s == "real" else f"len{s}") for s in p["seq_lengths"]]
        lines += ["", f"## Latency: profile `{name}` ({p['threads']} thread{'s' if p['threads'] > 1 else ''}, "
                      f"batch {p['batch_size']})", "",
                  "p50 ms [95% CI], p90 and p99 ms; speed-up = reference p50 / variant p50 [95% CI, rounds "
                  "resampled in pairs]. Throughput: batches of the evaluation texts padded to their longest "
                  "text (padding share in brackets). Memory: peak over the process, peak while loading, resident "
                  "after the measurements.", "",
                  "| variant | " + " | ".join(f"{s} p50 | {s} p90 | {s} p99 | {s} speed-up" for s in shapes)
                  + " | end-to-end p50 | throughput seq/s | peak / load / steady RSS MiB | fits budget |",
                  "|---|" + "---:|" * (4 * len(shapes) + 4)]
        for v in results["variants"]:
            lat = v["latency_ms"].get(name, {})
            prof = v["profiles"].get(name, {})
            cells = []
            for s in shapes:
                summ = lat.get(s)
                key = f"{name}/{s}"
                cells += [_ms(summ), _ms(summ, "p90").split(" ")[0] + _few(summ, 90),
                          _ms(summ, "p99").split(" ")[0] + _few(summ, 99),
                          _x(v["ratios"]["speedup_p50"].get(key), (v["ratios"].get("speedup_p50_ci") or {}).get(key))]
            fits = prof.get("fits_memory_budget")
            lines.append(f"| {v['name']} | " + " | ".join(cells) + f" | {_ms(prof.get('e2e_ms'))} | "
                         f"{_throughput(prof)} | {_memory(prof)} | "
                         f"{'-' if fits is None else ('yes' if fits else 'NO')} (budget {p.get('memory_budget_mb') or '-'} MiB) |")
        if any(_few((v["latency_ms"].get(name) or {}).get(s), 99) for v in results["variants"] for s in shapes):
            lines += ["", "† rests on fewer than 10 timings beyond the percentile: indicative only; raise "
                          "`bench.iterations` (1,000 per length for a stable p99)."]
    return lines


def error_analysis_section(results: dict, shown: int = 10) -> list[str]:
    """What each variant changed against the reference: calibration, per-class deltas, changed texts.

    Results written before these figures existed (no `calibration` in the metrics) get no section.
    """
    variants = [v for v in results["variants"] if "calibration" in v["metrics"]]
    if not variants:
        return []
    names = results["eval"]["labels"]
    lines = ["", "## What compression changed", "",
             "Calibration: expected calibration error (ECE, 10 equal-width bins of the top label's probability; "
             "0 = confidence matches accuracy). Changed: test texts whose predicted label differs from the "
             f"reference `{results['reference']}` (fixed: now right; broke: was right).", "",
             "| variant | ECE % | mean confidence % | changed | fixed | broke | both wrong | "
             + " | ".join(f"Δ recall {n} | Δ F1 {n}" for n in names) + " |",
             "|---|---:|---:|---:|---:|---:|---:|" + "---:|---:|" * len(names)]
    for v in variants:
        m = v["metrics"]
        changed = m.get("changed_vs_reference") or []
        effects = [sum(c["effect"] == e for c in changed) for e in ("fixed", "broke", "both wrong")]
        delta = m.get("per_class_delta")
        cells = (" | ".join(f"{delta['recall'][k]:+.2f} | {delta['f1'][k]:+.2f}" for k in range(len(names)))
                 if delta else " | ".join("- | -" for _ in names))
        lines.append(f"| {v['name']} | {100 * m['calibration']['ece']:.2f} | "
                     f"{100 * m['calibration']['mean_confidence']:.1f} | "
                     + ("-" if v["name"] == results["reference"] else str(len(changed)))
                     + f" | {' | '.join(map(str, effects))} | {cells} |")
    for v in variants:
        changed = v["metrics"].get("changed_vs_reference") or []
        if not changed:
            continue
        lines += ["", f"`{v['name']}`: the {min(shown, len(changed))} of {len(changed)} changed texts the variant "
                      "moved most (reference label and its probability → variant label and its probability):", "",
                  "| # | text | true | reference | variant | effect |", "|---:|---|---|---|---|---|"]
        for c in changed[:shown]:
            text = c["text"].replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {c['index']} | {text} | {names[c['true']]} | {names[c['reference_label']]} "
                         f"{c['reference_probability']:.3f} | {names[c['variant_label']]} {c['variant_probability']:.3f} "
                         f"| {c['effect']} |")
    return lines


def figures(results: dict) -> list[tuple[str, str | None]]:
    from ..report import plots

    return [("Accuracy against latency, with the Pareto front", plots.accuracy_vs_latency(results)),
            ("Confusion matrices", plots.confusion_matrices(results)),
            ("Precision-recall curves (one vs rest)", plots.pr_curves(results)),
            ("Reliability diagrams (calibration)", plots.reliability_diagrams(results))]


# -- bundles --------------------------------------------------------------------------------------

def bundle_section(variant, folder, model_rel: str, engine: str = "onnx") -> dict:
    """Labels, input limits and padding of a classifier bundle; the config gains label2id if it lacks it."""
    import json

    from .. import fsio
    from ..bundle.manifest import signature
    from ..bundle.padding import lower_mask_value
    from ..runtime.text import TextTokenizer, configured_max_length

    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    id2label = config.get("id2label") or {}
    labels = [id2label[k] for k in sorted(id2label, key=int)]
    if labels and not config.get("label2id"):
        config["label2id"] = {name: i for i, name in enumerate(labels)}
        fsio.write_json_atomic(config_path, config)
    max_length = min(configured_max_length(folder), int(config.get("max_position_embeddings") or 512))
    tokenizer = TextTokenizer(folder, max_length)
    if engine != "onnx":  # the mask-value rewrite and the operator scan read an ONNX graph
        batching = {"batch_invariant": None, "batch_note": f"not checked for the {engine} engine: compare "
                    "classify(..., batch_size=1) with batched answers before relying on batching"}
        dynamic = False
    else:
        dynamic = any(op == "DynamicQuantizeLinear" for _, op in signature(folder / model_rel)["op_types"])
        batching = lower_mask_value(folder / model_rel, max_length, int(config.get("vocab_size") or 30000),
                                    tokenizer.pad_id)
        batching["batch_invariant"] = not dynamic
    if dynamic:
        batching["batch_note"] = ("dynamic INT8 quantises each batch's activations with one scale, so a text's "
                                  "probabilities depend a little on its batch mates: classify(..., batch_size=1) gives "
                                  "the answers the benchmark measured; batched answers can differ on close calls "
                                  "(benchmarks/runtime.py measures how often)")
    return {
        "labels": labels,
        "max_length": max_length,
        "truncation": f"texts longer than {max_length} tokens are cut there by default (answers say truncated: true); "
                      "truncate=False (or --no-truncate) refuses them",
        "batching": batching,
    }


def bundle_summary(results: dict, variant: dict) -> dict:
    """Accuracy and latency of a measured variant, for its bundle's manifest."""
    metrics = variant.get("metrics") or {}
    return {
        "accuracy": metrics.get("accuracy"), "macro_f1": metrics.get("macro_f1"), "examples": metrics.get("examples"),
        "accuracy_delta_points": (variant.get("ratios") or {}).get("accuracy_delta_points"),
        "latency_ms": {profile: {shape: {"p50": s.get("p50"), "p90": s.get("p90")} for shape, s in shapes.items()}
                       for profile, shapes in (variant.get("latency_ms") or {}).items()},
        "throughput_seq_per_s": {profile: p.get("throughput_seq_per_s")
                                 for profile, p in (variant.get("profiles") or {}).items()},
    }
