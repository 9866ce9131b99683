"""Evidence: which way of learning from its own samples improves the model most, against plain supervised
training at equal training compute?

    python bench/efficacy.py [--arms sft,seed-sft,dpo,grpo,grpo-label-free] [--out runs/efficacy]

Every arm starts from the same warm-started model (examples/arithmetic.yaml: labelled 1-2 digit sums) and
runs the config's iterations on the same prompts (the curriculum draws the same problems for every arm):

- `sft`: rejection-sampling SFT, the demo (examples/arithmetic.yaml): generate, verify, curate, train.
- `seed-sft`: the baseline: as many optimizer steps as `sft`, at its batch size and learning rate, on
  supervised training on the labelled seed set.
- `dpo`: iterative DPO on verifier-labelled pairs (examples/dpo.yaml).
- `grpo`: GRPO with the task's exact checker as the reward (examples/grpo.yaml).
- `grpo-label-free`: GRPO with the majority vote of each group as the reward (examples/grpo-label-free.yaml).
- `grpo-loop`: examples/grpo.yaml as the pipeline runs it: generate and verify first (loop health), curate
  keeps the informative prompts, then GRPO; its step durations say what generate/verify/curate cost.

Equal sampled completions: each iteration, `sft` and `dpo` sample 8 answers to 384 prompts (3,072
completions) in generate; `grpo` and `grpo-label-free` sample the same number as rollouts inside training
(prompts x K / batch_size steps, each prompt once), on the same prompts, and skip generate (`grpo-loop`
samples twice that: generate's samples choose the prompts). Prints held-out
accuracy per difficulty of each arm, beyond the seed set, and wall time. The sft arms take about 10 minutes
on 2 cores; each grpo arm about as long as sft. A finished arm's result is kept (`OUT/ARM/result.json`)
and reused, so arms can run as parallel processes (`--arms grpo` in one, `--arms dpo` in another) and a
last run with all arms prints the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from flywheel.config import load_config
from flywheel.io import read_table, write_table
from flywheel.steps.curate import curate_samples
from flywheel.steps.data import make_datasets, sample_prompts
from flywheel.steps.evaluate import evaluate_model
from flywheel.steps.generate import generate_samples
from flywheel.steps.init_model import init_model
from flywheel.steps.train import train_model
from flywheel.steps.verify import verify_samples
from flywheel.train.runner import train as run_training

ARMS = {"sft": "examples/arithmetic.yaml", "seed-sft": "examples/arithmetic.yaml", "dpo": "examples/dpo.yaml",
        "grpo": "examples/grpo.yaml", "grpo-label-free": "examples/grpo-label-free.yaml",
        "grpo-loop": "examples/grpo.yaml"}
DIRECT = {"grpo", "grpo-label-free"}  # GRPO on the iteration's prompts, without generate: equal completions


def run_loop(cfg, d: Path, m0: Path, seed: Path, evals: Path, direct_prompts: bool, log) -> dict:
    """The config's iterations from `m0` in this process (no promotion: every iteration's model goes on)."""
    model, previous, steps, completions = m0, None, 0, 0
    durations = {"generate": 0.0, "verify": 0.0, "curate": 0.0, "train": 0.0}
    grpo = cfg.train.recipe == "grpo"
    if grpo and direct_prompts:  # as many rollouts as the other arms sample: every prompt once, K answers
        g = cfg.generate
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(
            update={"max_steps": g.prompts_per_iteration * g.samples_per_prompt // cfg.train.batch_size})})
    for i in range(1, cfg.iterations + 1):
        sample_prompts(cfg, i, d / f"p{i}.parquet")
        if grpo and direct_prompts:
            write_table(read_table(d / f"p{i}.parquet").assign(pass_rate=float("nan"), iteration=i),
                        d / f"c{i}.parquet")
        else:
            g = generate_samples(model, d / f"p{i}.parquet", d / f"s{i}.parquet", cfg, iteration=i)
            completions += g["samples"]
            durations["generate"] += g["duration_s"]
            durations["verify"] += verify_samples(d / f"s{i}.parquet", d / f"v{i}.parquet", cfg)["duration_s"]
            durations["curate"] += curate_samples(d / f"v{i}.parquet", seed, d / f"c{i}.parquet", d / f"x{i}.parquet",
                                                  cfg, i, previous_path=previous, eval_path=evals)["duration_s"]
        start_from = model if cfg.train.init_from == "current" else m0
        m = train_model(start_from, d / f"c{i}.parquet", d / f"m{i}", cfg, eval_path=evals)
        completions += m.get("rollouts", 0)
        durations["train"] += m["duration_s"]
        model, previous, steps = d / f"m{i}", d / f"c{i}.parquet", steps + m["steps"]
        log(f"{d.name}: iteration {i} done ({m['steps']} steps)")
    result = evaluate_model(model, evals, d / "e.parquet", cfg, cfg.iterations, seed_path=seed)
    return {"eval": result, "steps": steps, "completions": completions, "durations": durations}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", default="sft,seed-sft,dpo,grpo,grpo-label-free",
                    help=f"comma-separated, from {', '.join(ARMS)}")
    ap.add_argument("--out", default="runs/efficacy")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override in every arm")
    args = ap.parse_args()
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        ap.error(f"unknown arm(s) {unknown}; choose from {', '.join(ARMS)}")
    base = load_config(ARMS["sft"], args.set)
    d = Path(args.out)
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", flush=True)

    seed, evals, m0 = d / "seed.parquet", d / "eval.parquet", d / "m0"
    make_datasets(base, seed, evals)
    if not (m0 / "config.json").is_file():
        init_model(base, seed, m0)
    log("warm start done")
    start = evaluate_model(m0, evals, d / "e0.parquet", base, 0, seed_path=seed)

    results: dict[str, dict] = {}
    for arm in arms:
        cfg = load_config(ARMS[arm], args.set)
        if (cfg.task, cfg.model, cfg.evaluate, cfg.iterations) != (base.task, base.model, base.evaluate, base.iterations):
            raise SystemExit(f"{ARMS[arm]}: task, model, evaluate and iterations must equal {ARMS['sft']}'s "
                             "(the arms share one warm start and one evaluation)")
        a = d / arm
        a.mkdir(exist_ok=True)
        if (a / "result.json").is_file():  # finished by an earlier (or a parallel) run of this script
            results[arm] = json.loads((a / "result.json").read_text())
            log(f"{arm}: reused {a / 'result.json'}")
            continue
        t_arm = time.perf_counter()
        if arm == "seed-sft":
            steps = base.train.max_steps * base.iterations  # the sft arm's optimizer steps
            run_training(m0, seed, a / "model", base.train.model_copy(
                update={"recipe": "sft", "max_steps": steps, "max_epochs": 0.0, "save_steps": 0}))
            r = {"eval": evaluate_model(a / "model", evals, a / "e.parquet", base, base.iterations, seed_path=seed),
                 "steps": steps, "completions": 0}
        else:
            r = run_loop(cfg, a, m0, seed, evals, arm in DIRECT, log)
        r["seconds"] = round(time.perf_counter() - t_arm, 1)
        results[arm] = r
        (a / "result.json").write_text(json.dumps(r, indent=2, default=str))
        log(f"{arm}: beyond seed {r['eval']['accuracy_beyond_seed']:.3f} in {r['seconds']:.0f} s")

    seed_max = start["seed_max_difficulty"]
    print(f"\nheld-out accuracy (greedy) after {base.iterations} iterations from the same warm start; "
          f"seed set: difficulties 1..{seed_max}\n")
    print(f"{'difficulty':>10}{'start':>9}" + "".join(f"{a:>17}" for a in results))
    for lv in start["accuracy_by_difficulty"]:
        mark = "  (beyond seed)" if int(lv) > seed_max else ""
        print(f"{lv:>10}{start['accuracy_by_difficulty'][lv]:>9.3f}"
              + "".join(f"{r['eval']['accuracy_by_difficulty'][lv]:>17.3f}" for r in results.values()) + mark)
    print(f"{'beyond':>10}{start['accuracy_beyond_seed']:>9.3f}"
          + "".join(f"{r['eval']['accuracy_beyond_seed']:>17.3f}" for r in results.values()))
    print(f"{'steps':>10}{'':>9}" + "".join(f"{r['steps']:>17}" for r in results.values()))
    print(f"{'samples':>10}{'':>9}" + "".join(f"{r['completions']:>17}" for r in results.values()))
    print(f"{'seconds':>10}{'':>9}" + "".join(f"{r['seconds']:>17.0f}" for r in results.values()))
    (d / "efficacy.json").write_text(json.dumps({"start": start, "arms": results}, indent=2, default=str))
    for arm, r in results.items():
        if r.get("durations"):
            print(f"{arm}: seconds in each loop step (3 iterations) " + ", ".join(f"{k} {v:.0f}" for k, v in r["durations"].items()))
    print(f"\ndetails: {d / 'efficacy.json'}")


if __name__ == "__main__":
    main()
