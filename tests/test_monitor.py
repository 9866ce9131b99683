"""Tables of (input, expected) for the loop-health measures."""

import math

import pandas as pd
import pytest

from flywheel.monitor import (balance_score, distinct_ngram_ratio, iteration_health, mcnemar, pass_at_k,
                              separation_auc)


@pytest.mark.parametrize("n,c,k,expected", [
    (4, 0, 1, 0.0), (4, 4, 1, 1.0), (4, 1, 1, 0.25), (4, 1, 4, 1.0), (4, 2, 2, 1 - 1 / 6), (8, 3, 8, 1.0),
])
def test_pass_at_k(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_needs_enough_samples():
    with pytest.raises(ValueError, match="at least 5"):
        pass_at_k(4, 1, 5)


@pytest.mark.parametrize("texts,expected", [(["aaaa"], 0.5), (["abcd", "abcd"], 0.5), (["abc", "xyz"], 1.0), (["ab"], 0.0)])
def test_distinct_ngrams(texts, expected):
    assert distinct_ngram_ratio(texts, 3) == pytest.approx(expected)


@pytest.mark.parametrize("scores,labels,expected", [
    ([0.9, 0.8, 0.1, 0.2], [True, True, False, False], 1.0),
    ([0.1, 0.2, 0.9, 0.8], [True, True, False, False], 0.0),
    ([1.0, 1.0, 1.0, 1.0], [True, False, True, False], 0.5),   # a verifier that passes everything
    ([1.0, 0.0], [True, True], None),
])
def test_separation_auc(scores, labels, expected):
    got = separation_auc(scores, labels)
    assert got == expected if expected is None else got == pytest.approx(expected)


def test_balance_score_rewards_distinct_and_precise_selection():
    rows = lambda comps, sel, gold: pd.DataFrame({"prompt_id": "p", "completion": comps, "selected": sel, "gold": gold})
    explore = rows(["1", "2", "3", "x"], [True, True, True, False], [True, True, True, False])
    collapse = rows(["1", "1", "1", "x"], [True, True, True, False], [True, True, True, False])
    fooled = rows(["1", "2", "x", "y"], [True, True, True, True], [True, True, False, False])
    assert balance_score(explore, n_star=2) == 1.0
    assert balance_score(collapse, n_star=2) == 0.5
    assert balance_score(fooled, n_star=2) == 0.5


def test_iteration_health_with_a_verifier_that_passes_everything():
    df = pd.DataFrame({"prompt_id": ["a"] * 4 + ["b"] * 4, "completion": list("1234") + list("5566"),
                       "correct": [True] * 8, "score": [1.0] * 8})
    gold = pd.Series([True, False, False, False, False, False, True, True])
    h = iteration_health(df, gold=gold, n_star=2)
    assert h["verifier_false_positive_rate"] == 1.0 and h["verifier_false_negative_rate"] == 0.0
    assert h["separation_auc"] == 0.5
    assert h["pass@1"] == pytest.approx((0.25 + 0.5) / 2) and h["pass@4"] == 1.0
    assert h["prompts_with_correct"] == 1.0 and h["distinct_correct_per_prompt"] == 1.0


@pytest.mark.parametrize("champ,chall,p", [
    ([True] * 10, [True] * 10, 1.0),
    ([False] * 10, [True] * 10, 2 / 2**10),
    ([True, False] * 5, [False, True] * 5, 1.0),
])
def test_mcnemar(champ, chall, p):
    r = mcnemar(champ, chall)
    assert r["p_value"] == pytest.approx(p)
    assert r["delta"] == pytest.approx(sum(chall) / 10 - sum(champ) / 10)


def test_mcnemar_refuses_unpaired():
    with pytest.raises(ValueError, match="same items"):
        mcnemar([True], [True, False])
