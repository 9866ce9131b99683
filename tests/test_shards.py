"""Scale-out of generate -> verify: 1 shard and 3 shards give the same rows for the same seed.

Sampling is seeded per (seed, prompt, sample), so neither the batch size nor the split of the prompts
over pods changes a sample; merge_shards restores the single-pod order and metrics.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from flywheel.io import read_json, read_table
from flywheel.steps.generate import generate_samples
from flywheel.steps.sampling import gumbel_noise, noise_bits, row_keys
from flywheel.steps.shards import merge_shards
from flywheel.steps.data import sample_prompts
from flywheel.steps.verify import verify_samples

from conftest import TINY, tiny_config


def _one_shard(cfg, prepared, d, iteration=1):
    sample_prompts(cfg, iteration, d / "prompts.parquet")
    generate_samples(prepared["model"], d / "prompts.parquet", d / "s.parquet", cfg, iteration=iteration)
    verify_samples(d / "s.parquet", d / "v.parquet", cfg)
    return read_table(d / "v.parquet")


def test_three_shards_merge_to_the_rows_of_one(cfg, prepared, tmp_path):
    single = _one_shard(cfg, prepared, tmp_path)
    assert single["completion"].nunique() > 5  # really sampled, not greedy
    small_batches = tiny_config(generate__batch_size=5)  # a different batch layout in every shard
    paths = {"v": [], "g": [], "m": []}
    for k in range(3):
        generate_samples(prepared["model"], tmp_path / "prompts.parquet", tmp_path / f"s{k}.parquet", small_batches,
                         iteration=1, shard=k, shards=3, metrics_path=tmp_path / f"g{k}.json")
        verify_samples(tmp_path / f"s{k}.parquet", tmp_path / f"v{k}.parquet", cfg, metrics_path=tmp_path / f"m{k}.json")
        for key, name in (("v", f"v{k}.parquet"), ("g", f"g{k}.json"), ("m", f"m{k}.json")):
            paths[key].append(tmp_path / name)
    shard_sizes = [len(read_table(p)) for p in paths["v"]]
    assert shard_sizes == [24, 24, 24]  # 24 prompts x 3 samples over 3 shards
    merge_shards(tmp_path / "prompts.parquet", paths["v"], paths["g"], paths["m"], tmp_path / "merged.parquet",
                 tmp_path / "gen.json", tmp_path / "ver.json")
    merged = read_table(tmp_path / "merged.parquet")
    pd.testing.assert_frame_equal(merged, single)
    gen, ver = read_json(tmp_path / "gen.json"), read_json(tmp_path / "ver.json")
    assert gen["samples"] == len(single) and gen["shards"] == 3 and gen["prompts"] == 24
    assert ver["pass_rate"] == pytest.approx(float(single["correct"].mean()))


def test_merge_refuses_a_missing_shard(cfg, prepared, tmp_path):
    sample_prompts(cfg, 1, tmp_path / "prompts.parquet")
    generate_samples(prepared["model"], tmp_path / "prompts.parquet", tmp_path / "s0.parquet", cfg, iteration=1,
                     shard=0, shards=2, metrics_path=tmp_path / "g0.json")
    verify_samples(tmp_path / "s0.parquet", tmp_path / "v0.parquet", cfg, metrics_path=tmp_path / "m0.json")
    with pytest.raises(ValueError, match="no samples in any of the 1 shards"):
        merge_shards(tmp_path / "prompts.parquet", [tmp_path / "v0.parquet"], [tmp_path / "g0.json"],
                     [tmp_path / "m0.json"], tmp_path / "m.parquet", tmp_path / "g.json", tmp_path / "v.json")


def test_seeded_noise_is_gumbel_and_the_same_on_both_implementations():
    keys = row_keys(7, [f"p{i}" for i in range(400)], 50)
    noise = gumbel_noise(keys, 3, 4)
    # Gumbel(0,1): mean = Euler-Mascheroni constant, variance = pi^2/6
    assert float(noise.mean()) == pytest.approx(0.5772, abs=0.01)
    assert float(noise.var()) == pytest.approx(np.pi**2 / 6, rel=0.03)
    # argmax(logits + noise) samples softmax(logits)
    logits = np.log(np.array([0.6, 0.25, 0.1, 0.05]))
    freq = np.bincount((noise.numpy() + logits).argmax(1), minlength=4) / len(keys)
    np.testing.assert_allclose(freq, [0.6, 0.25, 0.1, 0.05], atol=0.01)
    # a different step or key gives different noise; the torch version (GPUs) gives the numpy version's bits
    assert not np.array_equal(noise_bits(keys[:8], 3, 4).numpy(), noise_bits(keys[:8], 4, 4).numpy())
    import flywheel.steps.sampling as s
    step_h = int(s._mix32_np(np.array([3 * s._STEP & s._M32], dtype=np.uint32))[0])
    import torch
    x = s._mix32_t(torch.as_tensor(np.asarray(keys[:64], dtype=np.int64)) ^ step_h)
    t = s._mul32_t(torch.arange(4, dtype=torch.int64), s._TOKEN)
    assert torch.equal(s._mix32_t(s._mix32_t(x[:, None] ^ t[None, :])), noise_bits(keys[:64], 3, 4))


@pytest.mark.slow
def test_fan_out_runs_in_kfp_local_and_matches_one_shard(tmp_path):
    """The pipeline with cluster.shards=3 through kfp.local: ParallelFor, Collected, merge."""
    from flywheel.cli import main

    # a barely warmed-up model and tiny train/eval steps: this test is about the DAG, not about learning
    model = {"embedded": {**TINY["model"]["embedded"], "warmup_steps": 5}}
    data = {**TINY, "iterations": 1, "model": model, "cluster": {"shards": 3},
            "train": {"max_steps": 2, "batch_size": 16}, "evaluate": {"per_difficulty": 4}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "out"), "--no-cache"]) == 0
    root = next((tmp_path / "out" / "kfp").iterdir())
    merged = read_table(root / "merge-shards" / "merged")
    # the same rows, in-process, one shard, from the run's own starting model and prompts
    cfg = tiny_config(iterations=1, model=model)
    prepared = {"model": root / "init-model" / "model"}
    single = _one_shard(cfg, prepared, tmp_path)
    pd.testing.assert_frame_equal(merged.drop(columns="model"), single.drop(columns="model"))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["iterations"][1]["generate"]["shards"] == 3
    assert summary["iterations"][1]["verify"]["samples"] == len(single)


def test_a_sharded_pipeline_refuses_a_run_that_changes_its_compiled_generate_settings():
    # kfp.local cannot hand a task's output into a ParallelFor body, so sharded generate/verify keep the
    # compiled slices; configure stops a run whose form changes them instead of silently ignoring it
    import json

    import pytest

    from flywheel.components.steps import configure
    from flywheel.pipelines.form import form_defaults
    from flywheel.steps.table import config_slice

    from conftest import tiny_config

    cfg = tiny_config()
    fixed = json.dumps({"slices": {n: config_slice(cfg, n) for n in ("generate", "verify")}})
    form = form_defaults(cfg)
    assert configure(cfg.to_json(), **form, fixed=fixed).generate == json.loads(fixed)["slices"]["generate"]
    with pytest.raises(ValueError, match="generate step's settings are fixed when the pipeline is compiled"):
        configure(cfg.to_json(), **{**form, "max_new_tokens": form["max_new_tokens"] + 2}, fixed=fixed)
    # the temperature reaches generate through the prompts step's plan, not its slice: that is not refused
    configure(cfg.to_json(), **{**form, "temperature": form["temperature"] + 0.5}, fixed=fixed)
    assert configure(cfg.to_json(), **{**form, "learning_rate": 0.5}, fixed=fixed).train != config_slice(cfg, "train")
