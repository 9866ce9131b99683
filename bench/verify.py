"""Benchmark: the verifiers against their floors, side by side in one run.

    python bench/verify.py                  # 100 code samples x 3 tests, 2,000 word-problem answers
    python bench/verify.py --code-samples 200 --workers 4

unit-tests: the same candidates (a right and a wrong program for each of N problems of
examples/data/code_problems.jsonl, 3 tests each) through
  - the floor: a bare `python -I -c PROGRAM+TEST` subprocess per test, no sandbox (1 worker and all cores),
    and the same with `-S` (no `site`, as the sandbox starts its interpreter);
  - the `unit-tests` verifier, one sandboxed process per test (default) and per candidate, 1 worker and all;
  - the verifier with the kernel layers off (namespaces, Landlock), to show what they cost.
It prints samples/s, wall and CPU ms per test (CPU time, of this process and all its children, is the
steadier figure on a shared machine), and their ratios to the floor at the same worker count; the goal is
<= 2x. It fails if the floor and the verifier disagree on which tests pass.

jsonl: the `jsonl` task's verifier (GSM8K `####` extraction, numeric comparison) on N answers, against a
floor that splits on `####` and compares strings, and the same extraction and numeric comparison written
inline (what a hand-written verifier costs); one process (it is microseconds of Python per sample:
processes would cost more than they save).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def code_candidates(n: int) -> pd.DataFrame:
    from flywheel.tasks.code import Code

    task = Code(str(ROOT / "examples" / "data" / "code_problems.jsonl"), id_field="id")
    rows = random.Random(0).sample(task.pool.rows, n)
    out = []
    for r in rows:
        base = {k: r[k] for k in ("prompt_id", "prompt", "reference", "difficulty")}
        out += [{**base, "sample_id": 0, "completion": r["completion"]},        # right
                {**base, "sample_id": 1, "completion": r["completion"] + "+1"}]  # wrong
    return pd.DataFrame(out)


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def floor(programs: list[str], workers: int, flags: tuple[str, ...] = ("-I",)) -> list[bool]:
    def one(p: str) -> bool:
        return subprocess.run([sys.executable, *flags, "-c", p], capture_output=True).returncode == 0

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, programs))


def bench_unit_tests(n: int, workers: int, rounds: int) -> None:
    from flywheel.sandbox import probe
    from flywheel.verifiers.unit_tests import UnitTests, parse_reference

    samples = code_candidates(n)
    programs = []
    for ref, completion in zip(samples["reference"], samples["completion"]):
        prefix, tests = parse_reference(ref)
        programs.append([f"{prefix}{completion}\n\n{t}\n" for t in tests])
    n_tests = sum(map(len, programs))
    probe()  # once, outside the timings
    # The machine is shared, and its load drifts over minutes: every configuration runs on the same slice of
    # the candidates in turn, `rounds` times, so that drift spreads evenly over all of them.
    configs = {}
    for w in sorted({1, workers}):
        configs[("floor: bare python -I -c per test", w)] = ("floor", ("-I",))
        # The sandbox starts its interpreter with -S (no `site`: candidates get the standard library only);
        # with this virtualenv's .pth files that alone saves tens of ms, so it is shown separately.
        configs[("  bare python -I -S -c per test (no site)", w)] = ("floor", ("-I", "-S"))
        configs[("flywheel unit-tests, process per test", w)] = ("ours", dict(isolate_tests=True))
        configs[("flywheel unit-tests, process per candidate", w)] = ("ours", dict(isolate_tests=False))
    configs[("  per test, no namespaces/Landlock/cgroup", 1)] = ("ours", dict(isolate_tests=True, namespaces=False,
                                                                              landlock=False, pids_cgroup=False,
                                                                              strict=False))
    seconds = {k: 0.0 for k in configs}
    cpu = {k: 0.0 for k in configs}  # CPU seconds of this process and its children: steadier than wall time
    # on a loaded machine, where wall time is mostly waiting for a core
    passed = {k: [] for k in configs}
    cut = [len(samples) * r // rounds for r in range(rounds + 1)]
    for r in range(rounds):
        part = slice(cut[r], cut[r + 1])
        progs = [p for ps in programs[part] for p in ps]
        for key, (kind, arg) in configs.items():
            c0, t0 = cpu_seconds(), time.perf_counter()
            if kind == "floor":
                ok, i, flat = [], 0, floor(progs, key[1], arg)
                for ps in programs[part]:
                    ok.append(all(flat[i:i + len(ps)]))
                    i += len(ps)
            else:
                ok = [v.correct for v in UnitTests(workers=key[1], **arg).verify_batch(samples.iloc[part])]
            seconds[key] += time.perf_counter() - t0
            cpu[key] += cpu_seconds() - c0
            passed[key] += ok
    truth = passed[("floor: bare python -I -c per test", 1)]
    print(f"\nunit-tests: {len(samples)} samples x {n_tests // len(samples)} tests = {n_tests} test runs, "
          f"{os.cpu_count()} CPU core(s), {rounds} interleaved rounds")
    print(f"{'':44s} {'workers':>7s} {'wall s':>7s} {'samples/s':>9s} {'ms/test':>8s} {'x floor':>8s} "
          f"{'CPU ms/test':>11s} {'x floor':>8s}")
    floor_key = "floor: bare python -I -c per test"
    for (name, w), sec in seconds.items():
        if passed[(name, w)] != truth:
            raise SystemExit(f"{name}: verdicts differ from the floor's on "
                             f"{sum(a != b for a, b in zip(passed[(name, w)], truth))} samples")
        base, base_cpu = seconds[(floor_key, w)], cpu[(floor_key, w)]
        print(f"{name:44s} {w:>7d} {sec:7.2f} {len(samples) / sec:9.1f} {sec / n_tests * 1e3:8.1f} {sec / base:8.2f} "
              f"{cpu[(name, w)] / n_tests * 1e3:11.1f} {cpu[(name, w)] / base_cpu:8.2f}")
    print(f"layers: {', '.join(UnitTests().layers)}")
    for w in sorted({1, workers}):
        key = ("flywheel unit-tests, process per test", w)
        ratio, ratio_cpu = seconds[key] / seconds[(floor_key, w)], cpu[key] / cpu[(floor_key, w)]
        nosite = cpu[key] / cpu[("  bare python -I -S -c per test (no site)", w)]
        print(f"per-test cost, {w} worker(s): {ratio:.2f}x the floor in wall time, {ratio_cpu:.2f}x in CPU time "
              f"({'within' if max(ratio, ratio_cpu) <= 2 else 'ABOVE'} the 2x goal); "
              f"{nosite:.2f}x the CPU time of a bare interpreter without site")


def bench_jsonl(n: int) -> None:
    from flywheel.tasks.answers import extract_answer  # noqa: F401  (imported before timing)
    from flywheel.tasks.jsonl import Jsonl

    task = Jsonl(str(ROOT / "examples" / "data" / "word_problems.jsonl"), difficulty_field="difficulty", id_field="id")
    rng = random.Random(0)
    rows = [rng.choice(task.pool.rows) for _ in range(n)]
    # a wrong answer: the right one with a digit appended ("#### 17" for 1), wrong as a string and as a number
    completions = [r["completion"] if rng.random() < 0.5 else
                   r["completion"].rsplit("####", 1)[0] + "#### " + r["reference"] + "7" for r in rows]
    t0 = time.perf_counter()
    base = [c.rsplit("####", 1)[-1].strip() == r["reference"] for r, c in zip(rows, completions)]
    floor_s = time.perf_counter() - t0

    def inline(c: str, ref: str) -> bool:  # the same job written inline: '####' line, number, tolerance
        if "####" not in c:
            return False
        got = c.rsplit("####", 1)[1].strip().replace(",", "")
        try:
            return math.isclose(float(got), float(ref), rel_tol=1e-6, abs_tol=1e-9)
        except ValueError:
            return got.casefold() == ref.casefold()

    t0 = time.perf_counter()
    inline_ok = [inline(c, r["reference"]) for r, c in zip(rows, completions)]
    inline_s = time.perf_counter() - t0
    assert inline_ok == base
    samples = pd.DataFrame([{**{k: r[k] for k in ("prompt_id", "prompt", "reference", "difficulty")}, "completion": c}
                            for r, c in zip(rows, completions)])
    from flywheel.verifiers import task_verifier

    verify = task_verifier(task)
    t0 = time.perf_counter()
    verdicts = verify(samples)
    ours = time.perf_counter() - t0
    assert [v.correct for v in verdicts] == base, "the jsonl verifier and the floor disagree"
    print(f"\njsonl: {n} GSM8K-style answers, 1 process")
    print(f"{'':44s} {'wall s':>7s} {'samples/s':>10s} {'us/sample':>9s} {'x floor':>8s}")
    print(f"{'floor: split on #### and compare strings':44s} {floor_s:7.3f} {n / floor_s:10.0f} {floor_s / n * 1e6:9.2f} {1.0:8.2f}")
    print(f"{'  the same extraction and comparison, inline':44s} {inline_s:7.3f} {n / inline_s:10.0f} "
          f"{inline_s / n * 1e6:9.2f} {inline_s / floor_s:8.2f}")
    print(f"{'flywheel jsonl verifier (extract, numeric)':44s} {ours:7.3f} {n / ours:10.0f} {ours / n * 1e6:9.2f} "
          f"{ours / floor_s:8.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--code-samples", type=int, default=50, help="code problems (x2 samples: a right and a wrong one)")
    p.add_argument("--answers", type=int, default=2000, help="word-problem answers for the jsonl verifier")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="'all cores' worker count")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (against load drift)")
    args = p.parse_args()
    bench_unit_tests(args.code_samples, args.workers, args.rounds)
    bench_jsonl(args.answers)


if __name__ == "__main__":
    main()
