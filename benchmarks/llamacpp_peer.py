"""llama.cpp as a peer for GPT-2: GGUF files made by llama.cpp's own tools, run through its Python bindings.

    pip install -e '.[llamacpp-peer]'     # llama-cpp-python (built from its sdist here) and gguf

`build(checkpoint, out, quant)` converts the checkpoint with llama.cpp's `convert_hf_to_gguf.py` (taken
from the llama-cpp-python sdist of the installed version, which vendors the llama.cpp it was built
from) to F16, and quantises that with llama.cpp's own quantiser (`llama_model_quantize`) to Q8_0,
Q4_0 or Q4_K_M, as llama.cpp's users do. `LlamaCppCausalLM` is a harness runner: time to first token
and each token's decode come from one greedy loop over `Llama.eval` (the prompt in one batch,
then one token at a time, the next token picked by argmax over the last logits), the loop edgenlp's
runtime runs too; evaluation (perplexity, fidelity) reads every position's logits from a second
context opened with `logits_all`.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

QUANTS = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}


def installed() -> bool:
    try:
        importlib.metadata.version("llama-cpp-python")
        importlib.metadata.version("gguf")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def converter(tools: Path) -> Path:
    """llama.cpp's converter of the installed llama-cpp-python's version (its sdist, from the package index)."""
    script = tools / "convert_hf_to_gguf.py"
    if script.exists():
        return script
    version = importlib.metadata.version("llama-cpp-python")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(  # nosec B603 - pip from this interpreter, fixed arguments
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", tmp]
            + [f"llama-cpp-python=={version}"],
            check=True,
        )
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        partial = tools.with_name(f".{tools.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(sdist) as archive:
            root = f"llama_cpp_python-{version}/vendor/llama.cpp/"
            wanted = [
                m
                for m in archive.getmembers()
                if m.isfile()
                and (
                    m.name == root + "convert_hf_to_gguf.py"
                    or m.name.startswith((root + "gguf-py/", root + "conversion/"))
                )
            ]
            for member in wanted:
                member.name = member.name[len(root) :]
            archive.extractall(partial, members=wanted, filter="data")
        partial.rename(tools)
    return script


def build(checkpoint: Path, peers: Path, quant: str) -> Path:
    """`peers/llamacpp-<quant>/` (its GGUF file and the checkpoint's config) from a transformers GPT-2
    checkpoint, through `peers/llamacpp-f16/` (made once, reused)."""
    folder = peers / f"llamacpp-{quant}"
    if (folder / f"model-{quant}.gguf").exists():
        return folder
    f16 = peers / "llamacpp-f16" / "model-f16.gguf"
    if not f16.exists():
        script = converter(peers / "llama.cpp-tools")
        f16.parent.mkdir(parents=True, exist_ok=True)
        partial = f16.with_suffix(".partial")
        with tempfile.TemporaryDirectory() as staged:
            # the converter reads GPT-2's context from `n_ctx`, which newer transformers configs leave out
            for item in checkpoint.iterdir():
                if item.is_file() and item.name != "config.json":
                    (Path(staged) / item.name).symlink_to(item.resolve())
            config = json.loads((checkpoint / "config.json").read_text())
            config.setdefault("n_ctx", config.get("n_positions"))
            (Path(staged) / "config.json").write_text(json.dumps(config))
            subprocess.run(  # nosec B603 - llama.cpp's converter on a local checkpoint
                [sys.executable, str(script), staged, "--outfile", str(partial), "--outtype", "f16"], check=True
            )
        partial.rename(f16)
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTS[quant])
    partial = peers / f".llamacpp-{quant}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    target = partial / f"model-{quant}.gguf"
    if llama_cpp.llama_model_quantize(str(f16).encode(), str(target).encode(), params) != 0:
        raise RuntimeError(f"llama.cpp could not quantise {f16} to {quant}")
    shutil.copy(checkpoint / "config.json", partial / "config.json")  # the harness reads the context from it
    partial.rename(folder)
    return folder


class LlamaCppCausalLM:
    """A GGUF model (the folder's only `model-*.gguf`) as a harness decoder runner."""

    def __init__(self, path: Path, threads: int):
        from llama_cpp import Llama

        path = Path(path)
        self.gguf = next(path.glob("model-*.gguf")) if path.is_dir() else path
        config = json.loads((self.gguf.parent / "config.json").read_text())
        self.context = int(config.get("n_positions") or config.get("max_position_embeddings"))
        self.eos_id = config.get("eos_token_id")
        self.threads = threads
        self.llm = Llama(
            model_path=str(self.gguf),
            n_ctx=self.context,
            n_batch=self.context,  # its logits rows are as many as the batch: one per position of any context
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self._all = None

    def timed_generation(self, prompt: list[int], new_tokens: int) -> tuple[float, list[float]]:
        """(time to first token, each later token's time) in ms: greedy, no early stop."""
        llm, clock = self.llm, time.perf_counter_ns
        llm.reset()
        t0 = clock()
        llm.eval(prompt)
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        ttft = (clock() - t0) / 1e6
        per_token = []
        for _ in range(new_tokens - 1):
            t0 = clock()
            llm.eval([token])
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            per_token.append((clock() - t0) / 1e6)
        return ttft, per_token

    def step(self, ids: np.ndarray, past):
        """Every position's logits of `ids` after `past` (the count of tokens already read)."""
        if self._all is None:
            from llama_cpp import Llama

            self._all = Llama(
                model_path=str(self.gguf),
                n_ctx=self.context,
                n_batch=self.context,  # its logits rows are as many as the batch: one per position of any context
                n_threads=self.threads,
                n_threads_batch=self.threads,
                logits_all=True,
                verbose=False,
            )
        llm = self._all
        if past is None:
            llm.reset()
        elif past != llm.n_tokens:
            llm.n_tokens = past  # cut back: llama.cpp overwrites the cache from there
        tokens = [int(t) for t in ids[0]]
        start = llm.n_tokens
        llm.eval(tokens)
        return np.asarray(llm.scores[start : start + len(tokens)], dtype=np.float32)[None], llm.n_tokens

    def encode(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def decode_ids(self, ids: list[int]) -> str:
        return self.llm.detokenize(list(ids)).decode("utf-8", errors="replace")
