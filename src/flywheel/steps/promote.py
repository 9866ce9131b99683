"""promote: champion or challenger. The iteration's model replaces the champion only when it is better on the
held-out items by a margin that a paired test supports; otherwise the champion carries on.

A step that takes both models and writes the chosen one runs everywhere (kfp.local cannot select between
artifacts with `dsl.OneOf`). Decision rule: promote when the challenger's accuracy minus the champion's is
at least `promote.min_delta` and the exact McNemar test on the same items gives p < `promote.alpha`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from flywheel.config import Config
from flywheel.io import atomic_dir, read_json, read_table, write_json, write_table
from flywheel.monitor import mcnemar
from flywheel.steps import step


def _copy_model(src: Path, dst: Path) -> None:
    """Hard-link the files when possible (same filesystem: free), else copy."""
    def link_or_copy(s, d):
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    with atomic_dir(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True, copy_function=link_or_copy)


@step
def promote_model(champion_dir: str | Path, champion_results: str | Path, champion_metrics: str | Path,
                  challenger_dir: str | Path, challenger_results: str | Path, challenger_metrics: str | Path,
                  out_dir: str | Path, out_results: str | Path, out_metrics: str | Path, cfg: Config,
                  iteration: int, previous_decision: str | Path | None = None) -> dict:
    """Write the chosen model, its evaluation results and metrics to the `out_*` paths; return the decision,
    with `continue_loop` False when a stop criterion holds (see `promote.patience`, `promote.max_regression`)."""
    p = cfg.promote
    a = read_table(champion_results, ("prompt_id", "correct"), what="champion evaluation results")
    b = read_table(challenger_results, ("prompt_id", "correct"), what="challenger evaluation results")
    paired = a.merge(b, on="prompt_id", suffixes=("_champion", "_challenger"), validate="one_to_one")
    if len(paired) != len(a) or len(paired) != len(b):
        raise ValueError(f"{challenger_results}: evaluated on different items than {champion_results} "
                         f"({len(b)} vs {len(a)}, {len(paired)} shared); a paired test needs the same held-out set")
    test = mcnemar(paired["correct_champion"], paired["correct_challenger"])
    before = read_json(previous_decision, "previous promotion decision") if previous_decision else {}
    # A loop that stopped earlier stays stopped: the KFP pipeline never runs this iteration (`dsl.If` on the
    # previous verdict), but `dvc repro` has no conditions and runs every stage, so its champion would
    # otherwise be whatever a later iteration reached, not the one the pipeline ends with.
    stopped = before.get("continue_loop") is False
    if stopped:
        promoted, why = False, (f"the loop stopped at iteration {before['iteration']} "
                                f"({before['stop_reason']}); the champion carries on")
    elif p.policy == "always":
        promoted, why = True, "promote.policy is 'always'"
    elif test["delta"] < p.min_delta:
        promoted, why = False, f"accuracy delta {test['delta']:+.4f} < min_delta {p.min_delta}"
    elif test["p_value"] >= p.alpha:
        promoted, why = False, f"McNemar p = {test['p_value']:.4g} >= alpha {p.alpha} (not significant)"
    else:
        promoted, why = True, (f"accuracy delta {test['delta']:+.4f} >= {p.min_delta} and McNemar "
                               f"p = {test['p_value']:.4g} < {p.alpha}")
    src = (challenger_dir, challenger_results, challenger_metrics) if promoted else \
        (champion_dir, champion_results, champion_metrics)
    _copy_model(Path(src[0]), Path(out_dir))
    write_table(read_table(src[1]), out_results)
    chosen = read_json(src[2], "evaluation metrics")
    write_json(chosen, out_metrics)

    stale = 0 if promoted else 1 + (before["stale_iterations"] if before else 0)
    stop = None
    if stopped:
        stop = before["stop_reason"]
    elif -test["delta"] > p.max_regression:
        stop = f"regression: the iteration's model is {-test['delta']:.3f} below the champion (limit {p.max_regression})"
    elif stale >= p.patience:
        stop = f"no promotion for {stale} iteration(s) in a row (patience {p.patience})"
    return {"iteration": iteration, "promoted": promoted, "reason": why, **test,
            "stale_iterations": stale, "continue_loop": stop is None, "stop_reason": stop,
            "champion_accuracy": float(paired["correct_champion"].mean()),
            "challenger_accuracy": float(paired["correct_challenger"].mean()),
            "champion_iteration": chosen["iteration"], "model": str(out_dir)}
