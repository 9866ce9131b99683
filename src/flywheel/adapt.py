"""Between iterations: choose the sampling settings and the prompt mix from the last iteration's health.

B-STaR (Zeng et al. 2024) shows that the best temperature drifts during self-improvement: early on the model
needs sharp sampling to be right at all, later it needs heat to keep producing *different* right answers.
B-STaR sweeps temperatures on a dev set each iteration; we take one cheap step per iteration instead,
within configured bounds, from two signals of the last iteration:
- exploitation is the bottleneck (fewer than half the prompts got any verified answer): sample more
  (K x 2) and cooler (- step), so that the few right answers are found;
- exploration is the bottleneck (most prompts solved, but fewer distinct right answers per prompt than
  curate keeps): sample hotter (+ step), so that the kept answers differ;
- otherwise keep the settings.
Every choice is recorded with its reason.
"""

from __future__ import annotations

import random

from flywheel.config import Config


def choose_sampling(cfg: Config, last: dict | None) -> dict:
    """The generate settings of the next iteration: {temperature, samples_per_prompt, reason}."""
    g = cfg.generate
    plan = {"temperature": g.temperature, "samples_per_prompt": g.samples_per_prompt, "reason": "configured"}
    if not g.adaptive or last is None or "health" not in last:
        return plan
    h = last["health"]
    used = last.get("generate", {}).get("plan", {})
    t0 = used.get("temperature", g.temperature)
    k0 = used.get("samples_per_prompt", g.samples_per_prompt)
    (t_lo, t_hi), (k_lo, k_hi) = g.temperature_bounds, g.samples_bounds
    if h["prompts_with_correct"] < 0.5:
        t, k = max(t_lo, t0 - g.temperature_step), min(k_hi, k0 * 2)
        why = (f"exploitation: only {h['prompts_with_correct']:.0%} of prompts had a verified answer, "
               f"so sample more and cooler")
    elif h["distinct_correct_per_prompt"] < cfg.curate.max_per_prompt:
        t, k = min(t_hi, t0 + g.temperature_step), k0
        why = (f"exploration: {h['distinct_correct_per_prompt']:.2f} distinct right answers per prompt "
               f"< {cfg.curate.max_per_prompt} kept, so sample hotter")
    else:
        t, k, why = t0, k0, "balanced: keep the settings"
    return {"temperature": round(t, 4), "samples_per_prompt": int(max(k_lo, k)),
            "reason": why + f" (balance score {h['balance_score']:.3f})"}


def frontier_weights(pass_rate_by_difficulty: dict[str, float], floor: float = 0.05) -> dict[int, float]:
    """Weight per difficulty, highest where the model is right sometimes but not always: p(1-p), floored
    so that no level vanishes (mastered levels are still rehearsed a little)."""
    return {int(d): max(p * (1 - p), floor) for d, p in pass_rate_by_difficulty.items()}


def reweight(rows: list[dict], weights: dict[int, float], n: int, seed: int) -> list[dict]:
    """Draw `n` of `rows` (without replacement) with probability proportional to their difficulty's
    weight; difficulties the last iteration did not see get the largest weight (they are the new frontier)."""
    top = max(weights.values(), default=1.0)
    rng = random.Random(seed)
    # Efraimidis-Spirakis weighted sampling without replacement: keep the n largest u^(1/w).
    keyed = [(rng.random() ** (1.0 / weights.get(int(r["difficulty"]), top)), i) for i, r in enumerate(rows)]
    keep = sorted(i for _, i in sorted(keyed, reverse=True)[:n])
    return [rows[i] for i in keep]
