"""What a bundle is made from: one variant on a runtime engine, and the run results that measured it (if any)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..artifact import META_FILE, Artifact
from ..errors import ArtifactError


@dataclass
class Source:
    variant: Artifact
    results: dict | None = None
    """The results.json that measured this variant (its run folder's), if one did."""
    record: dict | None = None
    """This variant's entry in `results["variants"]`."""


def _results(run_dir: Path) -> dict | None:
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def resolve(path: Path) -> Source:
    """A variant folder as it is; a run folder stands for the variant its selection chose."""
    if not path.exists():
        raise ArtifactError(
            f"{path} does not exist: pass a variant folder (runs/<run>/variants/<name>) or a run folder"
        )
    if (path / META_FILE).is_file():
        variant = Artifact.load(path)
        results = _results(path.parent.parent)
        record = next((v for v in (results or {}).get("variants", []) if v.get("artifact_id") == variant.id), None)
        return _checked(Source(variant, results if record else None, record))
    results = _results(path)
    if results is None:
        raise ArtifactError(
            f"{path} is neither a variant folder (no {META_FILE}) nor a run folder (no readable "
            "results.json): pass one of them"
        )
    selected = (results.get("selection") or {}).get("selected")
    if not selected:
        raise ArtifactError(
            f"the run in {path} selected no variant (none met its limits): bundle a variant folder "
            f"instead, e.g. {path / 'variants' / '<name>'}"
        )
    record = next((v for v in results.get("variants", []) if v.get("name") == selected), None)
    if record is None or not record.get("path"):
        raise ArtifactError(
            f"{path / 'results.json'} names '{selected}' as selected but lists no folder for it: rerun the benchmark"
        )
    from ..bench.results import variant_folder

    folder = variant_folder(path, record["path"])
    if not (folder / META_FILE).is_file():
        raise ArtifactError(
            f"the selected variant '{selected}' is not at {folder} any more: rerun `edgenlp optimize`, "
            "or bundle a variant folder"
        )
    return _checked(Source(Artifact.load(folder), results, record))


def _checked(source: Source) -> Source:
    variant = source.variant
    from ..runtime.engines import ENGINES

    if variant.format not in ENGINES:
        raise ArtifactError(
            f"{variant.path} is a {variant.format} variant: a bundle carries a model for one of the "
            f"runtime's engines ({', '.join(ENGINES)}); bundle one of its exported variants"
        )
    if not variant.verify():
        raise ArtifactError(
            f"{variant.path} does not match the hashes in its {META_FILE}: a file was changed; rebuild "
            "the variant (rerun the command that made it)"
        )
    return source


def data_name(source: Source, data) -> str:
    """The data named by the user (`--data`), else the one the source's run measured on ('?' if none)."""
    if data is not None:
        return getattr(data, "source", data)
    return ((source.results or {}).get("run", {}).get("data") or {}).get("name") or "?"


def evaluation_data(source: Source, data, purpose: str):
    """What a bundle is checked on: `--data`, else the source's run's data; a one-line error if neither."""
    spec = data if data is not None else data_name(source, data)
    if spec == "?":
        raise ArtifactError(
            f"{purpose} is checked on held-out data, and {source.variant.path} was measured by no run: "
            "pass --data (e.g. tweets, sst2, wikitext2, a CSV file)"
        )
    return spec
