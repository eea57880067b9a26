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
"""Target families by name: each module's `CPUS` are the check names it serves."""


class CheckFailed(EdgeNLPError):
    """A bundle answered otherwise on its target: a verdict, not a bad input (exit 1, as a failed gate)."""

    exit_code = 1


EMULATED = "emulated: the answers are the target's kernels', the time is not the target's (nothing is timed)"


def module_of(name: str) -> Any:
    """The target module serving check name `name` (`arm64`, `arm64-dotprod`, ...)."""
    for path in MODULES.values():
        module = import_module(path)
        if name in module.CPUS:
            return module
    raise EdgeNLPError(f"unknown check target '{name}': use one of {', '.join(names())}")


def family(name: str) -> Any:
    """The target module of family `name` (`arm64`)."""
    if name not in MODULES:
        raise EdgeNLPError(f"unknown target '{name}': use one of {', '.join(MODULES)}")
    return import_module(MODULES[name])


def require(names: list[str]) -> None:
    """Refuse, before any work, check names that are unknown or machines this one cannot emulate."""
    for name in names:
        module_of(name).qemu(name)


def runtime_source(name: str) -> str:
    """The digest of the runtime code a check on `name` would run now."""
    return module_of(name).runtime_source()[1]


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
    """Run the bundle at `folder` here and on `name`; what agreed, with where and on what it ran.

    A bundle that carries an ORT-format model (`--target ort`) is checked in that form too: it is
    what ONNX Runtime Mobile would load on the device.
    """
    from ..runtime.bundle import load, read_manifest

    module = module_of(name)
    env = module.setup()
    started = time.perf_counter()
    forms = ["onnx"] + (["ort"] if "ort" in (read_manifest(folder).get("targets") or {}) else [])
    verdicts = {
        form: _compare(load(folder, model_form=form), env, name, folder, form, texts, references, timeout_s)
        for form in forms
    }
    verdict, environments = verdicts["onnx"]
    cpu = module.CPUS[name]
    found = {
        "target": name,
        "emulated_cpu": f"qemu -cpu {cpu.qemu} ({cpu.like})",
        "emulator": module.emulator(name),
        "int8_kernels": cpu.kernels,
        "cpu_features": environments[1].get("cpu_features"),
        "host": environments[0],
        "on_target": {**environments[1], "edgenlp-runtime-source": env.versions["edgenlp-runtime-source"]},
        "texts": len(texts),
        **verdict,
    }
    if "ort" in verdicts:
        ort = verdicts["ort"][0]
        found["ort_format"] = ort
        found["passed"] = verdict["passed"] and ort["passed"]
        found["summary"] += f"; the ORT-format model: {ort['summary']}"
    return {**found, "timing": EMULATED, "checked_in_s": round(time.perf_counter() - started, 1)}


def _compare(bundle, env, name, folder, form, texts, references, timeout_s) -> tuple[dict, tuple[dict, dict]]:
    from ..runtime.check import probe
    from ..tasks import get as get_task

    here = probe(bundle, texts)
    there = run_remote(env, name, folder, {"texts": texts, "model_form": form}, timeout_s)
    verdict = tokenizer_verdict(here, there) or get_task(bundle.task).compare_target_answers(here, there, references)
    return verdict, (here["environment"], there["environment"])


def tokenizer_verdict(here: dict, there: dict) -> dict | None:
    """A failed verdict when the target tokenized any text otherwise (then no answer compares); else None."""
    differ = [i for i, (a, b) in enumerate(zip(here["token_ids"], there["token_ids"])) if a != b]
    if len(here["token_ids"]) != len(there["token_ids"]):
        differ = differ or [min(len(here["token_ids"]), len(there["token_ids"]))]
    if not differ:
        return None
    return {
        "passed": False,
        "same_tokenization": False,
        "texts_tokenized_otherwise": len(differ),
        "first_text_tokenized_otherwise": differ[0],
        "summary": f"the target tokenized {len(differ)} of {len(here['token_ids'])} texts otherwise (first: text "
        f"{differ[0]}): it runs another tokenizer than this machine, so its answers cannot be trusted",
    }
