"""The `ort` target: the ORT-format model for ONNX Runtime Mobile and a reduced-operator build.

onnxruntime's own `convert_onnx_models_to_ort` writes `<model>.ort` and `required_operators.config`
(the operators and types a custom minimal build must keep); its mobile-usability checker says
whether NNAPI (Android) or CoreML (iOS) could take parts of the graph, and that verdict goes into
the manifest. The ORT model is checked to give the ONNX model's outputs before it is kept.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ArtifactError
from .manifest import model_bytes


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def mobile_usability(model_path: Path) -> dict:
    """onnxruntime's verdict: run on the CPU execution provider, or try NNAPI / CoreML."""
    from onnxruntime.tools.mobile_helpers import usability_checker

    logger = logging.getLogger("edgenlp.mobile_usability")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = _Lines()
    logger.addHandler(handler)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            try_eps = usability_checker.analyze_model(model_path, skip_optimize=False, logger=logger)
    finally:
        logger.removeHandler(handler)
    per_ep = {}
    for line in handler.lines:
        found = re.match(
            r"Model should perform well with (.+?) (as is|if modified to have fixed input shapes): (\w+)", line
        )
        if found:
            per_ep.setdefault(found.group(1), {})["as is" if found.group(2) == "as is" else "with fixed shapes"] = (
                found.group(3)
            )
    return {
        "recommendation": (
            "try NNAPI (Android) / CoreML (iOS) against the CPU execution provider"
            if try_eps
            else "use the CPU execution provider (NNAPI and CoreML would take too little of the graph)"
        ),
        "execution_providers": per_ep,
        "checker": "onnxruntime.tools.check_onnx_model_mobile_usability",
    }


def compact_names(model: Path, out: Path) -> int:
    """Save `model` with short internal tensor names and no node names or doc strings; returns how many renamed."""
    import onnx

    graph_model = onnx.load(str(model))
    g = graph_model.graph
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    short: dict[str, str] = {}

    def rename(name: str) -> str:
        if not name or name in keep:
            return name
        return short.setdefault(name, f"t{len(short):x}")

    for init in g.initializer:
        init.name = rename(init.name)
    for node in g.node:
        node.input[:] = [rename(x) for x in node.input]
        node.output[:] = [rename(x) for x in node.output]
        node.name = ""
        node.doc_string = ""
    del g.value_info[:]
    onnx.save(graph_model, str(out))
    return len(short)


def add(folder: Path, model_rel: str, source, settings) -> dict:
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    model = folder / model_rel
    out = folder / "ort"
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "in" / model.name
        staged.parent.mkdir()
        renamed = compact_names(model, staged)
        converted = Path(tmp) / "out"
        log = io.StringIO()
        logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
        try:
            with contextlib.redirect_stdout(log):
                convert_onnx_models_to_ort(staged, output_dir=converted, optimization_styles=[OptimizationStyle.Fixed])
        except Exception as exc:  # onnxruntime raises plain exceptions naming the operator it cannot save
            raise ArtifactError(
                f"onnxruntime could not convert {model_rel} to the ORT format: {str(exc).splitlines()[0]}"
                " (bundle without --target ort)"
            ) from None
        ort_files = sorted(converted.rglob("*.ort"))
        configs = sorted(converted.rglob("*.config"))
        if len(ort_files) != 1 or len(configs) != 1:
            raise ArtifactError(
                f"onnxruntime's converter wrote {len(ort_files)} .ort and {len(configs)} .config files "
                f"for {model_rel}, not one of each: {log.getvalue().strip().splitlines()[-1:]}"
            )
        out.mkdir()
        ort_model = out / f"{model.stem}.ort"
        shutil.copy2(ort_files[0], ort_model)
        shutil.copy2(configs[0], out / "required_operators.config")
    max_diff = _same_outputs(model, ort_model)
    return {
        "file": f"ort/{ort_model.name}",
        "required_operators": "ort/required_operators.config",
        "bytes": ort_model.stat().st_size,
        "onnx_bytes": model_bytes(model),
        "optimization": "Fixed style, level all (onnxruntime's default for ORT format), NCHWc layout excluded",
        "names": f"{renamed} internal tensor names shortened and node names dropped (graph inputs and outputs keep "
        "theirs): a mobile app never reads them, and the flatbuffer stores a record per tensor",
        "checked": f"same outputs as {model_rel} on a probe batch (max |difference| {max_diff:.2e})",
        "mobile_usability": mobile_usability(model),
        "reduced_build": "build onnxruntime with --minimal_build --include_ops_by_config ort/required_operators.config",
    }


def _same_outputs(onnx_model: Path, ort_model: Path) -> float:
    import onnxruntime as ort

    from ..runtime.session import session_options

    a = ort.InferenceSession(str(onnx_model), session_options(1), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(ort_model), session_options(1), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {}
    for i in a.get_inputs():
        shape = [2 if not isinstance(d, int) else d for d in i.shape]
        if i.name.startswith("past_key_values"):
            shape[2] = 0
        if "int64" in i.type:
            feed[i.name] = (
                np.ones(shape, np.int64)
                if "mask" in i.name
                else np.zeros(shape, np.int64)
                if "type" in i.name
                else rng.integers(0, 16, shape).astype(np.int64)
            )  # ids every vocabulary has
        else:
            feed[i.name] = rng.standard_normal(shape).astype(np.float32)
    if "attention_mask" in feed and any(n.startswith("past_key_values") for n in feed):
        feed["attention_mask"] = np.ones_like(feed["input_ids"])
    diff = max(float(np.abs(x - y).max()) for x, y in zip(a.run(None, feed), b.run(None, feed)))
    if diff > 1e-4:
        raise ArtifactError(
            f"the ORT-format model differs from {onnx_model.name} by {diff:.2e} on a probe batch: "
            "not bundled; report it (bundle without --target ort)"
        )
    return diff
