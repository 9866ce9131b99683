"""The console of `flywheel run`: kfp.local's stream into one log per task, one line per step, a clear failure."""

from __future__ import annotations

import io
import json
import threading

import pytest
import yaml
from rich.console import Console

from flywheel.cli import main
from flywheel.console import StepView, exception_message

from conftest import TINY


def _kfp_task(view: StepView, name: str, folder, lines: list[str], status: str = "SUCCESS") -> None:
    """What kfp.local prints for one task, as it prints it (colours, 4-space indent of the task's lines)."""
    view.write(f"07:14:19.978 - INFO - Executing task \x1b[96m'{name}'\x1b[0m\n")
    view.write(f'    "outputFile": "{folder}/executor_output.json"\n')
    for ln in lines:
        view.write("    ")  # kfp.local's indented print writes the indent on its own
        view.write(ln + "\n")
    view.write(f"07:14:22.036 - INFO - Task \x1b[96m'{name}'\x1b[0m finished with status \x1b[92m{status}\x1b[0m\n")


def test_each_task_gets_its_log_and_one_line_even_when_two_run_at_once(tmp_path):
    out = io.StringIO()
    names = {"verify": (1, "verify"), "verify-2": (2, "verify")}
    for i, rate in ((1, 0.25), (2, 0.75)):
        (tmp_path / f"t{i}").mkdir()
        (tmp_path / f"t{i}" / "metrics").write_text(json.dumps({"pass_rate": rate}))
    view = StepView(Console(file=out, width=100), tmp_path / "logs", names)
    # two tasks in two threads, their lines interleaved (a ParallelFor runs two at a time)
    barrier = threading.Barrier(2)

    def task(name, i):
        barrier.wait()
        _kfp_task(view, name, tmp_path / f"t{i}", [f"{name} line {k}" for k in range(50)])

    threads = [threading.Thread(target=task, args=a) for a in (("verify", 1), ("verify-2", 2))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    view.write("07:14:30.000 - INFO - Task verify-3 cache hit (key=abcdef012345); skipping execution.\n")
    view.close()
    for i, name in ((1, "verify"), (2, "verify-2")):
        log = (tmp_path / "logs" / f"iter-{i}-verify.log").read_text().splitlines()
        assert [ln for ln in log if "line" in ln] == [f"    {name} line {k}" for k in range(50)]
    shown = out.getvalue().splitlines()
    assert sorted(ln.split()[:5] for ln in shown[:2]) == [["iter", "1", "verify", "ok", "pass"],
                                                           ["iter", "2", "verify", "ok", "pass"]]
    assert "pass 0.25" in out.getvalue() and "pass 0.75" in out.getvalue()
    assert "verify-3" in shown[2] and "cached" in shown[2] and len(shown) == 3  # nothing else reached the screen


def test_exception_message_is_the_last_exception_with_its_message_lines():
    lines = ["Traceback (most recent call last):", '  File "x.py", line 1, in f', "    raise GateError(...)",
             "flywheel.gates.GateError: curated: gate failed", "  curated.seed_share 0.9 > 0.5: lower curate.mix"]
    assert exception_message(lines) == "GateError: curated: gate failed\n  curated.seed_share 0.9 > 0.5: lower curate.mix"
    assert exception_message(["Killed"]) == "Killed"


@pytest.fixture
def broken_task(tmp_path, monkeypatch):
    """A task whose seed set raises: the run's first step (prepare) fails, a few seconds in."""
    (tmp_path / "broken_task.py").write_text(
        "from flywheel.tasks.arithmetic import Arithmetic\n\n"
        "class Broken(Arithmetic):\n    def seed_set(self, seed):\n"
        "        raise ValueError(\"seed row 3: 'reference' is empty; fill it in data/seed.jsonl\")\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the tasks' processes import it too
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**TINY, "iterations": 1,
                                                     "task": {**TINY["task"], "name": "broken_task:Broken"}}))
    return tmp_path


def test_a_failed_step_shows_its_message_log_tail_path_and_how_to_resume(broken_task, capsys):
    assert main(["run", str(broken_task / "c.yaml"), "--out", str(broken_task / "out")]) == 1
    out, err = capsys.readouterr()
    # the header, configure (the run form merged into the config) and the failed step
    assert len(out.splitlines()) == 3 and "configure   ok" in out and "prepare     failed" in out
    log = broken_task / "out" / "logs" / "iter-0-prepare.log"
    assert err.startswith("error: iteration 0, step prepare failed: ValueError: seed row 3: 'reference' is empty")
    assert f"full log: {log}" in err and "Traceback" in log.read_text()
    assert 'raise ValueError("seed row 3' in err  # the log's last lines: the frame that raised
    assert f"run the same command again to resume (flywheel run {broken_task / 'c.yaml'} --out" in err
    assert len(err.splitlines()) < 25 and "executor_input" not in out + err


def test_verbose_prints_kfp_local_stream(broken_task, capsys):
    assert main(["run", str(broken_task / "c.yaml"), "--out", str(broken_task / "out"), "--verbose"]) == 1
    out, err = capsys.readouterr()
    assert "Got executor_input" in out and "seed row 3" in out and not (broken_task / "out" / "logs").exists()


def test_version_and_help_grouped_with_an_example_each(capsys):
    import tomllib
    from pathlib import Path

    from flywheel.cli import make_parser

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    want = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["version"]
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"flywheel {want}"
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    blocks = {b.split(":\n")[0]: b for b in text.split("\n\n") if ":\n  " in b and not b.startswith("options")}
    assert {"run the loop", "one step on files", "on a cluster (Kubeflow Pipelines)"} <= set(blocks)
    assert all("\n  e.g. flywheel " in blocks[g] for g in ("run the loop", "one step on files",
                                                            "on a cluster (Kubeflow Pipelines)"))
    assert "\n  run  " in blocks["run the loop"] and "\n  verify  " in blocks["one step on files"]
    assert "\n  submit  " in blocks["on a cluster (Kubeflow Pipelines)"]
    sub = next(a for a in make_parser()._actions if a.dest == "command")
    listed = [ln.split()[0] for b in blocks.values() for ln in b.splitlines()[1:] if not ln.startswith("  e.g.")]
    assert sorted(listed) == sorted(sub.choices)  # every subcommand once, none lost


def test_the_sandbox_batch_reports_progress(capfd):
    from flywheel.verifiers.unit_tests import UnitTests

    import pandas as pd

    ref = json.dumps({"prefix": "", "tests": ["assert f() == 1"]})
    samples = pd.DataFrame({"prompt_id": ["a", "b"], "reference": [ref, ref],
                            "completion": ["def f():\n    return 1", "def f():\n    return 2"]})
    verdicts = UnitTests(workers=2).verify_batch(samples)
    assert [v.correct for v in verdicts] == [True, False]
    err = capfd.readouterr().err
    assert "unit tests: programs" in err and "2/2" in err  # the bar the live line and the step's log show


def test_dvc_repro_stream_gets_the_same_view(tmp_path):
    from flywheel.console import DvcView

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "verify.json").write_text(json.dumps({"pass_rate": 0.5}))
    out = io.StringIO()
    view = DvcView(Console(file=out, width=100), tmp_path / "logs", {})
    for line in ["Stage 'prepare' didn't change, skipping", "Running stage 'verify_1':",
                 f"> flywheel verify c.yaml --samples s --out v --metrics {tmp_path}/m/verify.json", "verifying...",
                 "Running stage 'curate_1':", "> flywheel curate c.yaml --metrics m/curate.json",
                 "Traceback (most recent call last):", '  File "c.py", line 1', "ValueError: curate: bad row 7",
                 "ERROR: failed to reproduce 'curate_1': failed to run: flywheel curate, exited with 1"]:
        view.write(line + "\n")
    view.finish()
    view.close()
    shown = [ln.split() for ln in out.getvalue().splitlines()]
    assert [ln[:4] for ln in shown] == [["iter", "0", "prepare", "cached"], ["iter", "1", "verify", "ok"],
                                       ["iter", "1", "curate", "failed"]]
    assert "pass 0.50" in out.getvalue()
    assert "verifying..." in (tmp_path / "logs" / "iter-1-verify.log").read_text()
    assert view.failure_text("rerun").startswith("error: iteration 1, step curate failed: ValueError: curate: bad row 7")
