"""An emulated ARM64 Linux: Debian's arm64 Python under qemu's user mode, with PyPI's aarch64 wheels.

The environment is what an ARM64 app machine runs, built from Debian's and PyPI's packages only:
`debootstrap --foreign` fetches Debian's arm64 Python (unpacked, never configured: qemu's `-L`
prefix finds its libraries), and pip fetches the manylinux aarch64 wheels of the same onnxruntime,
tokenizers and numpy versions as this machine's, with the `edgenlp-runtime` wheel built from this
checkout. qemu emulates one CPU per check name, so onnxruntime picks the kernels that CPU's
features select (its INT8 GEMMs differ between plain NEON, dot product and i8mm).

onnxruntime reads /proc/cpuinfo at import (pytorch-cpuinfo) and crashes on this machine's x86 one,
so each CPU's tree carries the /proc/cpuinfo of that CPU: qemu's prefix serves it, and it names the
same core (MIDR) and features as the emulated one, since cpuinfo switches kernels on the core's name.
Emulated time says nothing about an ARM CPU's speed: nothing here is timed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .. import fsio
from ..errors import EdgeNLPError
from ..settings import cache_dir

SUITE, PYTHON = "bookworm", "3.11"
"""Debian's release and its Python: the wheels are fetched for this Python."""
PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "python3.11")
MIRROR = os.environ.get("EDGENLP_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
LIBRARIES = {"onnxruntime": "onnxruntime", "tokenizers": "tokenizers", "numpy": "numpy", "msgspec": "msgspec"}
"""What edgenlp-runtime needs, pinned to the versions this machine runs (so only the kernels differ)."""


@dataclass(frozen=True)
class Cpu:
    qemu: str
    """qemu's -cpu model."""
    part: str
    """The core's MIDR part number, as /proc/cpuinfo says it (pytorch-cpuinfo decides kernels on it)."""
    features: str
    kernels: str
    """What onnxruntime's INT8 GEMMs use there."""
    like: str
    min_qemu: tuple[int, int] = (0, 0)
    """The oldest qemu whose emulation of this CPU gives onnxruntime's kernels' right answers."""


BASE = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
CPUS = {
    "arm64": Cpu("cortex-a72", "0xd08", BASE, "NEON (no dot product)", "Raspberry Pi 4, Cortex-A72/A53 phones"),
    "arm64-dotprod": Cpu(
        "neoverse-n1",
        "0xd0c",
        BASE + " atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp ssbs",
        "sdot/udot",
        "AWS Graviton2, Ampere Altra, Cortex-A76 phones",
    ),
    # qemu's `max` has SME, which Graviton3/4 (Neoverse V1/V2) lack and which switches onnxruntime's
    # dynamic INT8 MatMuls to KleidiAI's SME kernels: the i8mm family is `max` without it
    "arm64-i8mm": Cpu(
        "max,sme=off",
        "0xd40",
        BASE + " atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp ssbs sve i8mm bf16",
        "smmla/ummla (i8mm)",
        "AWS Graviton3/4 (Neoverse V1/V2), i8mm phones",
    ),
    # qemu 7.2 (Debian 12's) computes SME wrongly: KleidiAI's dynamic INT8 MatMul came out up to 7.0 off
    # under it and within 0.05 of FP32 under qemu 10.0 (docs/targets.md); versions between were not tried
    "arm64-sme": Cpu(
        "max",
        "0xd85",
        BASE + " atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp ssbs sve sve2 i8mm bf16 sme",
        "KleidiAI SME (dynamic INT8 MatMul)",
        "cores with SME: Cortex-X925/C1 phones, Apple M4 class",
        min_qemu=(10, 0),
    ),
}
"""The ARM64 CPUs a bundle can be checked on: one per family of onnxruntime's INT8 kernels."""

QEMU_ENV = "EDGENLP_QEMU_AARCH64"
NEWER_QEMU = ("trixie", "qemu-user")
"""Where setup gets a qemu new enough for every CPU here: Debian 13's qemu-user (static binaries)."""


class TargetUnavailable(EdgeNLPError):
    """This machine cannot build or run the emulated target (a package or permission is missing)."""


def root() -> Path:
    return cache_dir() / "targets" / "arm64"


def qemu(cpu: str | None = None) -> str:
    """The qemu-aarch64 that runs `cpu`: $EDGENLP_QEMU_AARCH64, else the one setup fetched, else the system's."""
    given = os.environ.get(QEMU_ENV)
    if given and not os.access(given, os.X_OK):
        raise TargetUnavailable(f"{QEMU_ENV}={given} is not an executable qemu-aarch64: fix or unset it")
    found = given or next(
        (str(p) for p in _fetched_qemu_binaries() if os.access(p, os.X_OK)),
        shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64"),
    )
    if not found:
        raise TargetUnavailable(
            "qemu-aarch64-static is not installed: install Debian's qemu-user-static "
            "(apt-get install qemu-user-static), then rerun `edgenlp target setup arm64`"
        )
    need = CPUS[cpu].min_qemu if cpu else (0, 0)
    have = qemu_version(found)
    if have < need:
        raise TargetUnavailable(
            f"{cpu} needs qemu-aarch64 {'.'.join(map(str, need))} or later ({found} is "
            f"{'.'.join(map(str, have))}, whose SME emulation gives wrong answers): run `edgenlp target setup "
            f"arm64` on a Debian-like machine (it fetches Debian 13's qemu-user), or set {QEMU_ENV} to a newer one"
        )
    return found


@functools.cache
def qemu_version(binary: str) -> tuple[int, int]:
    """qemu's (major, minor), from `--version` ((0, 0) when it does not say)."""
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)  # nosec B603
    found = re.search(r"version (\d+)\.(\d+)", done.stdout)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def emulator(cpu: str) -> str:
    """The emulator that runs `cpu`, with its version (recorded beside every check's verdict)."""
    return "qemu-aarch64 " + ".".join(map(str, qemu_version(qemu(cpu))))


def _cannot_fetch(why: str) -> None:
    needing = [name for name, cpu in CPUS.items() if qemu_version(qemu()) < cpu.min_qemu]
    logging.getLogger(__name__).warning(
        "could not fetch Debian 13's qemu-user (%s): %s stay unavailable; set %s to a newer qemu-aarch64",
        why,
        ", ".join(needing),
        QEMU_ENV,
    )


def _fetched_qemu_binaries() -> list[Path]:
    return sorted((root() / "qemu").glob("*/usr/bin/qemu-aarch64"), reverse=True)


def _fetch_newer_qemu() -> None:
    """Debian 13's qemu-user unpacked under the cache, when this machine's qemu is too old for some CPU.

    apt fetches it with its own signature checks, from a source list of its own (the machine's apt
    configuration is not touched); nothing is installed. Where it cannot, those CPUs stay refused
    (`qemu(cpu)` says why), and the others are unaffected.
    """
    need = max(cpu.min_qemu for cpu in CPUS.values())
    if os.environ.get(QEMU_ENV) or qemu_version(qemu()) >= need:
        return
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        return _cannot_fetch("apt-get and dpkg-deb are not on this machine")
    suite, package = NEWER_QEMU
    with tempfile.TemporaryDirectory(prefix="edgenlp-apt-") as tmp:
        work = Path(tmp)
        for sub in ("lists/partial", "cache/archives/partial", "download"):
            (work / sub).mkdir(parents=True)
        (work / "sources.list").write_text(f"deb {MIRROR} {suite} main\n")
        options = [
            *("-o", f"Dir::Etc::SourceList={work / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/dev/null"),
            *("-o", f"Dir::State::Lists={work / 'lists'}", "-o", f"Dir::Cache={work / 'cache'}"),
            *("-o", "Dir::Etc::Preferences=/dev/null", "-o", "Dir::Etc::PreferencesParts=/dev/null"),
            "-qq",
        ]
        for args in (["update"], ["download", package]):
            done = subprocess.run(  # nosec B603 B607: apt-get with our own options, no shell
                ["apt-get", *options, *args], cwd=work / "download", capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                last = next((ln for ln in reversed(done.stderr.splitlines()) if ln.strip()), "no output")
                return _cannot_fetch(f"apt-get {args[0]} failed: {last.strip()}")
        deb = next((work / "download").glob("*.deb"), None)
        if deb is None:
            return _cannot_fetch(f"apt-get download left no {package} package")
        folder = root() / "qemu" / deb.name.split("_")[1].replace("%3a", "-")
        unpacked = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
        shutil.rmtree(unpacked, ignore_errors=True)
        unpacked.mkdir(parents=True)
        done = subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], capture_output=True, check=False)  # nosec B603 B607
        if done.returncode != 0:
            shutil.rmtree(unpacked, ignore_errors=True)
            return _cannot_fetch(f"dpkg-deb could not unpack {deb.name}")
        if folder.exists():
            shutil.rmtree(folder)
        os.rename(unpacked, folder)
    qemu_version.cache_clear()


@dataclass(frozen=True)
class Environment:
    """A ready emulated ARM64: its Debian tree per CPU, and the site-packages on its path."""

    rootfs: Path
    site: tuple[Path, ...]
    versions: dict

    def command(self, cpu: str, args: list[str]) -> list[str]:
        tree = cpu_tree(self.rootfs, cpu)
        return [
            qemu(cpu),
            "-cpu",
            CPUS[cpu].qemu,
            "-L",
            str(tree),
            str(tree / "usr" / "bin" / f"python{PYTHON}"),
            *args,
        ]

    def run(self, cpu: str, args: list[str], timeout_s: float) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory(prefix="edgenlp-arm64-home-") as home:
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": home,
                "LANG": "C.UTF-8",
                "PYTHONPATH": os.pathsep.join(map(str, self.site)),
                "PYTHONNOUSERSITE": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                "OMP_NUM_THREADS": "1",
            }
            return subprocess.run(  # nosec B603: our own command line, no shell
                self.command(cpu, args), capture_output=True, text=True, env=env, timeout=timeout_s, check=False
            )


def setup(refresh: bool = False, runtime_wheel: Path | None = None, fetch_qemu: bool = False) -> Environment:
    """The emulated ARM64, built on first use under EDGENLP_CACHE_DIR and reused after (`refresh` rebuilds).

    `fetch_qemu`: also fetch Debian 13's qemu when this machine's is too old for some CPU (`target setup`).
    """
    qemu()
    if refresh:
        shutil.rmtree(root(), ignore_errors=True)
    with fsio.FolderLock(root()):
        if fetch_qemu:
            _fetch_newer_qemu()
        rootfs = _rootfs()
        versions = {name: _host_version(dist) for name, dist in LIBRARIES.items()}
        deps = _installed(
            root() / "site" / ("deps-" + _digest(json.dumps(versions, sort_keys=True))),
            [f"{name}=={v}" for name, v in versions.items()],
            platform_wheels=True,
        )
        wheel, source_digest = _runtime_wheel(runtime_wheel)
        runtime = root() / "site" / f"runtime-{source_digest}"
        if not runtime.is_dir():
            _drop_older(runtime.parent, "runtime-")
        _installed(runtime, [str(wheel)], platform_wheels=False)
    return Environment(rootfs, (runtime, deps), {**versions, "edgenlp-runtime-source": source_digest})


def cpu_tree(rootfs: Path, cpu: str) -> Path:
    """The Debian tree with `cpu`'s /proc/cpuinfo: hard links to the shared tree, so it costs no space."""
    tree = rootfs.parent / "cpus" / cpu
    if (tree / "proc" / "cpuinfo").is_file():
        return tree
    with fsio.FolderLock(rootfs.parent, ".cpus.lock", wait=True):  # checks on several CPUs run side by side
        if (tree / "proc" / "cpuinfo").is_file():
            return tree
        work = tree.with_name(f".{cpu}.partial-{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(rootfs, work, copy_function=os.link, symlinks=True)
        (work / "proc").mkdir(exist_ok=True)
        info = CPUS[cpu]
        fsio.write_text_atomic(
            work / "proc" / "cpuinfo",
            "".join(
                f"processor\t: {n}\nBogoMIPS\t: 50.00\nFeatures\t: {info.features}\nCPU implementer\t: 0x41\n"
                f"CPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: {info.part}\nCPU revision\t: 1\n\n"
                for n in range(2)
            ),
        )
        os.rename(work, tree)
    return tree


def _rootfs() -> Path:
    tree = root() / "rootfs"
    if (tree / "usr" / "bin" / f"python{PYTHON}").is_file():
        return tree
    debootstrap = shutil.which("debootstrap") or next(
        (p for p in ("/usr/sbin/debootstrap", "/sbin/debootstrap") if Path(p).is_file()), None
    )
    if not debootstrap:
        raise TargetUnavailable(
            "debootstrap is not installed: install Debian's debootstrap (apt-get install debootstrap), "
            "then rerun `edgenlp target setup arm64`"
        )
    if os.geteuid() != 0:
        raise TargetUnavailable(
            "debootstrap needs root to unpack Debian's arm64 Python: run `edgenlp target setup arm64` once "
            "as root (with the same EDGENLP_CACHE_DIR); later checks need no root"
        )
    work = tree.with_name(f".rootfs.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    done = subprocess.run(  # nosec B603
        [
            debootstrap,
            "--foreign",
            "--arch=arm64",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(work),
            MIRROR,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        last = next((ln for ln in reversed((done.stderr + done.stdout).splitlines()) if ln.strip()), "no output")
        raise TargetUnavailable(
            f"debootstrap could not fetch Debian's arm64 {SUITE} from {MIRROR} ({last.strip()}): check the "
            "network, or set EDGENLP_DEBIAN_MIRROR to a Debian mirror this machine reaches"
        )
    # --foreign unpacks only the essential packages; the rest of what was fetched (Python) is unpacked here
    archives = work / "var" / "cache" / "apt" / "archives"
    for deb in sorted(archives.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work)], check=True, capture_output=True)  # nosec B603 B607
        deb.unlink()
    shutil.rmtree(work / "debootstrap", ignore_errors=True)
    if not (work / "usr" / "bin" / f"python{PYTHON}").is_file():
        shutil.rmtree(work, ignore_errors=True)
        raise TargetUnavailable(f"Debian's arm64 {SUITE} gave no python{PYTHON}: rerun with --refresh")
    os.rename(work, tree)
    return tree


def _host_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        raise TargetUnavailable(f"{dist} is not installed here: pip install {dist}") from None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _installed(folder: Path, requirements: list[str], platform_wheels: bool) -> Path:
    """`requirements` installed by this machine's pip into `folder` (for the emulated Python), once."""
    if (folder / ".edgenlp-complete").is_file():
        return folder
    work = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    cross = ["--python-version", PYTHON, "--implementation", "cp", "--abi", f"cp{PYTHON.replace('.', '')}"]
    cross += [flag for p in PLATFORMS for flag in ("--platform", p)]
    pinned = [*cross, "--only-binary=:all:"] if platform_wheels else ["--no-deps"]
    done = subprocess.run(  # nosec B603
        [sys.executable, "-m", "pip", "install", "-q", "--no-compile", "--target", str(work), *pinned, *requirements],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        last = next((ln for ln in reversed(done.stderr.splitlines()) if ln.strip()), "no output")
        raise TargetUnavailable(
            f"pip could not fetch the aarch64 wheels of {' '.join(requirements)} ({last.strip()}): check the "
            "network to the package index"
        )
    (work / ".edgenlp-complete").write_text(json.dumps(requirements))
    os.rename(work, folder)
    return folder


def runtime_source(given: Path | None = None) -> tuple[Path, str]:
    """What edgenlp-runtime the target gets: (a given wheel, or this checkout's runtime-wheel/ folder) and
    its digest, which names the installed copy and tells an earlier check whether it ran the same code."""
    if given is None and os.environ.get("EDGENLP_RUNTIME_WHEEL"):
        given = Path(os.environ["EDGENLP_RUNTIME_WHEEL"])
    if given is not None:
        if not given.is_file() or given.suffix != ".whl":
            raise TargetUnavailable(f"{given} is not a wheel file: pass an edgenlp_runtime-*.whl")
        return given, hashlib.sha256(given.read_bytes()).hexdigest()[:16]
    project = Path(__file__).resolve().parents[2]
    recipe = project / "runtime-wheel" / "pyproject.toml"
    if not recipe.is_file():
        raise TargetUnavailable(
            "no edgenlp-runtime wheel to install on the target: this edgenlp is not a checkout with "
            "runtime-wheel/; set EDGENLP_RUNTIME_WHEEL to an edgenlp_runtime-*.whl"
        )
    sources = sorted((project / "edgenlp" / "runtime").rglob("*.py")) + [recipe]
    return recipe.parent, _digest("".join(p.relative_to(project).as_posix() + p.read_text() for p in sources))


def _runtime_wheel(given: Path | None) -> tuple[Path, str]:
    """The edgenlp-runtime wheel to install (a given one, or one built from this checkout) and its digest."""
    source, digest = runtime_source(given)
    if source.is_file():
        return source, digest
    built = root() / "wheels" / digest
    found = sorted(built.glob("edgenlp_runtime-*.whl")) if built.is_dir() else []
    if found:
        return found[0], digest
    work = built.with_name(f".{digest}.partial-{os.getpid()}")
    done = subprocess.run(  # nosec B603
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        last = next((ln for ln in reversed(done.stderr.splitlines()) if ln.strip()), "no output")
        raise TargetUnavailable(f"could not build the edgenlp-runtime wheel from {source}: {last.strip()}")
    _drop_older(built.parent)
    os.rename(work, built)
    return sorted(built.glob("edgenlp_runtime-*.whl"))[0], digest


def _drop_older(folder: Path, prefix: str = "") -> None:
    """Remove earlier builds edgenlp made under `folder` (the runtime changes with every edit of a checkout)."""
    if folder.is_dir():
        for old in folder.iterdir():
            if old.is_dir() and old.name.startswith(prefix) and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
