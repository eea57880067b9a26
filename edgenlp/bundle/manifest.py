"""`manifest.json`: what a bundle holds, what it needs to run, where it came from, how it measured."""

from __future__ import annotations

import time
from pathlib import Path

from ..artifact import META_FILE, Artifact, library_versions
from ..runtime.bundle import FORMAT, FORMAT_VERSION, MANIFEST
from ..runtime.hashing import sha256_file

OPSET_MINIMUM_ORT = {
    13: "1.6",
    14: "1.8",
    15: "1.10",
    16: "1.11",
    17: "1.12",
    18: "1.14",
    19: "1.15",
    20: "1.17",
    21: "1.18",
}
"""The first onnxruntime release that implements each ONNX opset (onnxruntime's version matrix)."""
CONTRIB_MINIMUM_ORT = {
    "MatMulNBits": "1.17",
    "GatherBlockQuantized": "1.20",
    "GroupQueryAttention": "1.17",
    "MultiHeadAttention": "1.16",
}
"""onnxruntime's own (com.microsoft) operators that arrived late; older ones predate every listed opset."""
ONNX_TYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
    10: "float16",
    11: "float64",
    16: "bfloat16",
}


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".")[:3] if x.isdigit())


def signature(model_path: Path) -> dict:
    """Inputs and outputs (name, dtype, shape with named dimensions), opset and operator domains of a graph."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)

    def describe(values):
        return [
            {
                "name": v.name,
                "dtype": ONNX_TYPES.get(v.type.tensor_type.elem_type, str(v.type.tensor_type.elem_type)),
                "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            }
            for v in values
        ]

    initialisers = {i.name for i in model.graph.initializer}
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    op_types = sorted({(n.domain or "ai.onnx", n.op_type) for n in model.graph.node})
    return {
        "inputs": describe(i for i in model.graph.input if i.name not in initialisers),
        "outputs": describe(model.graph.output),
        "opsets": opsets,
        "op_types": op_types,
    }


def minimum_onnxruntime(sig: dict) -> dict:
    built_with = library_versions(("onnxruntime",)).get("onnxruntime")
    needs = []
    opset = sig["opsets"].get("ai.onnx")
    if opset in OPSET_MINIMUM_ORT:
        needs.append((OPSET_MINIMUM_ORT[opset], f"ONNX opset {opset}"))
    elif opset:
        needs.append((built_with, f"ONNX opset {opset} (newer than the table here: the version it was checked with)"))
    for domain, op in sig["op_types"]:
        if op in CONTRIB_MINIMUM_ORT and domain == "com.microsoft":
            needs.append((CONTRIB_MINIMUM_ORT[op], f"the {op} operator"))
    int8_cache = any(i["name"].startswith("past_key_values.") and i["dtype"] == "int8" for i in sig["inputs"])
    if int8_cache and ("com.microsoft", "GroupQueryAttention") in [tuple(op) for op in sig["op_types"]]:
        # when the CPU kernel learnt int8 caches is not recorded here: ask for the release it was checked with
        needs.append((built_with, "GroupQueryAttention with an INT8 KV cache (the release it was checked with)"))
    version, why = max(needs, key=lambda n: _version_key(n[0])) if needs else (built_with, "unknown opset")
    return {"minimum": version, "because": why, "checked_with": built_with}


def lineage(variant: Artifact, limit: int = 64) -> list[dict]:
    """This variant, its parent, and so on back to the source model (as far as the folders still exist)."""
    chain, current = [], variant
    while current is not None and len(chain) < limit:
        meta = current.meta
        chain.append(
            {
                "id": meta.get("id"),
                "name": current.name,
                "stage": meta.get("stage"),
                "format": meta.get("format"),
                "precision": meta.get("precision"),
            }
        )
        parent = meta.get("parent") or {}
        path = Path(parent.get("path") or "")
        if parent and (path / META_FILE).is_file():
            current = Artifact.load(path)
        else:
            if parent:  # the folder's name, never its path: a manifest travels, the build machine's paths stay
                chain.append(
                    {"id": parent.get("id"), "name": parent.get("name"), "stage": "source", "model": path.name or None}
                )
            current = None
    return chain


def tuned_isa(variant: Artifact) -> dict:
    """The instruction set the nearest quantisation stage tuned for (none for a float model)."""
    if variant.format != "onnx" and variant.precision != "fp32":
        return {
            "tuned_for": None,
            "note": f"{variant.format} picks its integer kernels for the CPU it runs on; "
            "measured on the CPU in `benchmark`",
        }
    current = variant
    while current is not None:
        isa = (current.meta.get("metadata") or {}).get("isa")
        if isa:
            cpu = (current.meta.get("metadata") or {}).get("cpu") or {}
            return {"tuned_for": isa, "by_stage": current.meta.get("stage"), "on_cpu": cpu.get("model")}
        path = Path((current.meta.get("parent") or {}).get("path") or "")
        current = Artifact.load(path) if (path / META_FILE).is_file() else None
    return {"tuned_for": None, "note": "no integer quantisation: the model runs alike on any CPU"}


def benchmark(source, task) -> dict | None:
    """The figures results.json holds for this variant, with where and when they were measured."""
    if source.record is None:
        return None
    results, record = source.results, source.record
    env = results.get("environment") or {}
    per_profile = {
        name: {"threads": p.get("threads"), "peak_rss_bytes": p.get("peak_rss_bytes")}
        for name, p in (record.get("profiles") or {}).items()
    }
    return {
        "measured": results.get("created"),
        "cpu": env.get("cpu"),
        "results_schema": results.get("schema"),
        "data": ((results.get("run") or {}).get("data") or {}).get("name"),
        "reference": results.get("reference"),
        "size_bytes": record.get("size_bytes"),
        "profiles": per_profile,
        **task.bundle_summary(results, record),
    }


def model_bytes(graph: Path) -> int:
    """The graph and its external-data file."""
    data = graph.with_name(f"{graph.name}_data")
    return graph.stat().st_size + (data.stat().st_size if data.exists() else 0)


def file_table(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def compose(folder: Path, model_rel: str, source, task, task_fields: dict, targets: dict) -> dict:
    variant = source.variant
    engine = variant.format
    model = {
        "file": model_rel,
        "engine": engine,
        "precision": variant.precision,
        "variant": variant.name,
        "artifact_id": variant.id,
    }
    if engine == "onnx":
        sig = signature(folder / model_rel)
        model.update(
            inputs=sig["inputs"],
            outputs=sig["outputs"],
            opset=sig["opsets"].get("ai.onnx"),
            opsets=sig["opsets"],
            bytes=model_bytes(folder / model_rel),
        )
        needs = {"onnxruntime": minimum_onnxruntime(sig)}
        layouts = {
            "transformers.js": f"AutoModel / pipeline('{variant.task}', folder, {{dtype: "
            f"'{_dtype(model_rel)}'}}) with env.localModelPath",
            "optimum": f"ORTModel.from_pretrained(folder, subfolder='onnx', file_name='{Path(model_rel).name}')",
        }
    else:
        model["bytes"] = variant.size_bytes
        needs = {
            engine: {
                "checked_with": library_versions((engine,)).get(engine),
                "install": f"pip install 'edgenlp-runtime[{engine}]' (or the {engine} package alone)",
            }
        }
        layouts = ENGINE_LAYOUTS[engine](model_rel)
    task_fields = dict(task_fields)
    for loader, how in task_fields.pop("layouts", {}).items():  # a task's graph may not open everywhere
        if how is None:
            layouts.pop(loader, None)
        else:
            layouts[loader] = how
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "edgenlp_version": library_versions(("edgenlp",)).get("edgenlp"),
        "task": variant.task,
        "engine": engine,
        "model": model,
        **needs,
        "isa": tuned_isa(variant),
        **task_fields,
        "layouts": layouts,
        "targets": targets,
        "lineage": lineage(variant),
        "benchmark": benchmark(source, task),
        "files": file_table(folder),
    }


ENGINE_LAYOUTS = {
    "openvino": lambda rel: {"openvino": f"openvino.Core().compile_model(folder + '/{rel}', 'CPU')"},
    "ctranslate2": lambda rel: {
        "ctranslate2": f"ctranslate2.Encoder / ctranslate2.Generator(folder + '/{rel}'); "
        "a classifier's head is classifier.npz (weight, bias) on pooler_output"
    },
}
"""How each engine's own API opens the model in a bundle (edgenlp's runtime does this for an app)."""


def _dtype(model_rel: str) -> str:
    return {"model.onnx": "fp32", "model_fp16.onnx": "fp16", "model_quantized.onnx": "q8", "model_q4.onnx": "q4"}.get(
        Path(model_rel).name, "fp32"
    )
