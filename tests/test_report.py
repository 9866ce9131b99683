"""report.html from a summary: the plots a reader looks at first."""

from __future__ import annotations

import pytest

from flywheel.report import plot_summary, write_report

from conftest import tiny_config


def _summary(audit: bool) -> dict:
    its = []
    for i in range(3):
        acc = {str(d): min(1.0, 0.3 * (4 - d) + 0.2 * i) for d in range(1, 5)}
        it = {"iteration": i, "evaluate": {"accuracy": sum(acc.values()) / 4, "accuracy_by_difficulty": acc},
              "durations": {"evaluate": 1.0}}
        if i:
            it["verify"] = {"pass_rate": 0.5, "prompts_with_correct": 0.8}
            if audit:
                it["verify"]["audit"] = {"reference_pass_rate": 0.6, "accepted_precision": 0.9}
        its.append(it)
    return {"iterations": its, "config": tiny_config().model_dump(mode="json")}


def test_report_shows_accuracy_per_difficulty_and_iteration_and_the_audit(tmp_path):
    titles = [t for t, _ in plot_summary(_summary(audit=True))]
    assert "Held-out accuracy per difficulty and iteration" in titles
    page = write_report(_summary(audit=True), tmp_path / "r.html").read_text()
    assert page.count("<img") == len(titles)
    # the audited verify plot carries two more lines than the plain one: its PNG differs
    plain = dict(plot_summary(_summary(audit=False)))["Verifier pass rate on the iteration's samples"]
    audited = dict(plot_summary(_summary(audit=True)))["Verifier pass rate on the iteration's samples"]
    assert plain != audited


def test_intervals_training_curves_timings_and_reward_margin_are_drawn(tmp_path):
    from flywheel.monitor import accuracy_intervals

    s = _summary(audit=False)
    for it in s["iterations"]:
        counts = {d: 50 for d in it["evaluate"]["accuracy_by_difficulty"]}
        it["evaluate"]["seed_max_difficulty"], it["evaluate"]["accuracy_beyond_seed"] = 2, 0.4
        it["intervals"] = accuracy_intervals(it["evaluate"], counts)
        if it["iteration"]:
            it["durations"].update(generate=3.0, train=5.0)
            it["train"] = {"loss": 0.2, "reward_margin": 0.9, "log_history": [
                {"step": 5, "loss": 0.6, "rewards/margins": 0.1}, {"step": 10, "loss": 0.2, "rewards/margins": 0.9}]}
            it["promote"] = {"promoted": True, "p_value": 0.01, "delta": 0.2}
            it["intervals"]["promote_delta"] = [0.1, 0.3]
    titles = [t for t, _ in plot_summary(s)]
    assert {"Training loss per iteration (the Trainer's logged steps)", "DPO reward margin per iteration",
            "Time per step"} <= set(titles)
    page = write_report(s, tmp_path / "r.html").read_text()
    lo, hi = s["iterations"][2]["intervals"]["accuracy"]
    assert f"[{lo:.3f}, {hi:.3f}]" in page and "&Delta; +0.200 [+0.100, +0.300]" in page
    assert "<th>reward margin</th>" in page
    # without curves in the metrics (an older train step), no empty plot
    for it in s["iterations"]:
        it.get("train", {}).pop("log_history", None)
    assert "Training loss per iteration (the Trainer's logged steps)" not in [t for t, _ in plot_summary(s)]


def test_wilson_and_the_paired_delta_interval():
    from flywheel.monitor import paired_delta_interval, wilson

    lo, hi = wilson(182, 200)  # 0.91 on 200 items: about +/- 4 points
    assert lo < 0.91 < hi and 0.06 < hi - lo < 0.09 and wilson(0, 30)[0] == 0.0 and wilson(0, 0) is None
    # paired: 30 items only the challenger solves, 10 only the champion, n = 200 -> delta +0.10
    lo, hi = paired_delta_interval(100, 30, 10, 60)
    wald = 1.96 * (40 - 20 ** 2 / 200) ** 0.5 / 200  # the Wald interval agrees at this size
    assert abs(lo - (0.10 - wald)) < 0.005 and abs(hi - (0.10 + wald)) < 0.005
    assert paired_delta_interval(100, 10, 30, 60) == pytest.approx((-hi, -lo))  # swapping the models mirrors it
    assert paired_delta_interval(0, 5, 0, 0)[1] == 1.0  # stays inside [-1, 1]


def test_record_stores_intervals_and_shows_one_readable_sample_per_prompt(tmp_path):
    import pandas as pd

    from flywheel.io import write_json, write_table
    from flywheel.report import record_iteration

    rows = [{"prompt_id": f"p{k}", "prompt": f"{k}0+10=", "reference": f"{k + 1}00", "difficulty": 1 + k % 2,
             "sample_id": j, "completion": f"{k + 1}00" if j == 0 else "000", "prompt_tokens": 4,
             "completion_tokens": 3, "finished": True, "model": "m", "correct": j == 0, "score": float(j == 0),
             "reason": "correct" if j == 0 else f"wrong: expected {k + 1}00, got 000"} for k in range(6) for j in range(4)]
    write_table(pd.DataFrame(rows), tmp_path / "verdicts.parquet")
    write_table(pd.DataFrame({"prompt_id": [f"e{k}" for k in range(30)], "difficulty": [1] * 20 + [2] * 10,
                              "correct": [True] * 15 + [False] * 15}), tmp_path / "results.parquet")
    write_json({"accuracy": 0.5, "accuracy_by_difficulty": {"1": 0.75, "2": 0.0}, "accuracy_beyond_seed": 0.0,
                "seed_max_difficulty": 1, "duration_s": 1.0}, tmp_path / "ev.json")
    s = record_iteration(tiny_config(tracking={"wandb": "disabled"}), 0, tmp_path / "s.json", tmp_path / "r.html",
                         evaluate=tmp_path / "ev.json", verdicts=tmp_path / "verdicts.parquet",
                         results=tmp_path / "results.parquet")
    it = s["iterations"][0]
    assert it["eval_items"] == {"1": 20, "2": 10}
    lo, hi = it["intervals"]["accuracy_by_difficulty"]["1"]
    assert lo < 0.75 < hi and it["intervals"]["accuracy_beyond_seed"][0] == 0.0
    ex = s["examples"]
    assert len({e["prompt"] for e in ex}) == len(ex) == 6  # 3 correct + 3 wrong prompts, never one prompt twice
    assert ex[0]["readable"] == {"prompt": "0 + 1 =", "completion": "1", "reference": "1",
                                 "reason": "correct"}  # arithmetic: 00+10= reversed
    wrong = next(e for e in ex if e["prompt"] == "40+10=")
    assert wrong["readable"]["reason"] == "wrong: expected 5, got 0"  # the verdict in the digits people read
    html = (tmp_path / "r.html").read_text()
    assert "0 + 1 =" in html and "wrong: expected 5, got 0" in html
