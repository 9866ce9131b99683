"""Benchmark: the `train` step (1 process) against a plain PyTorch training loop doing the same work.

    python bench/train.py                       # the embedded demo model shape, 200 steps of 64 rows
    python bench/train.py --steps 300 --hidden 384 --layers 6 --heads 6     # a bigger model

One run, same model (the embedded Llama, random init), same rows (arithmetic prompt/completion pairs of
the demo's shape), same steps, batch, optimizer (AdamW), learning-rate schedule, precision (fp32 on CPU)
and loss (mean over completion tokens). Prints tokens/s of both and their ratio, three ways:

- loop:  the plain loop's training loop only (tokenized data in memory, model built);
- train: the step's `trainer.train()` only (what the step reports as `seconds`);
- step:  the whole step as the pipeline calls it: load model and tokenizer, tokenize, train, checkpoint
         every `train.save_steps`, save the model. Overhead = 1 - step / loop; goal < 20 %.

Tokens are the non-padding tokens of the batches (prompt and completion), counted on each side.
On a GPU it also prints model FLOPs utilisation (6N + 12*L*h*T FLOP per token, nanochat's accounting)
against the peak given with --peak-tflops (H100 SXM bf16 dense: 989).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from flywheel.config import parse_config
from flywheel.io import write_table
from flywheel.model import count_parameters, load_model, save_embedded_base
from flywheel.steps.train import train_model
from flywheel.tasks.arithmetic import Arithmetic


def plain_loop(model_dir: Path, rows: pd.DataFrame, steps: int, batch: int, lr: float, warmup: float,
               seed: int, device: str) -> tuple[int, float, float, float]:
    """AdamW on completion-only cross-entropy; returns (tokens, seconds, mean loss of the first and of the last
    steps/20 steps)."""
    model, tok = load_model(model_dir)
    model.to(device).train()
    eos, pad = tok.eos_token_id, tok.pad_token_id
    seqs = []
    for p, c in zip(rows["prompt"], rows["completion"]):
        prompt, completion = tok(p)["input_ids"], tok(c)["input_ids"] + [eos]
        seqs.append((prompt + completion, len(prompt)))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, fused=True)  # the Trainer's default
    n_warm = math.ceil(steps * warmup)

    def schedule(s):  # linear warmup, cosine decay: transformers' "cosine" schedule
        if s < n_warm:
            return s / max(1, n_warm)
        return 0.5 * (1 + math.cos(math.pi * (s - n_warm) / max(1, steps - n_warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(seqs), generator=g).tolist()
    tokens, losses, pos = 0, [], 0
    t0 = time.perf_counter()
    for _ in range(steps):
        if pos + batch > len(order):
            order, pos = torch.randperm(len(seqs), generator=g).tolist(), 0
        chunk = [seqs[i] for i in order[pos:pos + batch]]
        pos += batch
        width = max(len(s) for s, _ in chunk)
        ids = torch.full((len(chunk), width), pad)
        labels = torch.full((len(chunk), width), -100)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, (s, n_prompt) in enumerate(chunk):
            ids[r, :len(s)] = torch.tensor(s)
            labels[r, n_prompt:len(s)] = torch.tensor(s[n_prompt:])
            mask[r, :len(s)] = 1
        ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the Trainer's max_grad_norm: same algorithm
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(mask.sum())
        losses.append(loss.item())
    if device == "cuda":
        torch.cuda.synchronize()
    k = max(1, steps // 20)  # the step logs the mean loss of every steps/20 steps: compare like with like
    return tokens, time.perf_counter() - t0, sum(losses[:k]) / k, sum(losses[-k:]) / k


def matmul_gflops(n: int = 1024, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--save-steps", type=int, default=100, help="the step's checkpoint interval (0 = none)")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="TRL's default; ours is off")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--repeats", type=int, default=2, help="run both sides this many times, keep the fastest "
                    "(a shared machine's noise only ever slows a run down)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="GPU peak for MFU (H100 SXM bf16 dense)")
    args = ap.parse_args()

    cfg = parse_config({
        "model": {"embedded": {"hidden_size": args.hidden, "intermediate_size": 4 * args.hidden,
                               "num_hidden_layers": args.layers, "num_attention_heads": args.heads,
                               "max_position_embeddings": 32}},
        "train": {"max_steps": args.steps, "batch_size": args.batch_size, "learning_rate": 1e-3,
                  "save_steps": args.save_steps, "gradient_checkpointing": args.gradient_checkpointing},
    })
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = pd.DataFrame(Arithmetic(width=5, seed_digits=5, seed_size=args.rows).seed_set(0))
    loops, steps = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_embedded_base(cfg, tmp / "base")
        write_table(rows, tmp / "rows.parquet")
        n_params = count_parameters(load_model(tmp / "base")[0])
        t = cfg.train
        for _ in range(args.repeats):  # alternate, so that a burst of load elsewhere hits both sides alike
            loops.append(plain_loop(tmp / "base", rows, args.steps, args.batch_size, t.learning_rate,
                                    t.warmup_ratio, t.seed, device))
            t0 = time.perf_counter()
            m = train_model(tmp / "base", tmp / "rows.parquet", tmp / "out", cfg)
            steps.append((time.perf_counter() - t0, m))
    loop_tokens, loop_s, loop_first, loop_last = min(loops, key=lambda x: x[1])
    step_s, m = min(steps, key=lambda x: x[0])
    m_train = min((x[1] for x in steps), key=lambda x: x["seconds"])

    loop_tps, train_tps, step_tps = loop_tokens / loop_s, m_train["tokens"] / m_train["seconds"], m["tokens"] / step_s
    print(f"model: embedded Llama, {n_params / 1e6:.2f}M parameters, {args.layers} layers x {args.hidden}; "
          f"{args.steps} steps x {args.batch_size} rows; device {device}, {torch.get_num_threads()} threads; "
          f"precision {m['precision']}; fastest of {args.repeats} runs each")
    print(f"{'':26}{'tokens':>9}{'seconds':>9}{'tokens/s':>10}{'vs loop':>9}   loss first -> last")
    print(f"{'plain PyTorch loop':26}{loop_tokens:>9}{loop_s:>9.2f}{loop_tps:>10.0f}{1:>9.2f}   "
          f"{loop_first:.3f} -> {loop_last:.3f}")
    print(f"{'train step: train() only':26}{m_train['tokens']:>9}{m_train['seconds']:>9.2f}{train_tps:>10.0f}"
          f"{train_tps / loop_tps:>9.2f}   {m['loss_first']:.3f} -> {m['loss']:.3f}")
    print(f"{'train step: whole step':26}{m['tokens']:>9}{step_s:>9.2f}{step_tps:>10.0f}{step_tps / loop_tps:>9.2f}")
    print(f"overhead of the whole step vs the plain loop: {100 * (1 - step_tps / loop_tps):.1f} % (goal < 20 %); "
          f"of train() alone: {100 * (1 - train_tps / loop_tps):.1f} %")
    # 6N per token for forward + backward of the weights, + 12*L*h*T for attention (nanochat's accounting)
    flop_per_token = 6 * n_params + 12 * args.layers * args.hidden * 32
    if device == "cuda":
        print(f"MFU of the step's train(): {100 * flop_per_token * train_tps / (args.peak_tflops * 1e12):.1f} % "
              f"of {args.peak_tflops:.0f} TFLOP/s")
    else:
        print(f"CPU: {flop_per_token * train_tps / 1e9:.1f} GFLOP/s in train() vs a {matmul_gflops():.0f} GFLOP/s "
              f"fp32 matmul measured now")


if __name__ == "__main__":
    main()
