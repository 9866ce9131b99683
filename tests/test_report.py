"""report.html from a summary: the plots a reader looks at first."""

from __future__ import annotations

from flywheel.report import plot_summary, write_report

from conftest import tiny_config


def _summary(audit: bool) -> dict:
    its = []
    for i in range(3):
        acc = {str(d): min(1.0, 0.3 * (4 - d) + 0.2 * i) for d in range(1, 5)}
        it = {"iteration": i, "eval": {"accuracy": sum(acc.values()) / 4, "accuracy_by_difficulty": acc},
              "durations": {"eval": 1.0}}
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
