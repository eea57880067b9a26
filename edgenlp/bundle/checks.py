"""A run's last step when its recipe names target machines: the chosen variants bundled and checked there.

Each chosen variant is bundled into `<run>/bundles/<variant>` with `check_on` (`edgenlp.targets`),
so what is checked is exactly what ships, and its manifest keeps the verdicts. A rerun keeps a
bundle whose manifest already holds a verdict for the same variant (by artifact id) on every named
machine and for the same runtime on the target: an emulated check takes minutes.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..artifact import Artifact


def chosen(target, variants: dict[str, Artifact], results: dict | None) -> list[str]:
    """The variants to check: the recipe's list, else those quantised for its ISA, else the selected one
    (of those a bundle can carry: a PyTorch checkpoint is not shipped)."""
    from ..runtime.engines import ENGINES

    if target.check_variants is not None:
        return [name for name in target.check_variants if name in variants and variants[name].format in ENGINES]
    if target.isa:
        built_for = [
            name
            for name, art in variants.items()
            if art.format == "onnx" and (art.meta.get("metadata") or {}).get("isa") == target.isa
        ]
        if built_for:
            return built_for
    selected = ((results or {}).get("selection") or {}).get("selected")
    return [selected] if selected in variants and variants[selected].format in ENGINES else []


def check_run(target, data, out_dir: Path, variants: dict[str, Artifact], results: dict | None) -> dict:
    """{variant: {bundle, checked_on}} for each chosen variant, its bundle built (or kept) under `out_dir`."""
    from . import TargetSettings, build

    found = {}
    for name in chosen(target, variants, results):
        folder = out_dir / "bundles" / name
        checks = _kept(folder, variants[name], target.check_on)
        if checks is None:
            settings = TargetSettings(data=data, check_texts=target.check_texts)
            build(variants[name].path, folder, settings=settings, check_on=target.check_on)
            checks = json.loads((folder / "manifest.json").read_text())["checked_on"]
        found[name] = {"bundle": folder.relative_to(out_dir).as_posix(), "checked_on": checks}
    return found


def _kept(folder: Path, variant: Artifact, names: list[str]) -> dict | None:
    """The verdicts of an earlier check of this very variant on every one of `names`, if it still stands."""
    from .. import targets

    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    checks = manifest.get("checked_on") or {}
    if (manifest.get("lineage") or [{}])[0].get("id") != variant.id or not all(n in checks for n in names):
        return None
    runtime = {n: (checks[n].get("on_target") or {}).get("edgenlp-runtime-source") for n in names}
    if any(r != targets.runtime_source(n) for n, r in runtime.items()):
        return None
    return {n: checks[n] for n in names}
