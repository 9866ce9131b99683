"""Bad input stops with one clear message (file, field, fix); nothing half-written is left behind."""

from __future__ import annotations

import pandas as pd
import pytest

from flywheel.cli import main
from flywheel.io import ArtifactError, atomic_dir, read_table, write_table


def test_bad_config_is_one_line_per_problem(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("iterations: two\ngenerate:\n  samples: 4\n")
    assert main(["compile", str(p), "-o", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {p}: invalid config")
    assert "iterations" in err and "generate.samples: unknown key" in err
    assert "Traceback" not in err


def test_missing_input_file(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("{}\n")
    assert main(["verify", str(cfg), "--samples", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "v.parquet")]) == 2
    assert "none.parquet: samples not found" in capsys.readouterr().err


def test_parquet_missing_a_column(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("{}\n")
    write_table(pd.DataFrame({"prompt_id": ["a"], "prompt": ["1+1="]}), tmp_path / "s.parquet")
    assert main(["verify", str(cfg), "--samples", str(tmp_path / "s.parquet"), "--out", str(tmp_path / "v.parquet")]) == 2
    err = capsys.readouterr().err
    assert "s.parquet: samples is missing column(s) reference, difficulty, sample_id, completion" in err
    assert not (tmp_path / "v.parquet").exists()


def test_not_parquet(tmp_path):
    (tmp_path / "x.parquet").write_text("prompt,completion\n")
    with pytest.raises(ArtifactError, match="cannot read table as Parquet"):
        read_table(tmp_path / "x.parquet")


def test_interrupted_writes_leave_nothing(tmp_path):
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "config.json").write_text("{}")
            raise Boom  # e.g. the process is interrupted while saving weights
    assert list(tmp_path.iterdir()) == []

    bad = pd.DataFrame({"x": [object()]})  # pyarrow cannot serialise it: fails mid-write
    with pytest.raises(Exception):
        write_table(bad, tmp_path / "t.parquet")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_an_old_result(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "old.txt").write_text("old")
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
