"""Machines a bundle is built for but that this machine is not: answers checked there, never timed.

`check(folder, name, texts)` runs a bundle through `edgenlp.runtime.check` twice, here and on the
target (an emulated ARM64 CPU, `targets/arm64.py`), and compares the two with the task's measure
(`compare_target_answers`: label agreement for a classifier, identical greedy tokens and top-1
agreement for a decoder), after checking that both tokenized every text alike; `check_all` checks on
several machines side by side. A target module
offers `CPUS` (the check names it serves), `setup()` and an environment that runs the runtime.
"""

from __future__ import annotations

import json
import os
import subprocess  # nosec B404: the target's own command line, no shell
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import import_module
from pathlib import Path
from typing import Any

from ..errors import EdgeNLPError

MODULES = {"arm64": "edgenlp.targets.arm64"}
"""Target families by name: each module's `CPUS` are the check names it serves."""


class CheckFailed(EdgeNLPError):
    """A bundle answered otherwise on its target: a verdict, not a bad input (exit 1, as a failed gate)."""

    exit_code = 1


EXACT_INT8 = "32-bit accumulation (onnxruntime session.x64quantprecision where the CPU lacks VNNI; as on ARM)"
SATURATING_INT8 = "this CPU's default u8 x s8 kernels, which add pairs of products in 16 bits and can saturate"
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


def check_all(folder: Path, names: Sequence[str], texts: list[str], references: list | None = None) -> dict:
    """`check` on each of `names`, side by side, one a core: each emulator runs one thread, and
    an emulated check of 500 texts takes minutes."""
    names = list(dict.fromkeys(names))
    envs = {name: module_of(name).setup() for name in names}  # first, one by one: setup locks its cache
    workers = max(1, min(len(names), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgenlp-check") as pool:
        running = {name: pool.submit(check, folder, name, texts, references, env=envs[name]) for name in names}
        return {name: done.result() for name, done in running.items()}


def check(
    folder: Path, name: str, texts: list[str], references: list | None = None, timeout_s: float = 3600.0, env=None
) -> dict:
    """Run the bundle at `folder` here and on `name`; what agreed, with where and on what it ran.

    A bundle that carries an ORT-format model (`--target ort`) is checked in that form too: it is
    what ONNX Runtime Mobile would load on the device. `env`: the target's environment, if set up already.
    """
    from ..runtime.bundle import read_manifest

    module = module_of(name)
    env = env or module.setup()
    started = time.perf_counter()
    forms = ["onnx"] + (["ort"] if "ort" in (read_manifest(folder).get("targets") or {}) else [])
    verdicts = {form: _compare(env, name, folder, form, texts, references, timeout_s) for form in forms}
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


def _compare(env, name, folder, form, texts, references, timeout_s) -> tuple[dict, tuple[dict, dict]]:
    """The verdict on one model form, and where each side ran.

    This machine's side runs INT8 exactly (`runtime.session.exact_int8`): ARM's kernels accumulate in
    32 bits, and so must the reference they are held to. Where this CPU's default kernels saturate
    (x86 without VNNI), the verdict also says how the target compares with them
    (`against_this_cpus_default_int8`), since that is what an app here runs by default."""
    from ..hardware import cpu_info
    from ..runtime.bundle import load
    from ..runtime.check import probe
    from ..tasks import get as get_task

    bundle = load(folder, model_form=form, exact_int8=True)
    compare = get_task(bundle.task).compare_target_answers
    here = probe(bundle, texts)
    there = run_remote(env, name, folder, {"texts": texts, "model_form": form}, timeout_s)
    verdict = tokenizer_verdict(here, there) or compare(here, there, references)
    host = {**here["environment"], "int8_arithmetic": EXACT_INT8}
    if cpu_info().int8_saturates and verdict.get("same_tokenization", True):
        default = compare(probe(load(folder, model_form=form), texts), there, references)
        verdict["against_this_cpus_default_int8"] = {
            "int8_arithmetic": SATURATING_INT8,
            **{k: v for k, v in default.items() if k not in ("same_tokenization", "min_label_agreement", "tie_margin")},
        }
        verdict["summary"] += f"; against this CPU's default (saturating) INT8 kernels: {default['summary']}"
    return verdict, (host, there["environment"])


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
