"""Save a benchmark's summary under `benchmarks/results/`, with the command, commit, date and machine.

Every figure the README states comes from one of these files; each names the command that wrote it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CODE = ("edgenlp", "benchmarks/*.py", "recipes", "pyproject.toml")
"""What produces a figure: a change here (not in the README or the tests) marks the commit as modified."""


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+uncommitted changes" if dirty else "")


def save(name: str, summary: dict) -> Path:
    from edgenlp.bench.harness import environment
    from edgenlp.fsio import write_json_atomic

    RESULTS.mkdir(parents=True, exist_ok=True)
    command = " ".join(
        [
            "python",
            str(Path(sys.argv[0]).relative_to(ROOT))
            if Path(sys.argv[0]).is_absolute() and ROOT in Path(sys.argv[0]).parents
            else sys.argv[0],
            *sys.argv[1:],
        ]
    )
    doc = {
        "benchmark": name,
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "commit": _commit(),
        "environment": environment(),
        "summary": summary,
    }
    path = RESULTS / f"{name}.json"
    write_json_atomic(path, doc)
    print(f"summary saved to {path.relative_to(ROOT)}")
    return path
