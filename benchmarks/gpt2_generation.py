"""GPT-2 generation speed: edgenlp's variants against PyTorch eager and the peers, side by side in one run.

    python benchmarks/gpt2_generation.py [--recipe recipes/gpt2-small-speed.yaml] [--out runs/gpt2-small-speed]
                                         [--peers optimum,ctranslate2,openvino] [--generations 16] [--rounds 8]

Builds (or reuses) the recipe's variants (by default GPT-2 small's architecture with seeded random
weights: speed only), then the peers from the same checkpoint: Optimum's ORTModelForCausalLM
export, FP32 and dynamic INT8 (ORTQuantizer, the preset for this CPU), run through Optimum's
wrapper and, for INT8, also in a plain onnxruntime loop; CTranslate2 int8 when it is installed; OpenVINO
as Optimum Intel builds it (stateful, INT8 weight compression: `benchmarks/openvino_peer.py`); llama.cpp
Q8_0, Q4_0 and Q4_K_M made by its own converter and quantiser (`benchmarks/llamacpp_peer.py`). One
harness run measures everything (fresh process each, interleaved rounds): a 128-token prompt of
real text, 128 new tokens greedy with no early stop, batch 1, 1 and 2 threads; PyTorch eager also
without its cache. Prints decode tokens/s, time to first token and the bandwidth share, the fastest
edgenlp variant's speed-up over PyTorch and over the fastest peer with 95% intervals paired by
round, and saves the summary to `benchmarks/results/<name>.json`. A recipe with pruned variants
(`onnx-int8-pruned-*`, e.g. recipes/gpt2-bbc-pruned.yaml) also gets their decode speed against
the unpruned INT8 and their perplexity against FP32.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(ROOT), str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH")])
)

import record  # noqa: E402  (benchmarks/record.py)

from edgenlp import models, pipeline  # noqa: E402
from edgenlp import recipe as recipe_module
from edgenlp.artifact import copy_support_files  # noqa: E402
from edgenlp.bench import stats  # noqa: E402
from edgenlp.bench.harness import Candidate, measure  # noqa: E402
from edgenlp.fsio import FolderLock  # noqa: E402
from edgenlp.hardware import cpu_info  # noqa: E402


def build_optimum(checkpoint: Path, out: Path) -> tuple[Path, Path]:
    """Optimum's documented path: ORTModelForCausalLM export with the cache, then ORTQuantizer dynamic INT8."""
    fp32, int8 = out / "optimum-fp32", out / "optimum-int8"
    if not (fp32 / "model.onnx").exists():
        from optimum.onnxruntime import ORTModelForCausalLM

        partial = out / ".optimum-fp32.partial"
        shutil.rmtree(partial, ignore_errors=True)
        ORTModelForCausalLM.from_pretrained(str(checkpoint), export=True, use_cache=True).save_pretrained(str(partial))
        copy_support_files(checkpoint, partial)
        partial.rename(fp32)
    if not any(int8.glob("*.onnx")):
        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig

        isa = cpu_info().isa
        preset = (
            AutoQuantizationConfig.avx512_vnni
            if "vnni" in isa
            else (AutoQuantizationConfig.avx512 if isa == "avx512" else AutoQuantizationConfig.avx2)
        )
        partial = out / ".optimum-int8.partial"
        shutil.rmtree(partial, ignore_errors=True)
        ORTQuantizer.from_pretrained(str(fp32)).quantize(
            save_dir=str(partial), quantization_config=preset(is_static=False, per_channel=False)
        )
        copy_support_files(fp32, partial)
        partial.rename(int8)
    return fp32, int8


def build_ctranslate2(checkpoint, out: Path) -> Path | None:
    """CTranslate2's converter with its default int8 weights, as its users run it: edgenlp's ctranslate2 stage
    (the same converter and CTranslate2's own decoding loop), into the peers folder."""
    from edgenlp.runtime import engines

    if not engines.get("ctranslate2").installed():
        print("ctranslate2 is not installed: measured without it (pip install -e '.[ctranslate2]')")
        return None
    from edgenlp.stages import ctranslate2

    if not (out / "ctranslate2" / "model.bin").exists():
        partial = out.with_name(f".{out.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        ctranslate2.run(checkpoint, ctranslate2.Config(compute_type="int8"), partial)
        shutil.rmtree(out, ignore_errors=True)  # an earlier layout of this peer folder
        partial.rename(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "gpt2-small-speed.yaml"))
    parser.add_argument("--out", default=None)
    parser.add_argument("--peers", default="optimum,ctranslate2,openvino,llamacpp", help="comma-separated, or 'none'")
    parser.add_argument("--llamacpp-quants", default="q8_0,q4_0,q4_k_m", help="llama.cpp quantisations to measure")
    parser.add_argument("--generations", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--name", default="gpt2_generation", help="results file name under benchmarks/results/")
    parser.add_argument("--build-only", action="store_true", help="build the variants and peers, measure nothing")
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated variants or peers to build but not measure (every measured one keeps a process "
        "with its model alive through the rounds: GPT-2 small's FP32 graphs take ~1.5 GB each)",
    )
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="summarise the run folder's results.json again (after a change to this summary), measure nothing",
    )
    args = parser.parse_args()

    recipe = recipe_module.load(args.recipe)
    updates = {k: v for k, v in {"generations": args.generations, "rounds": args.rounds}.items() if v}
    if updates:
        recipe = recipe.model_copy(update={"bench": recipe.bench.model_copy(update=updates)})
    out = Path(args.out or ROOT / "runs" / recipe.name)
    source = models.resolve(recipe.model)
    task = pipeline.task_of(recipe, source)
    dataset = task.load_data(recipe.data)
    with FolderLock(out):
        variants, _ = pipeline.build_variants(recipe, out, dataset, source, task)
        # The recipe's PyTorch reference: a fine-tuned variant if it has one, else the source itself.
        pytorch = next((a for a in variants.values() if a.format == "pytorch"), source)
        candidates = [
            Candidate("pytorch-fp32-eager", pytorch.path, "pytorch", {"format": "pytorch", "precision": "fp32"})
        ]
        candidates += [c for c in pipeline.candidates_of(variants) if c.runner != "pytorch"]
        peers = []
        if "optimum" in args.peers:
            fp32, int8 = build_optimum(pytorch.path, out / "peers")
            peers += [
                Candidate(
                    "optimum-fp32",
                    fp32,
                    "optimum_runner:OptimumCausalLM",
                    {"format": "onnx", "precision": "fp32", "peer": "optimum"},
                ),
                Candidate(
                    "optimum-int8",
                    int8,
                    "optimum_runner:OptimumCausalLM",
                    {"format": "onnx", "precision": "int8", "peer": "optimum"},
                ),
                Candidate(
                    "optimum-int8-plain-ort",
                    int8,
                    "onnx",
                    {"format": "onnx", "precision": "int8", "peer": "optimum graph, edgenlp loop"},
                ),
            ]
        if "openvino" in args.peers:
            import openvino_peer  # noqa: E402  (benchmarks/openvino_peer.py)

            fp32, _ = build_optimum(pytorch.path, out / "peers")
            ov_int8 = openvino_peer.build(fp32, out / "peers" / "openvino-int8-stateful")
            peers.append(
                Candidate(
                    "openvino-int8-stateful",
                    ov_int8,
                    "openvino_peer:OpenVINOStatefulCausalLM",
                    {"format": "openvino", "precision": "int8", "peer": "openvino (as optimum-intel)"},
                )
            )
        if "ctranslate2" in args.peers:
            ct2 = build_ctranslate2(pytorch, out / "peers" / "ctranslate2-int8")
            if ct2 is not None:
                peers.append(
                    Candidate(
                        "ctranslate2-int8",
                        ct2,
                        "ctranslate2",
                        {"format": "ctranslate2", "precision": "int8", "peer": "ctranslate2"},
                    )
                )
        if "llamacpp" in args.peers:
            import llamacpp_peer  # noqa: E402  (benchmarks/llamacpp_peer.py)

            if not llamacpp_peer.installed():
                print("llama-cpp-python is not installed: measured without it (pip install -e '.[llamacpp-peer]')")
            else:
                for quant in args.llamacpp_quants.split(","):
                    peers.append(
                        Candidate(
                            f"llamacpp-{quant}",
                            llamacpp_peer.build(pytorch.path, out / "peers", quant),
                            "llamacpp_peer:LlamaCppCausalLM",
                            {"format": "gguf", "precision": quant, "peer": "llama.cpp"},
                        )
                    )
        if args.build_only:
            print("built:", ", ".join(c.name for c in candidates + peers))
            return
        skipped = set(filter(None, args.skip.split(",")))
        unknown = skipped - {c.name for c in candidates + peers}
        if unknown:
            raise SystemExit(f"--skip names {sorted(unknown)[0]!r}, which is neither a variant nor a peer of this run")
        candidates = [c for c in candidates if c.name not in skipped]
        peers = [c for c in peers if c.name not in skipped]
        if args.summary_only:
            results = json.loads((out / "results.json").read_text())
        else:
            settings = recipe.bench.model_copy(update={"reference": "pytorch-fp32-eager"})
            results = measure(candidates + peers, task.eval_set(dataset), settings, out / "bench")
            results["run"] = {
                "recipe": recipe.name,
                "model": recipe.model_dump(mode="json")["model"],
                "task": task.NAME,
                "data": dataset.describe(),
            }
            pipeline.publish(results, out, recipe.selection)

    by = {v["name"]: v for v in results["variants"]}
    peer_names = [p.name for p in peers]
    ours = [c.name for c in candidates[1:]]
    summary: dict = {
        "measured": results["created"],
        "model": results["run"]["model"],
        "weights": "seeded random (speed only)" if "random" in str(results["run"]["model"]) else "trained",
        "profiles": {},
    }
    print(f"\n{'variant':<24} {'profile':<10} {'decode tok/s':>12} {'tokens/s':>9} {'TTFT ms':>8} {'bandwidth':>9}")
    for p in results["profiles"]:
        name = p["name"]
        rows = {}
        for v in results["variants"]:
            prof, lat = v["profiles"][name], v["latency_ms"][name]
            rows[v["name"]] = {
                "decode_tokens_per_s": prof["decode_tokens_per_s"],
                "tokens_per_s": prof["tokens_per_s"],
                "ttft_ms_p50": lat["ttft"]["p50"],
                "decode_ms_p50": lat["decode"]["p50"],
                "decode_ms_p90": lat["decode"]["p90"],
                "bandwidth_share": prof.get("bandwidth_share"),
                "no_cache_tokens_per_s": (prof.get("no_cache") or {}).get("tokens_per_s"),
                "size_mb": v["size_bytes"] / 1e6,
                "peak_rss_mib": prof["peak_rss_bytes"] / 2**20,
                "top1_agreement": v["metrics"].get("top1_agreement"),
                "kl_mean": v["metrics"].get("kl_mean"),
            }
            share = prof.get("bandwidth_share")
            print(
                f"{v['name']:<24} {name:<10} {prof['decode_tokens_per_s']:>12.1f} {prof['tokens_per_s']:>9.1f} "
                f"{lat['ttft']['p50']:>8.1f} {'-' if share is None else f'{100 * share:.0f}%':>9}"
            )
        best = max(ours, key=lambda n: rows[n]["decode_tokens_per_s"])
        samples = {n: by[n]["latency_samples_ms"][name] for n in by}
        cell = {
            "rows": rows,
            "fastest_edgenlp": best,
            "edgenlp_vs_pytorch_decode": stats.speedup(
                samples["pytorch-fp32-eager"]["decode"], samples[best]["decode"]
            ),
            "edgenlp_vs_pytorch_tokens_per_s": rows[best]["tokens_per_s"] / rows["pytorch-fp32-eager"]["tokens_per_s"],
        }
        if peer_names:
            fastest_peer = max(peer_names, key=lambda n: rows[n]["decode_tokens_per_s"])
            first_peer = min(peer_names, key=lambda n: rows[n]["ttft_ms_p50"])
            cell.update(
                fastest_peer=fastest_peer,
                edgenlp_vs_fastest_peer_decode=stats.speedup(samples[fastest_peer]["decode"], samples[best]["decode"]),
                edgenlp_vs_fastest_peer_tokens_per_s=rows[best]["tokens_per_s"] / rows[fastest_peer]["tokens_per_s"],
                fastest_peer_ttft_ms=rows[first_peer]["ttft_ms_p50"],
                edgenlp_ttft_ms=rows[best]["ttft_ms_p50"],
            )
            # the three speed targets together: the fastest edgenlp decoder that starts no later than the best peer
            prompt_ready = [n for n in ours if rows[n]["ttft_ms_p50"] <= rows[first_peer]["ttft_ms_p50"]]
            if prompt_ready:
                pick = max(prompt_ready, key=lambda n: rows[n]["decode_tokens_per_s"])
                cell["fastest_within_peer_ttft"] = {
                    "variant": pick,
                    "ttft_ms": rows[pick]["ttft_ms_p50"],
                    "vs_pytorch_decode": stats.speedup(
                        samples["pytorch-fp32-eager"]["decode"], samples[pick]["decode"]
                    ),
                    "vs_fastest_peer_decode": stats.speedup(samples[fastest_peer]["decode"], samples[pick]["decode"]),
                    "vs_fastest_peer_ttft": stats.speedup(samples[first_peer]["ttft"], samples[pick]["ttft"]),
                }
        summary["profiles"][name] = cell
        d = cell["edgenlp_vs_pytorch_decode"]
        print(
            f"[{name}] fastest edgenlp variant {best}: decode {d['ratio']:.2f}x PyTorch eager "
            f"[{d['ci'][0]:.2f}-{d['ci'][1]:.2f}]",
            end="",
        )
        if peer_names:
            q = cell["edgenlp_vs_fastest_peer_decode"]
            print(
                f", {q['ratio']:.2f}x the fastest peer {cell['fastest_peer']} [{q['ci'][0]:.2f}-{q['ci'][1]:.2f}]; "
                f"TTFT {cell['edgenlp_ttft_ms']:.0f} ms vs best peer {cell['fastest_peer_ttft_ms']:.0f} ms"
            )
        else:
            print()
        within = cell.get("fastest_within_peer_ttft")
        if within:
            a, b, c = within["vs_pytorch_decode"], within["vs_fastest_peer_decode"], within["vs_fastest_peer_ttft"]
            print(
                f"[{name}] fastest edgenlp variant starting no later than the best peer: {within['variant']}: decode "
                f"{a['ratio']:.2f}x PyTorch [{a['ci'][0]:.2f}-{a['ci'][1]:.2f}], {b['ratio']:.2f}x the fastest peer "
                f"[{b['ci'][0]:.2f}-{b['ci'][1]:.2f}], TTFT {within['ttft_ms']:.0f} ms, {c['ratio']:.2f}x as fast as the best "
                f"peer's [{c['ci'][0]:.2f}-{c['ci'][1]:.2f}]"
            )
    ref_size = by["pytorch-fp32-eager"]["size_bytes"]
    summary["fidelity"] = {
        name: {
            "perplexity": {k: st["perplexity"] for k, st in v["metrics"]["streams"].items()},
            "perplexity_increase_pct": {
                k: 100 * (st["perplexity_ratio"] - 1) for k, st in v["metrics"]["streams"].items()
            },
            "kl_mean": v["metrics"].get("kl_mean"),
            "kl_p99": v["metrics"].get("kl_p99"),
            "top1_agreement": v["metrics"].get("top1_agreement"),
            "greedy_identical": v["metrics"]["greedy_identical"],
            "size_mb": v["size_bytes"] / 1e6,
            "size_vs_pytorch_fp32": v["size_bytes"] / ref_size,
        }
        for name, v in by.items()
    }
    summary["eval"] = results["eval"]["streams"]
    print(f"\n{'variant':<24} {'ppl':>9} {'Δppl %':>8} {'mean KL':>8} {'top-1':>7} {'greedy':>7} {'size %':>7}")
    for name, f in summary["fidelity"].items():
        primary = next(iter(f["perplexity"]))
        print(
            f"{name:<24} {f['perplexity'][primary]:>9.2f} {f['perplexity_increase_pct'][primary]:>+8.2f} "
            f"{f['kl_mean'] or 0:>8.4f} {100 * (f['top1_agreement'] or 1):>6.1f}% {100 * f['greedy_identical']:>6.0f}% "
            f"{100 * f['size_vs_pytorch_fp32']:>6.1f}%"
        )
    pruned = [n for n in by if n.startswith("onnx-int8-pruned-")]
    if pruned and "onnx-int8" in by:
        # Targets: >= 1.3x the unpruned INT8's decode tokens/s, perplexity at most 10% above FP32 after recovery.
        summary["pruning"] = {}
        print("\npruned + recovered + INT8 against the unpruned INT8 (decode tokens/s, paired by round):")
        for name in pruned:
            cell = {
                "perplexity_increase_pct": summary["fidelity"][name]["perplexity_increase_pct"],
                "size_vs_unpruned_int8": by[name]["size_bytes"] / by["onnx-int8"]["size_bytes"],
                "decode_vs_unpruned_int8": {},
            }
            for p in results["profiles"]:
                ratio = stats.speedup(
                    by["onnx-int8"]["latency_samples_ms"][p["name"]]["decode"],
                    by[name]["latency_samples_ms"][p["name"]]["decode"],
                )
                cell["decode_vs_unpruned_int8"][p["name"]] = ratio
                print(
                    f"  {name:<24} {p['name']:<10} {ratio['ratio']:.2f}x [{ratio['ci'][0]:.2f}-{ratio['ci'][1]:.2f}]; "
                    "perplexity " + ", ".join(f"{k} {v:+.1f}%" for k, v in cell["perplexity_increase_pct"].items())
                )
            summary["pruning"][name] = cell
    summary["memory_bandwidth"] = {
        p["name"]: results["variants"][0]["profiles"][p["name"]]["memory_bandwidth"] for p in results["profiles"]
    }
    summary["report"] = str((out / "report.md").relative_to(ROOT)) if ROOT in out.parents else str(out / "report.md")
    record.save(args.name, summary)


if __name__ == "__main__":
    main()
