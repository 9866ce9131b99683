"""The `jsonl` and `code` tasks: answer extraction, the held-out split, clear errors for bad rows."""

from __future__ import annotations

import json
import random
import runpy
from pathlib import Path

import pandas as pd
import pytest

from flywheel.tasks import load_task
from flywheel.tasks.answers import answers_match, canonical, extract_answer
from flywheel.tasks.files import DataError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text,fmt,want", [
    ("She has 3+4=7 apples.\n#### 7", "auto", "7"),
    ("#### 1,234", "gsm8k", "1,234"),
    ("no final line 42", "gsm8k", None),
    ("so the answer is $\\boxed{\\frac{3}{4}}$.", "auto", "\\frac{3}{4}"),
    ("\\boxed{x^{2}+1} and later \\boxed{12}", "boxed", "12"),
    ("\\boxed{unclosed", "boxed", None),
    ("I think 3, no, 5.5 is right", "auto", "5.5"),
    ("total: -12 items", "last-number", "-12"),
    ("Paris", "auto", "Paris"),
    ("Paris", "last-number", None),
    ("  42 \n", "exact", "42"),
    ("", "auto", None),
])
def test_extract_answer(text, fmt, want):
    assert extract_answer(text, fmt) == want


@pytest.mark.parametrize("got,want,match", [
    ("1,000", "1000", True), ("0.75", "3/4", True), ("\\frac{3}{4}", "0.75", True), ("$5", "5.00", True),
    ("1000.0000001", "1000", True), ("1001", "1000", False), ("Paris.", "paris", True), ("Rome", "Paris", False),
])
def test_answers_match(got, want, match):
    assert answers_match(got, want) is match


def test_canonical_makes_equal_numbers_collide():
    assert canonical("1,000") == canonical("1000.0") == "1000" and canonical("3/4") == canonical("0.75")
    assert canonical("nan") == "nan" and canonical("inf") == "inf"  # not numbers to vote on, but no crash


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _rows(n=200):
    return [{"q": f"What is {i} plus {i + 1}?", "a": f"{i}+{i + 1}={2 * i + 1}\n#### {2 * i + 1}",
             "level": 1 + i % 3} for i in range(n)]


@pytest.fixture
def word_task(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", _rows())
    return load_task("jsonl", {"path": str(path), "prompt_field": "q", "answer_field": "a",
                               "difficulty_field": "level", "seed_size": 30, "prompt_template": "Q: {prompt}\nA: "})


def test_jsonl_rows_become_problems(word_task):
    seed = word_task.seed_set(0)
    assert len(seed) == 30 and all(r["completion"].endswith("#### " + r["reference"]) for r in seed)
    assert seed[0]["prompt"].startswith("Q: What is") and seed[0]["prompt"].endswith("\nA: ")
    ev = word_task.eval_sets(per_difficulty=5, seed=0)
    assert sorted({r["difficulty"] for r in ev}) == [1, 2, 3] and len(ev) == 15


def test_jsonl_held_out_never_reaches_training(word_task):
    held = {r["prompt"] for r in word_task.eval_sets(1000, 0)}
    train = {r["prompt"] for r in word_task.seed_set(0)} | {r["prompt"] for i in (1, 2, 3) for r in word_task.prompts(i, 100, 0)}
    assert held and train and not held & train
    assert {r["prompt"] for r in word_task.seed_set(0)}.isdisjoint(r["prompt"] for r in word_task.prompts(1, 100, 0))


def test_jsonl_split_does_not_depend_on_row_order(tmp_path, word_task):
    rows = _rows()
    random.Random(1).shuffle(rows)
    path = _write_jsonl(tmp_path / "shuffled.jsonl", rows)
    other = load_task("jsonl", {"path": str(path), "prompt_field": "q", "answer_field": "a",
                                "difficulty_field": "level", "prompt_template": "Q: {prompt}\nA: "})
    assert {r["prompt"] for r in other.pool.held_out} == {r["prompt"] for r in word_task.pool.held_out}


@pytest.mark.parametrize("completion,correct,reason", [
    ("7+8=15\n#### 15", True, "correct"),
    ("#### 15.0", True, "correct"),
    ("#### 16", False, "wrong: expected 15, got 16"),
    ("I don't know", False, "wrong: expected 15, got I don't know"),  # auto: no number, so the text itself
    ("", False, "no answer"),
])
def test_jsonl_verifier_table(word_task, completion, correct, reason):
    v = word_task.verify({"reference": "15"}, completion)
    assert v.correct is correct and v.score == float(correct) and v.reason.startswith(reason)


def test_jsonl_reads_parquet(tmp_path):
    pd.DataFrame(_rows(50)).to_parquet(tmp_path / "d.parquet")
    t = load_task("jsonl", {"path": str(tmp_path / "d.parquet"), "prompt_field": "q", "answer_field": "a",
                            "difficulty_field": "level", "seed_size": 5})
    assert len(t.seed_set(0)) == 5 and t.pool.rows[3]["prompt_id"] == "row-3"


@pytest.mark.parametrize("bad,message", [
    ('{"q": "What is 1?", "a": "#### 1"', r"d\.jsonl:3: not valid JSON"),
    ({"question": "What is 1?", "a": "#### 1"}, r"d\.jsonl:3: no field 'q' \(the row has 'question', 'a'\); set task\.params\.prompt_field"),
    ({"q": "What is 1?", "a": "unknown"}, r"d\.jsonl:3: field 'a': no final answer .* answer_format 'gsm8k'"),
    ({"q": ["not", "text"], "a": "#### 1"}, r"d\.jsonl:3: field 'q' must be a str, got list"),
    ([1, 2], r"d\.jsonl:3: expected a JSON object, got list"),
])
def test_jsonl_bad_row_names_file_line_and_field(tmp_path, bad, message):
    rows = _rows(2) + [json.dumps(bad) if not isinstance(bad, str) else bad] + _rows(3)
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError, match=message):
        load_task("jsonl", {"path": str(path), "prompt_field": "q", "answer_field": "a", "answer_format": "gsm8k"})


def test_jsonl_counts_the_other_bad_rows(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", _rows(5) + ['{"q": "x"}', '{"q": "y"}', "nonsense"])
    with pytest.raises(DataError, match=r"d\.jsonl:6: no field 'a'.* \(and 2 more bad rows\)"):
        load_task("jsonl", {"path": str(path), "prompt_field": "q", "answer_field": "a"})


def test_jsonl_missing_file(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        load_task("jsonl", {"path": str(tmp_path / "none.jsonl")})
    with pytest.raises(DataError, match="task.params.repo"):
        load_task("jsonl", {"path": "dvc://github.com/org/repo/data/gsm8k.jsonl@v1"})


def _git(args, cwd):
    import subprocess
    import sys
    dvc = [sys.executable, "-m", "dvc"] if args[0] == "dvc" else ["git", "-c", "user.name=t", "-c", "user.email=t@x"]
    subprocess.run([*dvc, *args[1:]], cwd=cwd, check=True, capture_output=True)


@pytest.mark.slow
def test_jsonl_reads_a_dvc_tracked_file_at_a_revision_and_records_what_it_read(tmp_path, monkeypatch):
    """DVC coordinates for real: a Git+DVC repository whose data file lives in its remote only; v1 and v2
    of the file differ, and the task reads the revision it is given and says which commit and bytes."""
    import hashlib

    monkeypatch.setenv("FLYWHEEL_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"],
                ["dvc", "remote", "add", "-d", "store", str(tmp_path / "remote")]):
        _git(cmd, repo)
    path = repo / "data" / "train.jsonl"
    versions = {}
    for tag, n in (("v1", 30), ("v2", 40)):
        _write_jsonl(path, _rows(n))
        versions[tag] = hashlib.md5(path.read_bytes()).hexdigest()
        for cmd in (["dvc", "add", "-q", "data/train.jsonl"], ["dvc", "push", "-q"], ["git", "add", "-A"],
                    ["git", "commit", "-qm", tag], ["git", "tag", tag]):
            _git(cmd, repo)
    path.unlink()  # the workspace copy is gone: the bytes must come from the DVC remote or cache

    params = {"path": "data/train.jsonl", "repo": str(repo), "prompt_field": "q", "answer_field": "a"}
    v1 = load_task("jsonl", {**params, "rev": "v1"})
    v2 = load_task("jsonl", {**params, "rev": "v2"})
    assert len(v1.pool.rows) == 30 and len(v2.pool.rows) == 40
    assert v1.inputs["md5"] == versions["v1"] and v2.inputs["md5"] == versions["v2"]
    assert v1.inputs["rev"] == "v1" and len(v1.inputs["commit"]) == 40
    # what was read reaches the prepare step's metrics, hence summary.json and W&B
    from conftest import tiny_config
    from flywheel.steps.data import make_datasets
    cfg = tiny_config(task={"name": "jsonl", "params": {**params, "rev": "v2", "seed_size": 5}})
    metrics = make_datasets(cfg, tmp_path / "seed.parquet", tmp_path / "eval.parquet")
    assert metrics["inputs"]["task_data"]["md5"] == versions["v2"]
    with pytest.raises(DataError, match=r"cannot read it from DVC repository .* at revision 'v9'"):
        load_task("jsonl", {**params, "rev": "v9"})
    with pytest.raises(DataError, match=r"@v2:data/train.jsonl:\d+: no field 'question'"):
        load_task("jsonl", {**params, "rev": "v2", "prompt_field": "question"})


def test_shipped_data_files_are_what_the_script_writes(tmp_path):
    make = runpy.run_path(str(ROOT / "examples" / "make_data.py"))
    make["main"](tmp_path)
    for name in make["FILES"]:
        assert (tmp_path / name).read_bytes() == (ROOT / "examples" / "data" / name).read_bytes(), \
            f"examples/data/{name} is stale: run `python examples/make_data.py`"


# --- code --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def code_task():
    return load_task("code", {"path": str(ROOT / "examples" / "data" / "code_problems.jsonl"), "id_field": "id",
                              "seed_size": 40, "sandbox": {"workers": 2, "wall_s": 3}})


def test_code_seed_solutions_pass_and_wrong_ones_fail(code_task):
    seed = pd.DataFrame(code_task.seed_set(0)).head(12)
    verdicts = code_task.verify_batch(seed)
    assert all(v.correct and v.score == 1.0 for v in verdicts), [v.reason for v in verdicts if not v.correct]
    wrong = code_task.verify_batch(seed.assign(completion=seed["completion"] + "+1"))
    assert not any(v.correct for v in wrong)
    assert code_task.verify(seed.iloc[0].to_dict(), "syntax error here").reason.startswith("failed: 0/3")


@pytest.mark.parametrize("bad,message", [
    ({"prompt": "p", "tests": []}, "must be a non-empty list"),
    ({"prompt": "p", "tests": ["assert f(1) =="]}, "test 0 .*not valid Python"),
    ({"prompt": "p"}, "no field 'tests'"),
    ({"prompt": "p", "tests": ["assert f(1) == 1"], "difficulty": "hard"}, "'difficulty' must be a int"),
    # grading needs the comparison outside the program's reach: refused when the file is read
    ({"prompt": "p", "tests": ["assert sorted([2, 1]) == [1, 2]"]}, "checks nothing the program defines"),
    ({"prompt": "p", "tests": ["assert all(f(x) == x for x in range(3))"]}, "comparisons and loops outside"),
    ({"prompt": "p", "tests": ["r = f(1)\nassert r == 1"]}, "a test is `assert ...` statements"),
])
def test_code_bad_row(tmp_path, bad, message):
    good = [{"prompt": f"p{i}", "tests": ["assert f(1) == 1"]} for i in range(10)]
    path = _write_jsonl(tmp_path / "c.jsonl", good + [bad])
    with pytest.raises(DataError, match=r"c\.jsonl:11: .*" + message):
        load_task("code", {"path": str(path)})
