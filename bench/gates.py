"""What the quality gates add to an iteration of the demo, absolute and as a share of the iteration.

    .venv/bin/python bench/gates.py [--run runs/demo] [--iteration 1] [--repeats 3]

Reads a finished demo run (`make demo`): its config and step durations (summary.json) and its KFP
artifacts. Then runs each gated step of the iteration (generate, verify, curate, evaluate) on that run's
real inputs as its own process through the CLI, the way kfp.local runs it, with `gates.enabled` true and
false (interleaved, best of --repeats), so the difference is everything a gate costs: importing Great
Expectations, the validation, and the report. Also prints the in-process validation time alone. The share is
gates / (the iteration's five steps as processes, train included, without gates + gates); it excludes
orchestration, so it is an upper bound of the share of wall time. Goal: < 10 %.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flywheel.config import parse_config

import yaml


def task_dir(root: Path, task: str, iteration: int) -> Path:
    """kfp.local names repeated tasks task, task-2, ...; evaluate runs once more (iteration 0)."""
    k = iteration + 1 if task == "evaluate" else iteration
    return root / (task if k == 1 else f"{task}-{k}")


def commands(root: Path, it: int, out: Path) -> dict[str, tuple[str, list[str]]]:
    """gate -> (step key in summary.json, CLI arguments after the config) on the run's own inputs."""
    t = lambda task, name, k=it: str(task_dir(root, task, k) / name)  # noqa: E731
    prep = root / "prepare-data"
    model_before = str(root / "init-model" / "model") if it == 1 else t("train", "model", it - 1)
    previous = [] if it == 1 else ["--previous", t("curate", "curated", it - 1)]
    return {
        "samples": ("generate", ["generate", "--model", model_before, "--prompts", t("sample-prompts", "prompts"),
                                 "--out", str(out / "samples.parquet"), "--iteration", str(it)]),
        "verdicts": ("verify", ["verify", "--samples", t("generate", "samples"), "--out", str(out / "verdicts.parquet")]),
        "curated": ("curate", ["curate", "--verdicts", t("verify", "verdicts"), "--seed-set", str(prep / "seed_set"),
                               "--eval-set", str(prep / "eval_set"), "--out", str(out / "curated.parquet"),
                               "--dropped", str(out / "dropped.parquet"), "--iteration", str(it), *previous]),
        "results": ("eval", ["evaluate", "--model", t("train", "model"), "--eval-set", str(prep / "eval_set"),
                             "--seed-set", str(prep / "seed_set"), "--out", str(out / "results.parquet"),
                             "--iteration", str(it)]),
    }


def run_step(args: list[str], config: Path, gates: bool) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "flywheel", args[0], str(config), *args[1:], "--set",
                    f"gates.enabled={str(gates).lower()}"], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/demo", help="output folder of a finished demo run")
    ap.add_argument("--iteration", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    run = Path(args.run)
    if not (run / "summary.json").is_file():
        sys.exit(f"{run}/summary.json not found: run `make demo` first (or pass --run DIR)")
    summary = json.loads((run / "summary.json").read_text())
    cfg = parse_config(summary["config"], str(run / "summary.json"))
    entry = next(it for it in summary["iterations"] if it["iteration"] == args.iteration)
    root = max((run / "kfp").iterdir(), key=lambda p: p.stat().st_mtime)

    from flywheel.gates import check_gate
    from flywheel.steps.curate import curated_suite
    from flywheel.steps.evaluate import results_suite
    from flywheel.steps.generate import samples_suite
    from flywheel.steps.verify import verdicts_suite

    from flywheel.gates import _gx

    _gx()  # the in-process validation times below exclude the import
    suites = {"samples": samples_suite, "verdicts": verdicts_suite, "curated": curated_suite, "results": results_suite}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = tmp / "config.yaml"
        config.write_text(yaml.safe_dump(summary["config"]))
        for gate, (key, cli) in commands(root, args.iteration, tmp).items():
            on = off = float("inf")
            for _ in range(args.repeats):
                off = min(off, run_step(cli, config, gates=False))
                on = min(on, run_step(cli, config, gates=True))
            data = tmp / f"{gate}.parquet"  # written by the gated run; validate it again, in-process
            context = {"eval_path": root / "prepare-data" / "eval_set", "rows": entry[key]["kept"]} if gate == "curated" else {}
            t0 = time.perf_counter()
            check_gate(gate, data, suites[gate], cfg, **context)
            rows.append((gate, key, off, on, time.perf_counter() - t0))
        # the iteration's one ungated step, on the same machine state (the dev box is shared: its speed
        # varies several-fold between hours, so the run's recorded durations are not comparable)
        model_before = root / "init-model" / "model" if args.iteration == 1 else task_dir(root, "train", args.iteration - 1) / "model"
        train = run_step(["train", "--model", str(model_before), "--data", str(task_dir(root, "curate", args.iteration) / "curated"),
                          "--out", str(tmp / "model")], config, gates=False)
    steps = train + sum(off for _, _, off, _, _ in rows)
    added = sum(max(on - off, 0.0) for _, _, off, on, _ in rows)
    print(f"run {run}, iteration {args.iteration}: its steps take {steps:.1f} s as processes without gates "
          f"(train {train:.1f} s; recorded in the run: "
          f"{', '.join(f'{k} {v:.1f}' for k, v in entry['durations'].items() if v)})\n")
    print(f"{'gate':<10}{'step':<10}{'step s, off':>12}{'on':>8}{'added s':>9}{'validate s':>12}")
    for gate, key, off, on, v in rows:
        print(f"{gate:<10}{key:<10}{off:>12.2f}{on:>8.2f}{on - off:>9.2f}{v:>12.2f}")
    print(f"\ngates add {added:.1f} s to the iteration: {added / (steps + added):.1%} of it (goal < 10 %); "
          f"validation alone {sum(r[4] for r in rows):.1f} s, the rest is importing Great Expectations")


if __name__ == "__main__":
    main()
