"""The `strings` target: one ONNX graph from text to label, with the tokenizer inside it.

onnxruntime-extensions turns the bundle's tokenizer into a graph (`gen_processing_models`); the
bundle's classifier and a Softmax / ArgMax / label lookup are joined behind it, so an app with no
tokenizer library feeds a string and reads a label. It is kept only if it gives the two-part
pipeline's label on every text of the test split (all but `max_label_differences` of them, if the
user accepts that); the manifest records how many labels and token sequences differed, and the
largest probability difference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArtifactError
from ..trust import pretrained_options
from .source import data_name, evaluation_data

FILE = "strings/model.onnx"


def _extensions():
    try:
        import onnxruntime_extensions
    except ImportError:
        raise ArtifactError("the strings target needs onnxruntime-extensions: pip install 'edgenlp[strings]'") from None
    return onnxruntime_extensions


def session(model):
    """An onnxruntime session (of a file or a ModelProto) with the extensions' operators registered, as an app does."""
    import onnxruntime as ort

    from ..runtime.session import session_options

    options = session_options(1)
    options.register_custom_ops_library(_extensions().get_library_path())
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def text_to_label_graph(folder: Path, model_rel: str, labels: list[str], max_length: int):
    """(the merged text-to-label graph, the tokenizer graph alone) for the bundle's model."""
    import onnx
    from onnx import TensorProto, compose, helper
    from transformers import AutoTokenizer

    model = onnx.load(str(folder / model_rel))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    tokenizer = AutoTokenizer.from_pretrained(str(folder), **pretrained_options(folder))
    options = {"max_length": max_length}
    if tokenizer.init_kwargs.get("do_lower_case") and tokenizer.init_kwargs.get("strip_accents") is None:
        options["strip_accents"] = 1  # Hugging Face strips accents whenever it lower-cases, unless told not to
    try:
        pre, _ = _extensions().gen_processing_models(tokenizer, pre_kwargs=options, opset=opset)
    except Exception as exc:  # the converter raises plain errors for tokenizers it has no graph for
        raise ArtifactError(
            f"onnxruntime-extensions has no in-graph version of this tokenizer "
            f"({type(tokenizer).__name__}: {str(exc).splitlines()[0] if str(exc) else exc}): bundle "
            "without --target strings"
        ) from None
    pre = compose.add_prefix(pre, "tokenizer/", rename_inputs=False)
    _drop_replacement_characters(pre)
    wanted = [i.name for i in model.graph.input]
    axes = helper.make_tensor("tokenizer/axes", TensorProto.INT64, [1], [0])
    pre.graph.initializer.append(axes)
    for name in wanted:
        pre.graph.node.append(
            helper.make_node("Unsqueeze", [f"tokenizer/{name}", "tokenizer/axes"], [f"tokenizer/{name}/batch"])
        )
    del pre.graph.output[:]
    pre.graph.output.extend(
        helper.make_tensor_value_info(f"tokenizer/{name}/batch", TensorProto.INT64, [1, None]) for name in wanted
    )
    pre.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    logits = model.graph.output[0].name
    names = labels or [str(i) for i in range(model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value)]
    model.graph.initializer.append(
        helper.make_tensor("labels/names", TensorProto.STRING, [len(names)], [n.encode() for n in names])
    )
    model.graph.node.extend(
        [
            helper.make_node("Softmax", [logits], ["probabilities"], axis=-1),
            helper.make_node("ArgMax", [logits], ["label_id"], axis=-1, keepdims=0),
            helper.make_node("Gather", ["labels/names", "label_id"], ["label"], axis=0),
        ]
    )
    del model.graph.output[:]
    model.graph.output.extend(
        [
            helper.make_tensor_value_info("label", TensorProto.STRING, [1]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, len(names)]),
            helper.make_tensor_value_info("label_id", TensorProto.INT64, [1]),
        ]
    )
    pre.ir_version = model.ir_version = max(pre.ir_version, model.ir_version)
    merged = compose.merge_models(
        pre, model, io_map=[(f"tokenizer/{n}/batch", n) for n in wanted], outputs=["label", "probabilities", "label_id"]
    )
    return merged, pre


def _drop_replacement_characters(pre) -> None:
    """Remove U+FFFD before the tokenizer op, as Hugging Face's BERT normaliser does (the op keeps it)."""
    from onnx import TensorProto, helper

    g = pre.graph
    text = g.input[0].name
    for node in g.node:
        node.input[:] = ["tokenizer/cleaned" if i == text else i for i in node.input]
    g.initializer.extend(
        [
            helper.make_tensor("tokenizer/fffd", TensorProto.STRING, [1], [rb"\x{FFFD}"]),
            helper.make_tensor("tokenizer/nothing", TensorProto.STRING, [1], [b""]),
        ]
    )
    g.node.insert(
        0,
        helper.make_node(
            "StringRegexReplace",
            [text, "tokenizer/fffd", "tokenizer/nothing"],
            ["tokenizer/cleaned"],
            domain="ai.onnx.contrib",
        ),
    )


def add(folder: Path, model_rel: str, source, settings) -> dict:
    import unicodedata

    import onnx

    from ..runtime.classifier import TextClassifier

    if source.variant.task != "text-classification":
        raise ArtifactError(
            f"the strings target is for classifiers; {source.variant.name} is {source.variant.task}: "
            "bundle without --target strings"
        )
    from .. import data as datasets

    texts = datasets.load(evaluation_data(source, settings.data, "the strings target")).test.texts
    two_part = TextClassifier(folder, model_file=folder / model_rel)
    graph, pre = text_to_label_graph(folder, model_rel, two_part.labels, two_part.tokenizer.max_length)
    (folder / "strings").mkdir()
    onnx.save(graph, str(folder / FILE))
    one, tokens = session(folder / FILE), session(pre)
    # one text at a time, as the strings graph runs: a dynamic-INT8 batch shares one activation scale
    expected = two_part.classify(texts, batch_size=1)
    expected_ids = [e.ids for e in two_part.tokenizer.tokenize(texts)]
    differ, tokens_differ, worst = [], 0, 0.0
    for text, want, want_ids in zip(texts, expected, expected_ids):
        label, probs, _ = one.run(None, {"text": np.array([text])})
        if str(label[0]) != want["label"]:
            differ.append(text)
        tokens_differ += int(tokens.run(None, {"text": np.array([text])})[0][0].tolist() != want_ids)
        worst = max(worst, float(np.abs(probs[0] - np.array(list(want["probabilities"].values()))).max()))
    odd = sorted({f"U+{ord(c):04X} {unicodedata.category(c)}" for t in differ for c in t if ord(c) > 127})
    where = f"the test split of {data_name(source, settings.data)}"
    if len(differ) > settings.max_label_differences:
        raise ArtifactError(
            f"the text-to-label graph gave another label than the two-part pipeline on {len(differ)} of {len(texts)} "
            f"texts of {where} (its tokenizer differs on rare characters: {', '.join(odd[:6]) or 'none'}): not "
            f"bundled; accept that with --max-label-differences {len(differ)}, or bundle without --target strings"
        )
    return {
        "file": FILE,
        "input": {"name": "text", "dtype": "string", "shape": [1]},
        "outputs": {
            "label": "string [1]",
            "probabilities": f"float32 [1, {len(two_part.labels)}]",
            "label_id": "int64 [1]",
        },
        "checked": {
            "texts": len(texts),
            "on": where,
            "labels_differ": len(differ),
            "labels_differ_allowed": settings.max_label_differences,
            "token_ids_differ": tokens_differ,
            "max_probability_difference": worst,
            "characters_in_differing_texts": odd[:20],
            "differing_texts": [t[:200] for t in differ[:5]],
        },
        "limits": [
            "one text per run: a second string would be read as the pair of the first",
            "needs onnxruntime-extensions' operators: register onnxruntime_extensions.get_library_path() (Python) or "
            "build onnxruntime with --use_extensions; plain onnxruntime cannot load it",
            f"texts are cut at {two_part.tokenizer.max_length} tokens, as the two-part pipeline does by default",
            "the in-graph tokenizer (onnxruntime-extensions' BertTokenizer) drops unassigned code points and strips "
            "fewer accents than Hugging Face's: token ids differ on such texts, see checked",
        ],
        "bytes": (folder / FILE).stat().st_size,
    }
