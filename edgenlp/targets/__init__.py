"""Machines a bundle is built for but that this machine is not: answers checked there, never timed.

`check(folder, name, texts)` runs a bundle through `edgenlp.runtime.check` twice, here and on the
target (an emulated ARM64 CPU, `targets/arm64.py`), and compares the two with the task's measure
(`compare_target_answers`: label agreement for a classifier, identical greedy tokens and top-1
agreement for a decoder), after checking that both tokenized every text alike. A target module
offers `CPUS` (the check names it serves), `setup()` and an environment that runs the runtime.
"""

from __future__ import annotations

import json
import subprocess  # nosec B404: the target's own command line, no shell
import tempfile
import time
from importlib import import_module
from pathlib import Path
from typing import Any

from ..errors import EdgeNLPError

MODULES = {"arm64": "edgenlp.targets.arm64"}
EMULATED = "emulated: the answers are the target's kernels', the time is not the target's (nothing is timed)"


def module_of(name: str) -> Any:
    """The target module serving check name `name` (`arm64`, `arm64-dotprod`, ...)."""
    for path in MODULES.values():
        module = import_module(path)
        if name in module.CPUS:
            return module
    raise EdgeNLPError(f"unknown check target '{name}': use one of {', '.join(names())}")


def names() -> list[str]:
    return [cpu for path in MODULES.values() for cpu in import_module(path).CPUS]


def run_remote(env, name: str, folder: Path, request: dict, timeout_s: float) -> dict:
    """`edgenlp.runtime.check` on the target: its answers, or a one-line error with the target's last words."""
    with tempfile.TemporaryDirectory(prefix="edgenlp-check-") as tmp:
        request_file, out = Path(tmp) / "request.json", Path(tmp) / "answers.json"
        request_file.write_text(json.dumps(request), encoding="utf-8")
        args = ["-m", "edgenlp.runtime.check", str(Path(folder).resolve()), str(request_file), "--out", str(out)]
        try:
            done = env.run(name, args, timeout_s)
        except subprocess.TimeoutExpired:
            raise EdgeNLPError(f"the {name} check ran past {timeout_s:.0f} s: check fewer texts") from None
        if done.returncode != 0 or not out.is_file():
            said = next((ln for ln in reversed(done.stderr.splitlines()) if ln.strip()), f"exit {done.returncode}")
            raise EdgeNLPError(f"the bundle failed on {name} ({said.strip()}): the runtime there could not run it")
        return json.loads(out.read_text(encoding="utf-8"))


def check(folder: Path, name: str, texts: list[str], references: list | None = None, timeout_s: float = 3600.0) -> dict:
    """Run the bundle at `folder` here and on `name`; what agreed, with where and on what it ran."""
    from ..runtime.bundle import load
    from ..runtime.check import probe
    from ..tasks import get as get_task

    module = module_of(name)
    env = module.setup()
    bundle = load(folder)
    request = {"texts": texts}
    started = time.perf_counter()
    here = probe(bundle, texts)
    there = run_remote(env, name, folder, request, timeout_s)
    cpu = module.CPUS[name]
    verdict = tokenizer_verdict(here, there)
    if verdict is None:
        verdict = get_task(bundle.task).compare_target_answers(here, there, references)
    return {
        "target": name,
        "emulated_cpu": f"qemu -cpu {cpu.qemu} ({cpu.like})",
        "int8_kernels": cpu.kernels,
        "cpu_features": there["environment"].get("cpu_features"),
        "host": here["environment"],
        "on_target": there["environment"],
        "texts": len(texts),
        **verdict,
        "timing": EMULATED,
        "checked_in_s": round(time.perf_counter() - started, 1),
    }


def tokenizer_verdict(here: dict, there: dict) -> dict | None:
    """A failed verdict when the target tokenized any text otherwise (then no answer compares); else None."""
    differ = [i for i, (a, b) in enumerate(zip(here["token_ids"], there["token_ids"])) if a != b]
    if len(here["token_ids"]) != len(there["token_ids"]):
        differ = differ or [min(len(here["token_ids"]), len(there["token_ids"]))]
    if not differ:
        return None
    return {
        "passed": False,
        "token_ids_identical": False,
        "texts_tokenized_otherwise": len(differ),
        "first_text_tokenized_otherwise": differ[0],
        "summary": f"the target tokenized {len(differ)} of {len(here['token_ids'])} texts otherwise (first: text "
        f"{differ[0]}): it runs another tokenizer than this machine, so its answers cannot be trusted",
    }
