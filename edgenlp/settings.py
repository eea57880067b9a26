"""The few settings read from the environment, in one place."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """Root of the offline data kit (SST-2, BBC News, ...): `EDGENLP_DATA_DIR`, default `../shared/data`."""
    return Path(os.environ.get("EDGENLP_DATA_DIR", "../shared/data")).expanduser()


def offline() -> bool:
    """True when hub downloads are disabled (HF_HUB_OFFLINE=1 or EDGENLP_OFFLINE=1)."""
    return any(os.environ.get(k, "") in ("1", "true", "TRUE") for k in ("HF_HUB_OFFLINE", "EDGENLP_OFFLINE"))


def cache_dir() -> Path:
    """Where edgenlp keeps what it can rebuild (models initialised from a config): `EDGENLP_CACHE_DIR`,
    default `~/.cache/edgenlp`."""
    return Path(os.environ.get("EDGENLP_CACHE_DIR", "~/.cache/edgenlp")).expanduser()
