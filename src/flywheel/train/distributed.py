"""DeepSpeed for the train step: named presets, precision, the launcher, and the CPU set-up.

One launcher, torchrun (`torch.distributed.run`), for every recipe (sft, dpo, spin, and TRL's other
trainers) with or without ZeRO-2/3, on one node and across nodes (docs/deploy.md, "Multi-node training"):

- one node: the train step starts `python -m torch.distributed.run --nproc_per_node N --module
  flywheel.train.runner SPEC` itself (`launcher_command`) and waits; N CPU processes on a machine without a
  GPU (gloo ranks: how the tests run the real multi-rank path);
- several nodes: Kubeflow Trainer's `torch-distributed` runtime starts `torchrun --module flywheel train ...`
  on every node (cluster/trainjob.py), with the rendezvous in PET_* variables that torchrun reads;
- either way, each rank finds WORLD_SIZE and RANK in its environment (`launched_world`) and trains in its own
  process: a world that a launcher already set up never starts a second launcher.

DeepSpeed needs no launcher of its own: `deepspeed.init_distributed()` reads RANK, WORLD_SIZE, MASTER_ADDR
and MASTER_PORT from the environment torchrun sets, so no SSH, hostfile or MPI (the `deepspeed-distributed`
runtime's requirements) is needed. ZeRO-2 and ZeRO-3 under torchrun both ran to rc 0 on 2 CPU ranks with
TRL's SFTTrainer (tests/test_train_distributed.py); the ZeRO-3 abort at exit noted in stack-facts.md,
section 2, came from a bare Trainer script and did not recur here.

Presets leave batch sizes, clipping and precision on "auto": the Hugging Face integration fills them
from the training arguments, so `train.batch_size` and `train.precision` mean the same with or without
DeepSpeed.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flywheel.config import LaunchConfig, TrainConfig

_AUTO = {
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "bf16": {"enabled": "auto"},
    "fp16": {"enabled": "auto"},
}
_ZERO2 = {"stage": 2, "overlap_comm": True, "contiguous_gradients": True, "reduce_scatter": True,
          "reduce_bucket_size": "auto", "allgather_bucket_size": 5e8}
_ZERO3 = {"stage": 3, "overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": "auto",
          "stage3_prefetch_bucket_size": "auto", "stage3_param_persistence_threshold": "auto",
          # Gather the shards into one state dict when saving: the step's output is a Hugging Face folder
          # that `from_pretrained` loads in one process, not DeepSpeed's per-rank shards.
          "stage3_gather_16bit_weights_on_model_save": True}
_CPU = {"device": "cpu", "pin_memory": True}

PRESETS: dict[str, dict[str, Any]] = {
    # ZeRO-2: optimizer state and gradients sharded over ranks; every rank holds all weights.
    "zero2": {**_AUTO, "zero_optimization": _ZERO2},
    # ... and the optimizer state (Adam: 12 bytes/parameter in fp32) lives in CPU memory, stepped by CPU Adam.
    "zero2_offload": {**_AUTO, "zero_optimization": {**_ZERO2, "offload_optimizer": _CPU}},
    # ZeRO-3: the weights are sharded too, gathered layer by layer for each forward and backward.
    "zero3": {**_AUTO, "zero_optimization": _ZERO3},
    # ... with optimizer state and weights in CPU memory: the largest model per GPU, the slowest step.
    "zero3_offload": {**_AUTO, "zero_optimization": {**_ZERO3, "offload_optimizer": _CPU, "offload_param": _CPU}},
}


def deepspeed_config(value: str | dict[str, Any]) -> dict[str, Any] | None:
    """The DeepSpeed config that `train.deepspeed` names: None for 'none', else a dict."""
    if isinstance(value, dict):
        ds = copy.deepcopy(value)
    elif value == "none":
        return None
    elif value in PRESETS:
        ds = copy.deepcopy(PRESETS[value])
    else:
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"train.deepspeed: {value!r} is neither a preset ({', '.join(['none', *PRESETS])}) "
                             "nor an existing DeepSpeed JSON file")
        try:
            ds = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: train.deepspeed file is not valid JSON ({err})") from None
    zero = ds.setdefault("zero_optimization", {"stage": 0})
    if not isinstance(zero, dict):
        raise ValueError(f"train.deepspeed: 'zero_optimization' must be a mapping, got {zero!r}")
    if zero.get("stage") == 3:
        zero.setdefault("stage3_gather_16bit_weights_on_model_save", True)
    return ds


def launched_world() -> tuple[int, int] | None:
    """(rank, world size) when a launcher (torchrun, a TrainJob's node, any launcher that sets the standard
    variables) already started this process as one rank of a world; None for a plain process."""
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return None


def world_size(t: TrainConfig) -> int:
    """Ranks of the run: the launched world's, else the processes the step will start."""
    world = launched_world()
    return world[1] if world else t.launch.processes_per_node


def uses_launcher(t: TrainConfig) -> bool:
    """Whether the step starts torchrun itself (else: it trains in the calling process). Never inside a world a
    launcher already set up: every rank of a TrainJob would otherwise start a launcher of its own."""
    if launched_world() is not None:
        return False
    return t.deepspeed != "none" or t.launch.processes_per_node > 1


def barrier() -> None:
    """Wait for every rank of a launched world (no-op outside one): rank 0 removes the shared scratch folder
    only after the others are done with it."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def check_devices(t: TrainConfig) -> None:
    """Fail at the step's start, with the field to change, when the step asks for more GPUs than it sees, or
    for vLLM rollouts (recipe grpo) where vLLM cannot run."""
    import importlib.util

    if t.recipe == "grpo" and t.grpo.use_vllm:
        missing = ("vllm is not installed" if importlib.util.find_spec("vllm") is None else
                   "no CUDA GPU is visible" if not gpu_available() else None)
        if missing:
            raise ValueError(f"train.grpo.use_vllm is true but {missing}: pip install 'llm-flywheel[vllm]' on a "
                             "machine with a CUDA GPU (or the CUDA image), or set train.grpo.use_vllm: false")
    if not gpu_available():
        return  # CPU ranks (gloo): any number runs, slowly
    import torch

    have = torch.cuda.device_count()
    world = launched_world()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if world else t.launch.processes_per_node
    if local > have:
        where = ("this node's torchrun starts LOCAL_WORLD_SIZE=%d ranks (cluster.steps.train.gpus / nodes)" % local
                 if world else f"train.launch.processes_per_node is {local}")
        raise ValueError(f"{where} but this node has {have} GPU(s) (torch.cuda.device_count()); "
                         f"set train.launch.processes_per_node to at most {have}, or give the step more GPUs "
                         "(cluster.steps.train.gpus)")


def gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_precision(precision: str, on_gpu: bool, deepspeed: bool) -> str:
    """'auto' -> bf16 where the GPU supports it, else fp32; an explicit choice the hardware lacks is an error."""
    import torch

    if precision == "auto":
        return "bf16" if on_gpu and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not on_gpu:
        raise ValueError("train.precision is 'fp16' but no GPU is visible; use 'auto' or 'fp32'")
    if precision == "bf16" and not on_gpu and deepspeed:
        # DeepSpeed's CPU ranks train in fp32 only (bf16 there fails in the HF integration).
        raise ValueError("train.precision is 'bf16' with DeepSpeed on CPU, which trains in fp32 only; use 'auto'")
    return precision


def batch_split(t: TrainConfig, world_size: int) -> tuple[int, int]:
    """(rows per process per forward, gradient-accumulation steps) that make `train.batch_size` per step."""
    micro = t.micro_batch_size or t.batch_size // world_size
    if micro == 0 or t.batch_size % (micro * world_size):
        raise ValueError(f"train.batch_size ({t.batch_size}) must be a multiple of train.micro_batch_size "
                         f"({t.micro_batch_size or 'batch_size / processes'}) x processes ({world_size})")
    return micro, t.batch_size // (micro * world_size)


def init_process(deepspeed: bool, timeout_s: int = 1800) -> dict[str, Any] | None:
    """Set up this rank before the training arguments exist; returns the Trainer's `accelerator_config`.

    On CPU, transformers finds no device for DeepSpeed and leaves accelerate believing in world size 1
    ("train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size"). Creating the
    process state with gloo first and telling the Trainer to use it is the workaround that ran
    (stack-facts.md, section 2); `use_cpu` must then stay False and bf16 off.
    """
    if not deepspeed:
        return None
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    if gpu_available():
        return None
    from accelerate import PartialState

    import datetime

    PartialState(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return {"use_configured_state": True}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def master_port(launch: LaunchConfig) -> int:
    """The rendezvous port: the configured one, else a free one (so that two steps on one machine do not collide)."""
    return launch.master_port or free_port()


def launcher_command(launch: LaunchConfig, port: int, module: str, *args: str) -> list[str]:
    """`torchrun --nproc_per_node N --module MODULE ARGS` on this node, as a command list (this interpreter)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
            "--nproc_per_node", str(launch.processes_per_node), "--master_addr", launch.master_addr or "127.0.0.1",
            "--master_port", str(port), "--module", module, *args]


def launch_env(launch: LaunchConfig, env: dict[str, str], on_gpu: bool) -> dict[str, str]:
    """The environment of the step's own torchrun: `env` plus what its ranks on this one node need.

    - CPU ranks split this machine's cores instead of each taking all of them (OMP_NUM_THREADS).
    - With the rendezvous on loopback (the default), gloo talks over loopback too, so that ranks on one
      machine do not depend on what this host's name resolves to (gloo's own choice of interface).
    A value the user set is kept.
    """
    env = dict(env)
    if not on_gpu:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // launch.processes_per_node)))
    if (launch.master_addr or "127.0.0.1") in ("127.0.0.1", "localhost", "::1"):
        loopback = next((name for _, name in socket.if_nameindex() if name == "lo"), None)
        if loopback:
            env.setdefault("GLOO_SOCKET_IFNAME", loopback)
    return env


def run_ranks(cmd: list[str], env: dict[str, str], grace_s: float = 30) -> int:
    """Run the launcher `cmd` and wait; its exit status. However the wait ends early (Ctrl-C, a pod's SIGTERM
    turned into an exception, a test's timeout), every process of the launch is stopped, ranks included.

    torchrun is started in a session of its own so that its ranks can be reached as one process group:
    killing torchrun alone (what `subprocess.run` does on an exception) would leave its ranks running,
    holding the GPUs, or spinning on a collective that will never complete. SIGTERM first: each rank then
    prints its stack (`dump_stack_on_term`), which says where a hung run was; SIGKILL after `grace_s`.
    """
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        return proc.wait()
    except BaseException:
        _stop_group(proc, grace_s)
        raise


def _stop_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM every process of the launch (torchrun is the group's leader); SIGKILL what is left after `grace_s`."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs. Zombies do not count: ranks orphaned by a killed
    torchrun are reaped by PID 1, and a container's PID 1 often reaps nothing."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: a signal 0 cannot tell zombies apart
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for stat in proc.glob("[0-9]*/stat"):
        try:
            state, _ppid, group = stat.read_text().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):
            continue  # ended while we looked
        if int(group) == pgid and state != "Z":
            return True
    return False


def dump_stack_on_term() -> None:
    """In a rank: on SIGTERM, print every thread's Python stack to stderr, then die of the signal as before.

    torchrun sends SIGTERM to the surviving ranks when one fails, and `run_ranks` does when the step is
    stopped: either way the log then says where each rank was (a collective, a generate, a save)."""
    import faulthandler

    faulthandler.register(signal.SIGTERM, all_threads=True, chain=True)


def remove_shm_buffers(port: int) -> None:
    """Delete the shared-memory buffers of DeepSpeed's CPU all-reduce for the run on `port`.

    Each CPU rank creates /dev/shm/deepspeed_allreduce_buffer_<uid>_<addr>_<port>_<rank> (69 MB in 0.19.8)
    and never unlinks it (ops/csrc/cpu/comm/shm.cpp), so every CPU run would leave RAM behind.
    """
    for f in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_{os.getuid()}_*_{port}_*"):
        f.unlink(missing_ok=True)
