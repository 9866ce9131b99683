"""The train step under DeepSpeed across 2 CPU ranks (gloo), its checkpoints, resume, and its settings.

The 2-rank tests run the real path: torchrun (`--nproc_per_node 2`) starts two CPU ranks, each builds TRL's
SFTTrainer with the ZeRO preset, rank 0 writes the Hugging Face folder. The first DeepSpeed run on a
machine JIT-compiles a C++ op (~50 s, cached under ~/.cache/torch_extensions).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from flywheel.config import ConfigError, LaunchConfig, ModelConfig, TrainConfig
from flywheel.io import read_table, write_table
from flywheel.model import load_model
from flywheel.steps.train import train_model
from flywheel.train import runner
from flywheel.train.distributed import (batch_split, deepspeed_config, launch_env, launcher_command,
                                        resolve_precision, uses_launcher, world_size)

from conftest import tiny_config, two_ranks


@pytest.fixture(scope="module")
def rows(prepared, tmp_path_factory):
    path = tmp_path_factory.mktemp("rows") / "curated.parquet"
    write_table(read_table(prepared["seed"]).assign(source="seed", iteration=1, score=1.0), path)
    return path


def _weights(path):
    model, _ = load_model(path)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.fixture(scope="module")
def zero_runs(prepared, rows, tmp_path_factory):
    d = tmp_path_factory.mktemp("zero")
    shm = set(Path("/dev/shm").glob("deepspeed_allreduce_buffer_*"))
    out = {}
    for preset in ("zero2", "zero3"):
        cfg = tiny_config(train={"max_steps": 8, "batch_size": 16, "learning_rate": 3e-3, "deepspeed": preset,
                                 "launch": {"processes_per_node": 2}, "save_steps": 0})
        out[preset] = (train_model(prepared["model"], rows, d / preset, cfg), d / preset)
    # DeepSpeed's CPU all-reduce never unlinks its 69 MB shared-memory buffers; the step removes them
    assert set(Path("/dev/shm").glob("deepspeed_allreduce_buffer_*")) <= shm
    return out


@two_ranks
@pytest.mark.parametrize("preset,stage", [("zero2", 2), ("zero3", 3)])
def test_two_ranks_train_and_save_a_checkpoint_that_loads_in_one_process(zero_runs, prepared, preset, stage):
    m, path = zero_runs[preset]
    assert (m["world_size"], m["zero_stage"], m["precision"]) == (2, stage, "fp32")
    assert m["steps"] == 8 and m["loss"] < m["loss_first"]
    before, after = _weights(prepared["model"]), _weights(path)
    assert set(after) == set(before)
    assert all(not torch.equal(before[n], after[n]) for n in after)  # every tensor trained and gathered
    model, tok = load_model(path)
    enc = tok(["300+400="], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > enc["input_ids"].shape[1]


@two_ranks
def test_zero3_shards_gather_to_the_same_weights_as_zero2(zero_runs):
    # Same data, seed and steps: ZeRO-3 differs from ZeRO-2 only in where the weights live, so a checkpoint
    # whose shards were gathered wrongly (or not at all) would not match.
    a, b = _weights(zero_runs["zero2"][1]), _weights(zero_runs["zero3"][1])
    for n in a:
        torch.testing.assert_close(a[n], b[n], atol=1e-5, rtol=1e-4)


class _Crash(Exception):
    pass


def test_an_interrupted_train_step_resumes_from_its_last_checkpoint(prepared, rows, tmp_path, monkeypatch):
    from transformers import TrainerCallback

    cfg = tiny_config(train={"max_steps": 12, "batch_size": 16, "learning_rate": 3e-3, "save_steps": 4,
                             "checkpoint_dir": str(tmp_path / "ckpt")})
    clean = train_model(prepared["model"], rows, tmp_path / "clean", cfg)
    assert clean["resumed_from_step"] is None

    class CrashAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 10:  # after the checkpoint of step 8, before the one of step 12
                raise _Crash("killed")

    with monkeypatch.context() as mp:
        mp.setattr(runner, "_final_step_callback", CrashAt)
        with pytest.raises(_Crash):
            train_model(prepared["model"], rows, tmp_path / "resumed", cfg)
    folder = runner.checkpoint_dir(tmp_path / "resumed", cfg.train)
    assert runner.last_checkpoint(folder).name == "checkpoint-8"
    assert not (tmp_path / "resumed").exists()  # nothing half-written at the output path

    resumed = train_model(prepared["model"], rows, tmp_path / "resumed", cfg)
    assert resumed["resumed_from_step"] == 8 and resumed["steps"] == 12
    assert not folder.exists()  # the scratch folder goes once the step succeeded
    a, b = _weights(tmp_path / "clean"), _weights(tmp_path / "resumed")
    for n in a:  # same data order, optimizer and schedule: the same model as the uninterrupted run
        torch.testing.assert_close(a[n], b[n], atol=1e-6, rtol=1e-5)


def test_a_checkpoint_from_other_inputs_is_not_resumed(prepared, rows, tmp_path):
    t, m = TrainConfig(max_steps=4, batch_size=16, save_steps=2, checkpoint_dir=str(tmp_path)), ModelConfig()
    folder = runner.checkpoint_dir(tmp_path / "out", t)

    def resume(t, m):
        return runner.prepare_checkpoints(folder, runner.fingerprint(prepared["model"], rows, t, m))

    def interrupted_run():
        """The folder of a run of (t, m) that saved step 2 and was killed while saving step 4."""
        shutil.rmtree(folder, ignore_errors=True)
        assert resume(t, m) is None
        (folder / "checkpoint-2").mkdir()
        (folder / "checkpoint-2" / "trainer_state.json").write_text("{}")
        (folder / "checkpoint-4").mkdir()  # no trainer_state.json

    interrupted_run()
    assert resume(t, m).name == "checkpoint-2"
    interrupted_run()
    assert resume(t.model_copy(update={"learning_rate": 0.5}), m) is None
    assert not (folder / "checkpoint-2").exists()
    interrupted_run()  # rows rendered another way (a system prompt) are other inputs too
    assert resume(t, m.model_copy(update={"system_prompt": "Be brief."})) is None


def test_presets_and_raw_deepspeed_configs(tmp_path):
    z3 = deepspeed_config("zero3_offload")
    assert z3["zero_optimization"]["stage"] == 3 and z3["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert z3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert deepspeed_config("none") is None
    raw = deepspeed_config({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": "auto"})
    assert raw["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True  # HF-layout output
    (tmp_path / "ds.json").write_text('{"zero_optimization": {"stage": 2}}')
    assert deepspeed_config(str(tmp_path / "ds.json"))["zero_optimization"]["stage"] == 2
    with pytest.raises(ValueError, match="neither a preset"):
        deepspeed_config("zero4")
    with pytest.raises(ConfigError, match="train.deepspeed"):
        tiny_config(train={"deepspeed": 3})


def test_batch_split_and_precision_choices():
    assert batch_split(TrainConfig(batch_size=64), 2) == (32, 1)
    assert batch_split(TrainConfig(batch_size=64, micro_batch_size=8), 2) == (8, 4)
    with pytest.raises(ValueError, match="multiple of"):
        batch_split(TrainConfig(batch_size=10, micro_batch_size=4), 2)
    assert resolve_precision("auto", on_gpu=False, deepspeed=False) == "fp32"
    with pytest.raises(ValueError, match="no GPU"):
        resolve_precision("fp16", on_gpu=False, deepspeed=False)
    with pytest.raises(ValueError, match="fp32 only"):
        resolve_precision("bf16", on_gpu=False, deepspeed=True)


def test_one_launcher_and_no_second_one_inside_a_launched_world(monkeypatch):
    cmd = launcher_command(LaunchConfig(processes_per_node=8), 1234, "m", "spec.json")
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and cmd[-3:] == ["--module", "m", "spec.json"]
    assert cmd[cmd.index("--nproc_per_node") + 1] == "8" and cmd[cmd.index("--master_port") + 1] == "1234"
    ds = TrainConfig(deepspeed="zero2")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert uses_launcher(ds) and uses_launcher(TrainConfig(launch={"processes_per_node": 2}))
    assert not uses_launcher(TrainConfig()) and world_size(TrainConfig(launch={"processes_per_node": 2})) == 2
    # A TrainJob's node: torchrun has set up a world of 16; each rank trains itself, whatever the config says.
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("RANK", "9")
    assert not uses_launcher(ds) and world_size(ds) == 16
    # The multi-node fields of the old deepspeed launcher are gone: a config naming one says so.
    with pytest.raises(ConfigError, match="train.launch.hostfile: unknown key"):
        tiny_config(train={"launch": {"hostfile": "/etc/mpi/hostfile"}})


def test_max_epochs_caps_the_steps():
    assert runner.steps_for(TrainConfig(max_steps=60, batch_size=32), rows=20) == 60
    assert runner.steps_for(TrainConfig(max_steps=60, batch_size=32, max_epochs=2), rows=20) == 2  # 40 rows seen
    assert runner.steps_for(TrainConfig(max_steps=60, batch_size=32, max_epochs=2), rows=5000) == 60


def test_a_stopped_launch_stops_its_ranks_and_each_rank_prints_its_stack(tmp_path):
    # A "launcher" whose "rank" hangs the way a rank stuck in a collective does. When the wait for it is
    # interrupted (here: a signal, as pytest-timeout or Ctrl-C would), no process of the launch may be left
    # running, and the rank's stderr must say where it was.
    import os
    import signal
    import sys
    import threading
    import time

    rank = tmp_path / "rank.py"
    rank.write_text("import os, sys, time\n"
                    "from flywheel.train.distributed import dump_stack_on_term\n"
                    "dump_stack_on_term()\n"
                    "def waiting_in_a_collective():\n"
                    f"    open({str(tmp_path / 'rank.pid')!r}, 'w').write(str(os.getpid()))\n"
                    "    time.sleep(300)\n"
                    "waiting_in_a_collective()\n")
    launcher = tmp_path / "launch.py"
    launcher.write_text("import subprocess, sys, time\n"
                        f"subprocess.Popen([sys.executable, {str(rank)!r}], stderr=open({str(tmp_path / 'rank.err')!r}, 'w'))\n"
                        "time.sleep(300)\n")

    class Stopped(Exception):
        pass

    def stop(*_):
        raise Stopped

    def when_the_rank_runs():
        while not (tmp_path / "rank.pid").is_file():
            time.sleep(0.05)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGALRM)

    previous = signal.signal(signal.SIGALRM, stop)
    try:
        threading.Thread(target=when_the_rank_runs, daemon=True).start()
        with pytest.raises(Stopped):
            runner.run_ranks([sys.executable, str(launcher)], dict(os.environ), grace_s=10)
    finally:
        signal.signal(signal.SIGALRM, previous)
    pid = int((tmp_path / "rank.pid").read_text())
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().rpartition(")")[2].split()[0] == "Z"  # gone, or a zombie
    err = (tmp_path / "rank.err").read_text()
    assert "waiting_in_a_collective" in err and "rank.py" in err


def test_the_collective_timeout_reaches_the_trainer():
    args = runner.training_arguments(TrainConfig(launch={"timeout_s": 120}), "out", 64, 1, None, None, False)
    assert args["ddp_timeout"] == 120


def test_ranks_on_one_node_talk_over_loopback_and_split_the_cores():
    env = launch_env(LaunchConfig(processes_per_node=2), {}, on_gpu=False)
    assert env["GLOO_SOCKET_IFNAME"] == "lo" and int(env["OMP_NUM_THREADS"]) >= 1
    # what the user set is kept; a rendezvous on another host leaves gloo's choice alone
    assert launch_env(LaunchConfig(), {"GLOO_SOCKET_IFNAME": "eth1"}, False)["GLOO_SOCKET_IFNAME"] == "eth1"
    assert "GLOO_SOCKET_IFNAME" not in launch_env(LaunchConfig(master_addr="10.0.0.7"), {}, False)
    assert "OMP_NUM_THREADS" not in launch_env(LaunchConfig(), {}, on_gpu=True)
