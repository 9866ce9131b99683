"""Verifiers for tests, named by import path in a config (`verify.verifier: verifiers:pass_all`)."""

from flywheel.tasks import Verdict


def pass_all(problem, completion):
    """A broken verifier that accepts everything: the verdicts gate must stop the iteration."""
    return Verdict(correct=True, score=1.0, reason="accepted")


def digits_right(problem, completion):
    """A graded reward for the tiny model: the share of the answer's digits in the right place (a near-random
    model already gets some, so a group's rewards differ and GRPO has a signal from the first step)."""
    want = str(problem["reference"])
    got = completion.strip()
    right = sum(a == b for a, b in zip(want, got)) / len(want)
    score = right if len(got) == len(want) else right / 2
    return Verdict(correct=score == 1.0, score=score, reason=f"{score:.2f} of the digits right")

