"""`flywheel compare`: runs side by side (the label-free run next to the labelled one)."""

import json

from flywheel.cli import main


def _summary(accs, verifier, precision=None):
    its = [{"iteration": 0, "evaluate": {"accuracy": accs[0], "accuracy_beyond_seed": accs[0] / 2}, "durations": {}}]
    for i, a in enumerate(accs[1:], 1):
        verify = {"verifier": verifier, "pass_rate": 0.5}
        if precision is not None:
            verify["audit"] = {"accepted_precision": precision}
        its.append({"iteration": i, "evaluate": {"accuracy": a, "accuracy_beyond_seed": a / 2}, "verify": verify,
                    "durations": {}})
    return {"config": {}, "iterations": its}


def test_compare_two_runs(tmp_path, capsys):
    for name, summary in {"labelled": _summary([0.4, 0.6, 0.9], "task"),
                          "majority": _summary([0.4, 0.5, 0.7], "majority-vote", 0.95)}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "cmp.html"
    assert main(["compare", str(tmp_path / "labelled"), str(tmp_path / "majority"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "majority-vote" in text and "0.950" in text and "0.700" in text
    page = out.read_text()
    assert page.count("<img") == 1 and page.count("<tr>") == 1 + 6


def test_compare_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["compare", str(tmp_path), "--out", str(tmp_path / "x.html")]) == 2
    assert "a `flywheel run` output folder" in capsys.readouterr().err


def test_a_run_recorded_before_evaluate_had_its_name_still_compares(tmp_path, capsys):
    # summaries written before 2026-12-02 call the evaluate entry 'eval'
    old = _summary([0.4, 0.8], "task")
    for it in old["iterations"]:
        it["eval"] = it.pop("evaluate")
        it["durations"] = {"eval": 1.5}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "summary.json").write_text(json.dumps(old))
    assert main(["compare", str(tmp_path / "old"), "--out", str(tmp_path / "cmp.html")]) == 0
    assert "0.800" in capsys.readouterr().out
    from flywheel.io import read_summary

    it = read_summary(tmp_path / "old" / "summary.json")["iterations"][1]
    assert it["evaluate"]["accuracy"] == 0.8 and it["durations"] == {"evaluate": 1.5} and "eval" not in it
