"""docs/tutorial-custom-task.md, run as written: its package is written from the page's `file=` code blocks,
pip-installed from a temporary folder, and its config runs through `flywheel run` (kfp.local, a
subprocess per step, which find the package through PYTHONPATH like any installed package)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flywheel.cli import main
from flywheel.io import read_table

from conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```\w+ file=(\S+)\n(.*?)^```", re.S | re.M)


def tutorial_files() -> dict[str, str]:
    return dict(BLOCK.findall((ROOT / "docs" / "tutorial-custom-task.md").read_text()))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    d = tmp_path_factory.mktemp("tutorial")
    for name, text in tutorial_files().items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)
    site = d / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(site), str(d / "my-tasks")], check=True)
    assert (site / "my_tasks" / "tasks.py").is_file()
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", str(site))  # the kfp.local step subprocesses inherit it
    # One torch thread per step process: the model is tiny, and on a shared 2-core machine two spinning
    # threads per process made this test several times slower.
    mp.setenv("OMP_NUM_THREADS", "1")
    mp.syspath_prepend(str(site))       # and this process, for the checks below
    yield d
    mp.undo()
    for m in [m for m in sys.modules if m.startswith("my_tasks")]:
        del sys.modules[m]


def test_the_tutorial_has_the_package_and_config():
    assert {"my-tasks/pyproject.toml", "my-tasks/src/my_tasks/tasks.py", "my-tasks/src/my_tasks/verifiers.py",
            "reverse.yaml"} <= set(tutorial_files())


@pytest.mark.slow
def test_the_tutorial_package_runs_through_the_loop(installed, tmp_path):
    cfg = yaml.safe_load((installed / "reverse.yaml").read_text())
    # the tutorial's config, made tiny: the tests' model and step sizes, one iteration
    cfg.update(iterations=1, model={"embedded": {**TINY["model"]["embedded"], "warmup_steps": 20}},
               train={**TINY["train"], "max_steps": 5}, generate={**TINY["generate"], "max_new_tokens": 7},
               evaluate={"per_difficulty": 5}, gates=TINY["gates"])  # an untrained tiny model may pass nothing
    cfg["task"]["params"].update(max_length=4, seed_size=100)
    (tmp_path / "reverse.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp_path / "reverse.yaml"), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    it = summary["iterations"][1]
    assert set(it["evaluate"]["accuracy_by_difficulty"]) == {"2", "3", "4"}  # the task's difficulty levels
    root = next((tmp_path / "out" / "kfp").iterdir())
    verdicts = read_table(root / "verify" / "verdicts")
    assert verdicts["prompt"].str.endswith(">").all()  # the task's prompts
    assert verdicts["reason"].str.contains(r"letter\(s\) wrong|length \d").all()  # the custom verifier's reasons
    assert it["verify"]["verifier"] == "my_tasks.verifiers:LettersRight"


@pytest.mark.parametrize("section,value,message", [
    ("task", {"name": "my_tasks.task:Reverse"}, "cannot import module 'my_tasks.task'"),
    ("task", {"name": "my_tasks.verifiers:LettersRight"}, "lacks method(s) prompts, eval_sets, seed_set"),
    ("verify", {"verifier": "my_tasks.tasks:Nope"}, "module 'my_tasks.tasks' has no attribute 'Nope'"),
    ("verify", {"verifier": "my_tasks.tasks:LETTERS"}, "is not callable"),
])
def test_a_wrong_name_stops_flywheel_run_with_one_message(installed, tmp_path, capsys, section, value, message):
    cfg = yaml.safe_load((installed / "reverse.yaml").read_text())
    cfg[section] = {**cfg[section], **value}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # stopped before anything ran
