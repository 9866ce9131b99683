"""Benchmark: the GPU check that fits one short lease (one command, <= 8 minutes on one H100-class GPU).

    python bench/gpu.py                         # on a CUDA machine with the vllm extra (or the CUDA image)
    python bench/gpu.py --parts generate,train  # a subset, e.g. to rerun one part
    python bench/gpu.py                         # on a CPU: the same code paths at tiny sizes (~2-5 min)

Prints, in one run (and writes them to --out, JSON):

1. generate: samples/s of the generate step with `generate.backend: transformers` and `vllm` on the same
   prompts (SmolLM2-135M-Instruct, `model.base: smollm2-135m-instruct`; same sampling settings and per-row
   seeds), decoding alone (the step's `seconds`) and the whole step. Anchor: vLLM ~1.9x a static-batch HF loop
   on the same GPU (vllm#4702).
2. train: the train step's tokens/s and model FLOPs utilisation in bf16 with ZeRO-2 (one rank, torchrun, as
   the step runs it) on a ~0.57B-parameter Llama built from a config (random init: MFU needs no trained
   weights), MFU = (6N + 12*L*h*T) x tokens/s / peak (nanochat's accounting), in the steady state (a 10- and
   a 50-step run, differenced). Anchor: 38-46 % on H100-class GPUs (nanochat, Llama 3).
3. loop: one loop iteration of the real model on the GPU (`flywheel run` of examples/smollm2.yaml, iterations
   1: prepare, init model, evaluate 0, prompts, generate, verify, curate, train, evaluate), with each step's
   seconds (decoding on transformers by default: --loop-backend).

Every part runs in its own process (`flywheel ...` subcommands, as the pipeline's pods do): vLLM keeps most
of the GPU's memory until its process exits. On a machine without a CUDA GPU it runs the same commands on the
embedded tiny model in fp32: it checks the code paths and says that the GPU figures are not measured. Record the GPU figures in docs/deploy.md and docs/recipes.md with the date and the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0,
               "L40S": 362.0, "L4": 121.0, "A10": 125.0}  # bf16 dense, vendor data sheets

# The ~0.57B Llama of part 2: 20 layers x 1536 wide, 12 heads of 128, MLP 4096; the embedded character
# tokenizer keeps the embeddings negligible, so N is the transformer's weights. T = 512 tokens per row.
BIG = {"hidden_size": 1536, "intermediate_size": 4096, "num_hidden_layers": 20, "num_attention_heads": 12,
       "max_position_embeddings": 640}
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "max_position_embeddings": 160}


def flywheel(*args: str, log: Path) -> float:
    """Run `flywheel ARGS` in its own process (this interpreter); seconds; its output goes to `log`."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, "-m", "flywheel", *args], stdout=f, stderr=subprocess.STDOUT,
                            cwd=ROOT).returncode
    if rc:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"bench/gpu.py: `flywheel {' '.join(args[:1])}` exited {rc}; the end of {log}:\n{tail}")
    return time.perf_counter() - t0


def write_config(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def part_generate(d: Path, gpu: bool, args) -> dict:
    """Both backends on one prompts table: the same model folder, sampling settings and per-row seeds."""
    from flywheel.steps.vllm_backend import select_backend

    base = args.model if gpu else "embedded"
    cfg = {"model": {"base": base, "embedded": {**TINY, "warmup_steps": 20}},
           "task": {"params": {"width": 3, "seed_digits": 1, "seed_size": 64}},
           "generate": {"prompts_per_iteration": args.prompts if gpu else 32, "samples_per_prompt": 8,
                        "max_new_tokens": 64 if gpu else 8, "temperature": 0.8, "batch_size": 512},
           "gates": {"enabled": False}}
    cfg_path = write_config(d / "generate.yaml", cfg)
    _prepare(cfg_path, d)
    flywheel("prompts", str(cfg_path), "--iteration", "1", "--out", str(d / "prompts.parquet"), log=d / "prompts.log")
    backends = ["transformers"]
    why_not = None
    try:
        if select_backend("vllm", d / "model")[0] == "vllm":
            backends.append("vllm")
    except ValueError as err:
        why_not = str(err)
    out = {"model": base, "prompts": cfg["generate"]["prompts_per_iteration"], "samples_per_prompt": 8,
           "max_new_tokens": cfg["generate"]["max_new_tokens"], "backends": {}}
    for backend in backends:
        wall = flywheel("generate", str(cfg_path), "--model", str(d / "model"), "--prompts", str(d / "prompts.parquet"),
                        "--out", str(d / f"samples-{backend}.parquet"), "--iteration", "1",
                        "--metrics", str(d / f"generate-{backend}.json"), "--set", f"generate.backend={backend}",
                        log=d / f"generate-{backend}.log")
        m = json.loads((d / f"generate-{backend}.json").read_text())
        assert m["backend"] == backend, m["backend_reason"]
        out["backends"][backend] = {"samples": m["samples"], "decode_s": m["seconds"],
                                    "samples_per_s": round(m["samples"] / m["seconds"], 1),
                                    "tokens_per_s": m["tokens_per_second"], "step_s": round(wall, 1),
                                    "mean_completion_tokens": round(m["new_tokens"] / m["samples"], 2)}
    if "vllm" in out["backends"]:
        hf, vl = out["backends"]["transformers"], out["backends"]["vllm"]
        out["vllm_over_transformers"] = round(vl["samples_per_s"] / hf["samples_per_s"], 2)
    else:
        out["vllm_not_measured"] = why_not or "vLLM is not selectable here"
    return out


def _prepare(cfg_path: Path, d: Path) -> None:
    flywheel("prepare", str(cfg_path), "--seed-set", str(d / "seed.parquet"), "--eval-set", str(d / "eval.parquet"),
             log=d / "prepare.log")
    flywheel("init-model", str(cfg_path), "--seed-set", str(d / "seed.parquet"), "--out", str(d / "model"),
             log=d / "init-model.log")


def part_train(d: Path, gpu: bool, args) -> dict:
    """The train step, ZeRO-2 on one torchrun rank, on rows of T tokens (prompt + completion characters).

    Two runs, a short and a long one: the step's `seconds` includes DeepSpeed's engine set-up and the first
    steps' allocations, so tokens/s and MFU come from the difference of the two (the steady state)."""
    import pandas as pd
    import torch

    from flywheel.config import parse_config
    from flywheel.io import write_table
    from flywheel.model import count_parameters, load_model, save_embedded_base

    shape = BIG if gpu else TINY
    t_len = 512 if gpu else 128  # tokens per row: one character each, plus EOS
    (short, long_), batch = ((10, 10 + args.train_steps), 32) if gpu else ((2, 4), 4)
    base = save_embedded_base(parse_config({"model": {"embedded": shape}}), d / "big-model")
    n_params = count_parameters(load_model(base)[0])
    rng = torch.Generator().manual_seed(0)
    digits = torch.randint(0, 10, (batch * long_, t_len - 1), generator=rng).tolist()
    half = (t_len - 1) // 2
    rows = pd.DataFrame([{"prompt": "".join(map(str, r[:half])), "completion": "".join(map(str, r[half:]))}
                         for r in digits])
    write_table(rows, d / "rows.parquet")
    runs = {}
    for steps in (short, long_):
        train = {"max_steps": steps, "batch_size": batch, "learning_rate": 1e-4, "deepspeed": "zero2",
                 "precision": "bf16" if gpu else "fp32", "save_steps": 0, "warmup_ratio": 0.0}
        cfg_path = write_config(d / f"train-{steps}.yaml", {"model": {"embedded": shape}, "train": train})
        wall = flywheel("train", str(cfg_path), "--model", str(base), "--data", str(d / "rows.parquet"),
                        "--out", str(d / f"out-{steps}"), "--metrics", str(d / f"train-{steps}.json"),
                        log=d / f"train-{steps}.log")
        runs[steps] = (json.loads((d / f"train-{steps}.json").read_text()), wall)
    (m0, _), (m, wall) = runs[short], runs[long_]
    # The steady state is the difference of the two runs; on a CPU at tiny sizes the two take about as
    # long (set-up dominates, timings are noisy), so a difference under 1 s falls back to the whole run.
    dt, dtok = m["seconds"] - m0["seconds"], m["tokens"] - m0["tokens"]
    steady = dt >= 1.0 and dtok > 0
    tps = dtok / dt if steady else m["tokens_per_second"]
    flop_per_token = 6 * n_params + 12 * shape["num_hidden_layers"] * shape["hidden_size"] * t_len
    out = {"parameters": n_params, "layers": shape["num_hidden_layers"], "hidden": shape["hidden_size"],
           "tokens_per_row": t_len, "steps": [m0["steps"], m["steps"]], "batch": batch, "precision": m["precision"],
           "zero_stage": m["zero_stage"], "world_size": m["world_size"], "train_s": [m0["seconds"], m["seconds"]],
           "step_s": round(wall, 1), "tokens": m["tokens"], "tokens_per_s": round(tps, 1),
           "tokens_per_s_from": "difference of the two runs (steady state)" if steady else "the whole long run",
           "tokens_per_s_whole_run": m["tokens_per_second"], "loss_first": round(m["loss_first"], 4),
           "loss": round(m["loss"], 4)}
    if gpu:
        peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in torch.cuda.get_device_name()), None)
        if peak:
            out["peak_tflops"] = peak
            out["mfu_percent"] = round(100 * flop_per_token * tps / (peak * 1e12), 1)
        else:
            out["mfu_not_computed"] = f"unknown peak for {torch.cuda.get_device_name()}: pass --peak-tflops"
    return out


def part_loop(d: Path, gpu: bool, args) -> dict:
    """One iteration of the loop through the pipeline (kfp.local), every step its own process."""
    if gpu:
        config, sets = args.loop_config, [f"model.base={args.model}", "iterations=1",
                                          f"generate.backend={args.loop_backend}"]
    else:
        config = str(write_config(d / "loop.yaml", {
            "iterations": 1, "model": {"embedded": {**TINY, "warmup_steps": 30}},
            "task": {"params": {"width": 3, "seed_digits": 1, "seed_size": 64}},
            "generate": {"prompts_per_iteration": 16, "samples_per_prompt": 2, "max_new_tokens": 6},
            "train": {"max_steps": 3, "batch_size": 8}, "evaluate": {"per_difficulty": 4},
            "gates": {"enabled": False}, "tracking": {"wandb": "disabled"}, "data": {"store": False}}))
        sets = []
    args_ = ["run", config, "--out", str(d / "loop")] + [x for s in sets for x in ("--set", s)]
    wall = flywheel(*args_, log=d / "loop.log")
    summary = json.loads((d / "loop" / "summary.json").read_text())
    last = summary["iterations"][-1]
    return {"config": config, "wall_s": round(wall, 1), "step_s": last.get("durations", {}),
            "accuracy": [it.get("evaluate", {}).get("accuracy") for it in summary["iterations"]],
            "generate_backend": last.get("generate", {}).get("backend")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="generate,train,loop", help="comma-separated: generate, train, loop")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="model.base of parts 1 and 3 on a GPU")
    ap.add_argument("--prompts", type=int, default=512, help="part 1 on a GPU: prompts (x 8 samples)")
    ap.add_argument("--train-steps", type=int, default=40, help="part 2 on a GPU: steps of 32 rows measured (after 10)")
    ap.add_argument("--loop-config", default=str(ROOT / "examples" / "smollm2.yaml"),
                    help="part 3 on a GPU: the run config of the real model (one iteration)")
    ap.add_argument("--loop-backend", default="transformers", choices=["transformers", "auto", "vllm"],
                    help="part 3's generate.backend: vLLM's engine start (~1 min per decoding step, 3 of them) "
                         "does not fit the 8 minutes; part 1 measures vLLM")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="GPU bf16 dense peak for MFU (default: by name)")
    ap.add_argument("--out", default="bench-gpu.json", help="where the figures go (JSON)")
    args = ap.parse_args()

    import torch

    gpu = torch.cuda.is_available()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"generate", "train", "loop"}
    if unknown:
        ap.error(f"--parts: unknown part(s) {', '.join(sorted(unknown))}; choose from generate, train, loop")
    device = torch.cuda.get_device_name() if gpu else "CPU (no CUDA GPU)"
    print(f"bench/gpu.py on {device}; torch {torch.__version__}", flush=True)
    if not gpu:
        print("CPU mode: the same code paths at tiny sizes; the GPU figures (vLLM vs transformers, MFU, the real "
              "model's iteration) are NOT measured here.", flush=True)
    results: dict = {"device": device, "gpu": gpu, "date": time.strftime("%Y-%m-%d"),
                     "measured": "GPU figures" if gpu else "code paths only, not GPU figures"}
    env_before = dict(os.environ)
    os.environ.setdefault("WANDB_MODE", "disabled")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        for part in parts:
            d = Path(tmp) / part
            d.mkdir()
            t = time.perf_counter()
            results[part] = {"generate": part_generate, "train": part_train, "loop": part_loop}[part](d, gpu, args)
            results[part]["part_s"] = round(time.perf_counter() - t, 1)
            print(f"\n[{part}] {json.dumps(results[part], indent=1)}", flush=True)
    os.environ.clear()
    os.environ.update(env_before)
    results["total_s"] = round(time.perf_counter() - t0, 1)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"\nsummary ({device}, {results['total_s']} s; figures in {args.out}):")
    if "generate" in results:
        g = results["generate"]
        for b, r in g["backends"].items():
            print(f"  generate {b:12} {r['samples_per_s']:>10,.1f} samples/s  ({r['tokens_per_s']:,.0f} tok/s)")
        print(f"  vllm / transformers: {g.get('vllm_over_transformers', 'not measured: ' + g.get('vllm_not_measured', ''))}"
              "   (anchor ~1.9x, vllm#4702)")
    if "train" in results:
        tr = results["train"]
        print(f"  train {tr['parameters'] / 1e6:,.2f}M params, {tr['precision']}, ZeRO-{tr['zero_stage']}: "
              f"{tr['tokens_per_s']:,.0f} tokens/s ({tr['tokens_per_s_from']}); MFU {tr.get('mfu_percent', 'not measured (CPU)' if not gpu else tr.get('mfu_not_computed'))}"
              "   (anchor 38-46 % on H100-class)")
    if "loop" in results:
        lo = results["loop"]
        print(f"  loop: one iteration in {lo['wall_s']} s, accuracy {lo['accuracy']}, generate on {lo['generate_backend']}")
    if not gpu:
        print("GPU figures: not measured (no CUDA GPU here).")


if __name__ == "__main__":
    main()
