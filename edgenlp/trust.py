"""What edgenlp runs from a model folder: nothing, unless the user asked for it.

A checkpoint's `config.json` (or `tokenizer_config.json`) may carry an `auto_map` naming Python
modules of its own, which transformers imports when told `trust_remote_code=True`. edgenlp never
says so on the folder's word: every load passes the user's choice (`--trust-remote-code`, off by
default, as in transformers), and a folder whose `auto_map` would need its own code is refused up
front in one line. edgenlp's own pruned checkpoints carry such a map too (for programs without
edgenlp), but load through the classes `edgenlp.architectures` registers, never through the copy
of the modeling file inside the folder.

The choice travels in the environment (`EDGENLP_TRUST_REMOTE_CODE`), so the benchmark workers and
a local Ray instance that edgenlp starts inherit it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import ModelNotFoundError

ENV = "EDGENLP_TRUST_REMOTE_CODE"
CODE_FILES = ("config.json", "tokenizer_config.json")


def remote_code_allowed() -> bool:
    return os.environ.get(ENV, "") in ("1", "true", "TRUE")


def allow_remote_code(allowed: bool) -> None:
    """The user's `--trust-remote-code` for this process and the processes it starts."""
    if allowed:
        os.environ[ENV] = "1"
    else:
        os.environ.pop(ENV, None)


def pretrained_options(folder: str | Path | None = None) -> dict:
    """Keyword arguments for every `from_pretrained` of a model or tokenizer folder; given the folder, it is
    first refused in one line if it would need its own code (`check_model_folder`)."""
    if folder is not None and (Path(folder) / "config.json").is_file():
        from .model_facts import read_config

        check_model_folder(Path(folder), read_config(Path(folder) / "config.json"), f"the model {folder}")
    return {"trust_remote_code": remote_code_allowed()}


def _auto_map(folder: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in CODE_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue  # unreadable JSON is the loader's to report (models.read_config)
        mapping = content.get("auto_map") if isinstance(content, dict) else None
        if isinstance(mapping, dict):
            for key, value in mapping.items():
                for ref in value if isinstance(value, list) else [value]:
                    if isinstance(ref, str):
                        found[f"{name}:{key}"] = ref
    return found


def check_model_folder(folder: Path, config: dict, where: str) -> None:
    """Refuse a checkpoint that would run its own code, unless the user allowed it.

    Code is needed when the model type is not one this installation knows (transformers' own, or
    edgenlp's pruned ones), or when an `auto_map` entry points at another repository (`repo--module.Class`).
    """
    if remote_code_allowed():
        return
    mapping = _auto_map(Path(folder))
    if not mapping:
        return
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from . import architectures

    model_type = config.get("model_type")
    known = isinstance(model_type, str) and (
        model_type in CONFIG_MAPPING or model_type in architectures.PRUNED_MODEL_TYPES
    )
    elsewhere = sorted(ref for ref in mapping.values() if "--" in ref)
    if known and not elsewhere:
        return  # transformers' (or edgenlp's) own classes load it; the folder's modules are never imported
    what = (
        f"code from another repository ({elsewhere[0]})"
        if elsewhere
        else f"its own code ({next(iter(mapping.values()))}) for model type {model_type!r}"
    )
    raise ModelNotFoundError(
        f"{where} asks to run {what}: edgenlp runs no code from a model folder unless you "
        "pass --trust-remote-code (only for a model whose code you have read)"
    )
