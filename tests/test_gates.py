"""Quality gates on the real Great Expectations: for every rule, data that passes and data that fails with
a message naming the rule, the observed value and the threshold."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from flywheel.gates import GateError, NgramIndex, check_gate, distinct_ngram_ratio, ngrams
from flywheel.io import write_table
from flywheel.steps.curate import curated_suite
from flywheel.steps.evaluate import results_suite
from flywheel.steps.generate import samples_suite
from flywheel.steps.verify import verdicts_suite

from conftest import tiny_config

# K = 3 samples, 6 new tokens; at least 1.5 distinct answers per prompt (the default 1.0 suits arithmetic)
CFG = tiny_config(gates={"min_pass_rate": 0.2, "max_pass_rate": 0.8, "min_answers_per_prompt": 1.5})
EVAL = ["9+9=", "how many legs does a spider have if it lost two of them in a fight with a bird"]


def _samples(n_prompts=4, k=3) -> pd.DataFrame:
    rows = [{"prompt_id": f"p{i}", "prompt": f"{i}+1=", "reference": str(i + 1), "difficulty": 1, "sample_id": s,
             "completion": str(i + s), "prompt_tokens": 4, "completion_tokens": 2, "finished": True, "model": "m"}
            for i in range(n_prompts) for s in range(k)]
    return pd.DataFrame(rows)


def _verdicts() -> pd.DataFrame:
    df = _samples()
    df["correct"] = df["sample_id"] == 0  # pass rate 1/3, inside 0.2..0.8
    return df.assign(score=df["correct"].astype(float), reason=df["correct"].map({True: "correct", False: "wrong"}))


def _curated() -> pd.DataFrame:
    own = [{"prompt_id": f"p{i // 2}", "prompt": f"{i // 2}+1=", "completion": f"{i + 1} because {i} plus one", "difficulty": 1,
            "source": "self", "iteration": 1, "score": 1.0} for i in range(8)]
    seed = [{"prompt_id": f"s{i}", "prompt": f"{i}+2=", "completion": str(i + 2), "difficulty": 1, "source": "seed",
             "iteration": 1, "score": 1.0} for i in range(2)]
    return pd.DataFrame(own + seed)  # seed share 0.2 = curate.seed_fraction


def _results() -> pd.DataFrame:
    return pd.DataFrame([{"prompt_id": f"e{i}", "prompt": f"{i}+9=", "reference": str(i + 9), "difficulty": 1,
                          "completion": str(i + 9), "correct": True, "reason": "correct"} for i in range(5)])


SUITES = {"samples": (samples_suite, _samples, {}), "verdicts": (verdicts_suite, _verdicts, {}),
          "curated": (curated_suite, _curated, {"rows": 10}),
          "results": (results_suite, _results, {})}


def _gate(tmp_path, name, df, cfg=CFG, **context):
    suite, _, default_context = SUITES[name]
    path = tmp_path / f"{name}.parquet"
    write_table(df, path)
    if name == "curated":
        write_table(pd.DataFrame({"prompt": EVAL}), tmp_path / "eval.parquet")
        default_context = {**default_context, "eval_path": tmp_path / "eval.parquet"}
    return check_gate(name, path, suite, cfg, **{**default_context, **context})


@pytest.mark.parametrize("name", SUITES)
def test_good_data_passes_every_rule(tmp_path, name):
    g = _gate(tmp_path, name, SUITES[name][1]())
    assert g["passed"] and g["failed"] == [] and g["rules"] >= 5
    md = (tmp_path / f"{name}.gate.md").read_text()
    assert md.startswith(f"# Quality gate `{name}`: passed") and "FAIL" not in md
    assert json.loads((tmp_path / f"{name}.gate.json").read_text())["success"] is True


def _set(col, value):
    return lambda df: df.assign(**{col: value})


def _row(i, col, value):
    def f(df):
        df = df.copy()
        df.loc[i, col] = value
        return df
    return f


# (rule that must fail, how to break the good data); each breaks that rule and no other
BREAK = [
    ("samples.schema", lambda df: df.drop(columns=["finished"])),
    ("samples.prompt_type", _set("prompt", 7)),
    ("samples.completion_type", _set("completion", 1.5)),
    ("samples.no_null_completion", _row(0, "completion", None)),
    ("samples.prompt_length", _row(0, "prompt", "")),
    ("samples.completion_length", _row(0, "completion", "9" * 9000)),
    ("samples.empty_completions", lambda df: df.assign(completion=[""] * 7 + ["1"] * 5)),
    ("samples.completion_tokens", _row(0, "completion_tokens", 99)),
    ("samples.sample_ids", _row(0, "sample_id", 3)),
    ("verdicts.schema", lambda df: df.drop(columns=["difficulty"])),
    ("verdicts.correct_type", lambda df: df.assign(correct=df["correct"].astype(int))),
    ("verdicts.score_not_null", _row(0, "score", None)),
    ("verdicts.reason", _row(0, "reason", "")),
    ("verdicts.pass_rate", lambda df: df.assign(correct=True)),     # the verifier passes everything
    ("verdicts.pass_rate", lambda df: df.assign(correct=False)),    # ... or nothing
    ("curated.schema", lambda df: df.drop(columns=["iteration"])),
    ("curated.types", lambda df: df.assign(completion=list(range(10)))),
    ("curated.source", _row(0, "source", "web")),
    ("curated.prompt_length", _row(0, "prompt", "")),
    ("curated.completion_length", _row(0, "completion", "")),
    ("curated.duplicate_rate", lambda df: df.assign(prompt="1+1=", completion=["2"] * 5 + [f"{i}" for i in range(5)])),
    ("curated.answers_per_prompt", lambda df: df.assign(prompt_id=[f"q{i}" for i in range(10)])),
    ("curated.distinct_ngrams", lambda df: df.assign(completion=[("so " * 20) + str(i) for i in range(10)])),
    ("curated.seed_share", lambda df: df.assign(source=["self"] * 10)),
    ("curated.contamination_exact", _row(3, "prompt", "9+9=")),
    ("curated.contamination_ngram_completion", _row(3, "completion", "so: how many legs does a spider have if it "
                                                                  "lost two of them in a fight? 6")),
    ("results.schema", lambda df: df.drop(columns=["reference"])),
    ("results.rows", lambda df: df.iloc[:0]),
    ("results.unique_problems", _row(1, "prompt_id", "e0")),
    ("results.prompt", _row(0, "prompt", "")),
    ("results.completion", _row(0, "completion", None)),
    ("results.correct_type", lambda df: df.assign(correct="yes")),
]
ALSO = {  # breaking these necessarily breaks a second rule
    "samples.prompt_type": {"samples.prompt_length"}, "samples.completion_type": {"samples.completion_length", "samples.empty_completions"},
    "samples.no_null_completion": {"samples.empty_completions"}, "curated.types": {"curated.completion_length", "curated.distinct_ngrams"},
    "results.rows": {"results.unique_problems"},
    "samples.empty_completions": {"samples.completion_length"},
    "curated.contamination_exact": {"curated.contamination_ngram_prompt"},  # a one-word prompt is its own n-gram
}


@pytest.mark.parametrize("rule_id,breaker", BREAK, ids=[f"{r}-{i}" for i, (r, _) in enumerate(BREAK)])
def test_each_rule_fails_on_bad_data_with_observed_and_threshold(tmp_path, rule_id, breaker):
    name = rule_id.split(".")[0]
    bad = breaker(SUITES[name][1]())
    with pytest.raises(GateError) as info:
        _gate(tmp_path, name, bad)
    err = info.value
    assert rule_id in err.failed and set(err.failed) - {rule_id} <= ALSO.get(rule_id, set()), err.failed
    line = next(ln for ln in str(err).splitlines() if ln.strip().startswith(rule_id + ":"))
    assert "observed " in line and "threshold " in line
    # the data and the validation result stay for inspection
    assert (tmp_path / f"{name}.parquet").exists() and (tmp_path / f"{name}.gate.json").exists()
    assert "| FAIL | `" + rule_id + "`" in (tmp_path / f"{name}.gate.md").read_text()


def test_pass_rate_message_names_observed_value_and_window(tmp_path):
    with pytest.raises(GateError, match=r"verdicts.pass_rate: .*observed 1; threshold 0.2..0.8 "
                                        r"\(gates.min_pass_rate, gates.max_pass_rate\)"):
        _gate(tmp_path, "verdicts", _verdicts().assign(correct=True))


def test_a_rule_set_to_warn_reports_but_does_not_stop(tmp_path):
    cfg = tiny_config(gates={"warn": ["verdicts.pass_rate"], "min_pass_rate": 0.2, "max_pass_rate": 0.8})
    g = _gate(tmp_path, "verdicts", _verdicts().assign(correct=True), cfg=cfg)
    assert g["passed"] and g["warnings"] == ["verdicts.pass_rate"] and g["observed"]["verdicts.pass_rate"] == 1.0
    assert "| WARN | `verdicts.pass_rate`" in (tmp_path / "verdicts.gate.md").read_text()
    cfg_all = tiny_config(gates={"warn": ["curated"]})  # a whole gate set to warn
    g = _gate(tmp_path, "curated", _curated().assign(source="self"), cfg=cfg_all)
    assert g["passed"] and g["warnings"] == ["curated.seed_share"]


def test_gates_off_write_nothing(tmp_path):
    g = _gate(tmp_path, "verdicts", _verdicts().assign(correct=True), cfg=tiny_config(gates={"enabled": False}))
    assert g["enabled"] is False and not list(tmp_path.glob("*.gate.*"))
    assert g["hashes"]["output"]["md5"] == hashlib.md5((tmp_path / "verdicts.parquet").read_bytes()).hexdigest()


def test_fallback_to_seed_rows_expects_a_seed_share_of_one(tmp_path):
    seed_only = _curated().assign(source="seed")
    assert _gate(tmp_path, "curated", seed_only, fallback=True)["passed"]  # diversity: nothing to measure


def test_ngrams_and_contamination_index():
    assert ngrams("75000+80000=", 13) == [("75000+80000=",)]
    assert ngrams("a b c D", 3) == [("a", "b", "c"), ("b", "c", "d")]
    idx = NgramIndex(["9+9=", " ".join(f"w{i}" for i in range(20))], n=13)
    assert idx.hits("9+9=") == 1 and idx.hits("19+9=") == 0 and idx.hits("x 9+9= y") == 1
    assert idx.hits("prefix " + " ".join(f"W{i}" for i in range(3, 16))) == 1   # 13 words in a row, any case
    assert idx.hits(" ".join(f"w{i}" for i in range(3, 15))) == 0               # only 12
    assert distinct_ngram_ratio(["a b c", "a b c"], 2) == 0.5 and distinct_ngram_ratio([], 2) == 0.0


def test_gx_import_defers_what_the_gates_never_use():
    """Importing GX for a gate leaves scipy.stats and altair unimported (most of GX's import time they are
    not used), and they still work when something uses them. In a fresh process: the test session may
    have imported them already."""
    import subprocess
    import sys

    program = (
        "import sys; from flywheel.gates import _gx, _Deferred, DEFERRED_BY_GX; _gx()\n"
        "print(all(isinstance(sys.modules[n], _Deferred) for n in DEFERRED_BY_GX))\n"
        "from great_expectations.expectations.core.expect_column_kl_divergence_to_be_less_than import stats, alt\n"
        "print(round(float(stats.entropy([0.5, 0.5], [0.9, 0.1])), 4), alt.Chart.__name__)\n"
        "print(not any(isinstance(sys.modules[n], _Deferred) for n in DEFERRED_BY_GX))\n")
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:3] == ["True", "0.5108 Chart", "True"], out
