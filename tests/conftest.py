"""Shared fixtures: a tiny config and, once per session, the task's data and a warm-started tiny model."""

from __future__ import annotations

import pytest

from flywheel.config import Config, parse_config

TINY = {
    "iterations": 2,
    "task": {"params": {"width": 3, "seed_digits": 1, "seed_size": 200}},
    "model": {"embedded": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                           "num_attention_heads": 2, "max_position_embeddings": 24, "warmup_steps": 100,
                           "learning_rate": 0.005,
                           "batch_size": 32}},
    "generate": {"prompts_per_iteration": 24, "samples_per_prompt": 3, "max_new_tokens": 6, "batch_size": 64},
    "train": {"max_steps": 20, "batch_size": 16},
    "evaluate": {"per_difficulty": 10},
    # The tiny model is too weak to pass anything at first; the pass-rate floor is tested on its own.
    "gates": {"min_pass_rate": 0.0},
}


def two_ranks(test):
    """Mark a test that runs gloo ranks under torchrun: it fails after 300 s (they take under a minute here,
    two with DeepSpeed's first JIT build), every rank's stack then in its log (train.distributed.run_ranks),
    and a timeout is retried once. Why: CI of stop 19 hung ~75 min in one of them; the cause is not known
    (not reproduced here in 15 runs, one of them a fresh clone). The retry is listed under "rerun test
    summary info" with the first attempt's traceback (pyproject addopts), so a recurrence shows; any other
    failure is not retried."""
    return pytest.mark.timeout(300)(pytest.mark.flaky(reruns=1, only_rerun=["Timeout"])(test))


def tiny_config(**overrides) -> Config:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            data.setdefault(section, {})[field] = value
        else:
            data[section] = value
    return parse_config(data, "<tiny test config>")


@pytest.fixture(scope="session")
def cfg() -> Config:
    return tiny_config()


@pytest.fixture(scope="session")
def prepared(cfg, tmp_path_factory):
    """Seed set, evaluation set, and the warm-started tiny model (built once: ~10 s)."""
    from flywheel.steps.data import make_datasets
    from flywheel.steps.init_model import init_model

    d = tmp_path_factory.mktemp("prepared")
    make_datasets(cfg, d / "seed.parquet", d / "eval.parquet")
    metrics = init_model(cfg, d / "seed.parquet", d / "model0")
    return {"dir": d, "seed": d / "seed.parquet", "eval": d / "eval.parquet", "model": d / "model0",
            "init_metrics": metrics}
