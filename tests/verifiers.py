"""Verifiers for tests, named by import path in a config (`verify.verifier: verifiers:pass_all`)."""

from flywheel.tasks import Verdict


def pass_all(problem, completion):
    """A broken verifier that accepts everything: the verdicts gate must stop the iteration."""
    return Verdict(correct=True, score=1.0, reason="accepted")
