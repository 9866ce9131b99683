"""Benchmark: what kfp.local costs per task, with and without `install_kfp_package`.

    python bench/orchestration.py [--tasks 10]

Runs a chain of no-op lightweight components (each passes a Dataset artifact on) through
`kfp.local.SubprocessRunner(use_venv=False)`, as `flywheel run` does, and prints seconds per task next to
the cost of starting a bare Python interpreter (the floor of any subprocess-per-task runner).
flywheel's components use install_kfp_package=False; the default (True) pip-installs kfp in every task.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

from kfp import dsl, local


def hop(data_in: dsl.Input[dsl.Dataset], data_out: dsl.Output[dsl.Dataset]):
    import shutil

    shutil.copyfile(data_in.path, data_out.path)


def start(data_out: dsl.Output[dsl.Dataset]):
    with open(data_out.path, "w") as f:
        f.write("x")


def chain(n: int, install_kfp: bool):
    first = dsl.component(start, base_image="python:3.11", install_kfp_package=install_kfp)
    step = dsl.component(hop, base_image="python:3.11", install_kfp_package=install_kfp)

    @dsl.pipeline(name="overhead")
    def pipe():
        t = first()
        for _ in range(n - 1):
            t = step(data_in=t.outputs["data_out"])

    return pipe


def seconds_per_task(n: int, install_kfp: bool) -> float:
    with tempfile.TemporaryDirectory() as root:
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root)
        t0 = time.perf_counter()
        chain(n, install_kfp)()
        return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--with-pip", action="store_true", help="also time install_kfp_package=True (slow)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    for _ in range(5):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    bare = (time.perf_counter() - t0) / 5
    t0 = time.perf_counter()
    for _ in range(5):
        subprocess.run([sys.executable, "-c", "import kfp.dsl"], check=True)
    with_kfp = (time.perf_counter() - t0) / 5
    ours = seconds_per_task(args.tasks, install_kfp=False)
    print(f"{'':44}{'s/task':>8}")
    print(f"{'bare python subprocess (floor)':44}{bare:>8.3f}")
    print(f"{'python subprocess importing kfp.dsl':44}{with_kfp:>8.3f}")
    print(f"{'kfp.local task, install_kfp_package=False':44}{ours:>8.3f}   <- flywheel's components")
    if args.with_pip:
        print(f"{'kfp.local task, install_kfp_package=True':44}{seconds_per_task(args.tasks, True):>8.3f}")
    print(f"\noverhead over the bare-interpreter floor: {ours - bare:.3f} s/task ({args.tasks} tasks)")


if __name__ == "__main__":
    main()
