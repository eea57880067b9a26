"""The torch-free inference path: onnxruntime, tokenizers, numpy and msgspec (the manifest's schema), nothing else.

This is what an edge app, the server and the benchmark workers load. It never imports torch or
transformers (tests check, in a virtual environment that has neither), which keeps a process that
serves an INT8 MiniLM under 100 MiB. It installs on its own as `edgenlp-runtime` (runtime/ folder).

    from edgenlp.runtime import load
    bundle = load("minilm-bundle")            # checks every file's sha256 first
    bundle.classify(["great film", "dull"])   # [{"label", "score", "probabilities", "truncated"}, ...]

Names are imported on first use, so `import edgenlp.runtime` (and `edgenlp.errors`, which builds on
its error classes) costs nothing until a model is opened.
"""

from __future__ import annotations

from importlib import import_module

_WHERE = {
    "load": "bundle",
    "Bundle": "bundle",
    "read_manifest": "bundle",
    "verify": "bundle",
    "FORMAT_VERSION": "bundle",
    "TextClassifier": "classifier",
    "length_batches": "classifier",
    "softmax": "classifier",
    "TokenTagger": "entities",
    "TextTokenizer": "text",
    "configured_max_length": "text",
    "DEFAULT_MAX_LENGTH": "text",
    "OnnxModel": "session",
    "onnx_file": "session",
    "session_options": "session",
    "CausalLM": "generation",
    "Generation": "generation",
    "Sampling": "generation",
    "TextGenerator": "generation",
    "EdgeNLPError": "errors",
    "InputError": "errors",
    "BundleError": "errors",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'edgenlp.runtime' has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
