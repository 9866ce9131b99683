"""Bad input stops `flywheel run` before any step runs, with a message of a few lines naming the file, field
or row and the fix, and no traceback (issue 13, "fail fast, clearly, early")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flywheel.cli import main
from flywheel.locks import claim_scratch, hold_run_lock

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "examples" / "arithmetic.yaml")


@pytest.fixture(autouse=True)
def _no_pipeline(monkeypatch):
    """Every run here must stop before the pipeline: one that does not fails at once, not minutes later."""
    import flywheel.pipelines.flywheel_pipeline as fp

    def refuse(*args, **kwargs):
        raise AssertionError("the pipeline would have started")

    monkeypatch.setattr(fp, "build_pipeline", refuse)


def _run_fails(capsys, tmp_path, config: str, *sets: str) -> str:
    out = tmp_path / "out"
    argv = ["run", config, "--out", str(out)] + [x for s in sets for x in ("--set", s)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) <= 3, err
    assert not (out / "kfp").exists()  # no step ran
    return err


@pytest.mark.parametrize("override,message", [
    ("generate.temperature=[0.5", "--set 'generate.temperature=[0.5': the value is not valid YAML"),
    ("gates.min_pass_rate=0.99", "gates.min_pass_rate (0.99) is above gates.max_pass_rate (0.98)"),
    ("model.embedded.num_attention_heads=3", "num_attention_heads (3) does not divide model.embedded.hidden_size (128)"),
    ("model.embedded.num_attention_heads=128", "a head of 1 dimensions (hidden_size / num_attention_heads) is odd"),
    ("generate.max_new_tokens=500", "generate.max_new_tokens (500) leaves no room"),
    ("train.micro_batch_size=5", "train.batch_size (64) must be a multiple of train.micro_batch_size (5)"),
    ("train.deepspeed=configs/nope.json", "train.deepspeed: 'configs/nope.json' is neither a preset"),
    ("gates.warn=[curated.seed_share, curated.nope]", "unknown gate or rule id(s) 'curated.nope'; known gates and "
                                                      "their rules: samples: samples.schema"),
])
def test_config_contradictions_stop_the_run_before_any_step(capsys, tmp_path, override, message):
    assert message in _run_fails(capsys, tmp_path, DEMO, override)


def test_known_gate_and_rule_ids_are_accepted():
    from flywheel.config import parse_config

    assert parse_config({"gates": {"warn": ["curated", "curated.seed_share", "results.rows"]}}).gates.warn


def test_every_gate_the_steps_run_is_listed_for_the_warn_check():
    import re

    from flywheel.gates import GATE_SUITES

    calls = set()
    for f in (ROOT / "src" / "flywheel").rglob("*.py"):
        calls |= set(re.findall(r'check_gate\("(\w+)", [^,]+, (\w+)', f.read_text()))
    listed = {(gate, t.split(":")[1]) for gate, targets in GATE_SUITES.items() for t in targets}
    assert calls and calls == listed


def _code_config(tmp_path: Path, rows: list[str | bytes], **params) -> str:
    data = tmp_path / "code.jsonl"
    data.write_bytes(b"".join((r if isinstance(r, bytes) else r.encode()) + b"\n" for r in rows))
    cfg = tmp_path / "code.yaml"
    cfg.write_text(json.dumps({"task": {"name": "code", "params": {"path": str(data), "id_field": "id", **params}}}))
    return str(cfg)


def _row(i, **extra) -> str:
    return json.dumps({"id": i, "prompt": f"f(1)=?{i}", "prefix": "f=lambda x:", "tests": ["assert f(1) == 1"], **extra})


def test_a_data_file_that_is_not_utf8_names_file_line_and_fix(capsys, tmp_path):
    cfg = _code_config(tmp_path, [_row("a"), _row("b"), b'{"id": "c", "prompt": "caf\xe9"}'])
    err = _run_fails(capsys, tmp_path, cfg)
    assert "code.jsonl:3: not UTF-8 (byte 0xe9" in err and "iconv" in err


def test_duplicate_ids_name_the_file_and_the_ids(capsys, tmp_path):
    cfg = _code_config(tmp_path, [_row("a"), _row("b"), _row("a"), _row("c"), _row("b")])
    err = _run_fails(capsys, tmp_path, cfg)
    assert "code.jsonl: 2 duplicate problem id(s): row-a (lines 1, 3); row-b (lines 2, 5)" in err


def test_an_oversized_row_is_refused_without_being_held_in_memory(capsys, tmp_path):
    big = _row("b", prompt="x" * 3_000_000)  # 3 MB on one line
    cfg = _code_config(tmp_path, [_row("a"), big, _row("c")])
    err = _run_fails(capsys, tmp_path, cfg)
    assert "code.jsonl:2: row of 3,000,0" in err and "over the per-row cap of 262,144 bytes" in err
    from flywheel.tasks.files import read_records

    import tracemalloc

    tracemalloc.start()
    list(read_records(tmp_path / "code.jsonl", max_row_bytes=1000))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000  # read in 64 KB pieces: never the 3 MB line whole


HOLDER = ("import sys, time\nfrom pathlib import Path\nfrom flywheel.locks import {fn}\n"
          "lock = {fn}(Path(sys.argv[1]))\n{then}\nprint('held', flush=True)\ntime.sleep(60)\n")


def _holder(fn: str, path: Path, then: str = "") -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER.format(fn=fn, then=then), str(path)], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_run_on_the_same_out_is_refused_naming_the_first(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    first = _holder("hold_run_lock", out)
    try:
        assert main(["run", DEMO, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"another `flywheel run` is writing to this folder (pid {first.pid}," in err and "--out" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    hold_run_lock(out).release()  # killed: the kernel released its lock, nothing stale is left


def test_a_killed_train_steps_checkpoints_are_removed_by_the_next_step(tmp_path):
    root = tmp_path / "flywheel-checkpoints"
    killed, live = root / "a", root / "b"
    make = "d = Path(sys.argv[1]); (d / 'checkpoint-5').mkdir(parents=True); (d / 'checkpoint-5' / 'w').write_text('x')"
    alive = _holder("claim_scratch", live, make)  # a step still training
    k = _holder("claim_scratch", killed, make)
    k.send_signal(signal.SIGKILL)  # killed mid-training: its folder stays, nobody holds its lock
    k.wait()
    # what else lives in a user's train.checkpoint_dir is not ours: another name, or one without a lock file
    (root / "results").mkdir()
    (root / "d").mkdir()
    try:
        assert (killed / "checkpoint-5").is_dir()
        mine = claim_scratch(root / "c")  # the next train step
        assert not killed.exists() and not (root / "a.lock").exists()
        assert (live / "checkpoint-5" / "w").read_text() == "x"  # a live step's checkpoints are kept
        mine.release(unlink=True)
    finally:
        alive.send_signal(signal.SIGKILL)
        alive.wait()
    assert {p.name for p in root.iterdir()} == {"b", "b.lock", "results", "d"}
