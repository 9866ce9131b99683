"""DeepSpeed for the train step: named presets, precision, the launcher command, and the CPU set-up.

Why the `deepspeed` launcher (not torchrun or `accelerate launch`): it is the one launcher that runs ZeRO-3
to a clean exit here (under torchrun the same ZeRO-3 run trained, then aborted at exit, rc 1:
/work/shared/notes/stack-facts.md, section 2), it starts CPU ranks when no GPU exists (`--num_gpus 2`
gives 2 gloo ranks, which is how the tests run the real multi-rank path), and it reaches other nodes
through a hostfile with pdsh or the cluster's MPI/Slurm, which is what Kubeflow Trainer's
`deepspeed-distributed` runtime provides (an MPI hostfile at /etc/mpi/hostfile).

Presets leave batch sizes, clipping and precision on "auto": the Hugging Face integration fills them
from the training arguments, so `train.batch_size` and `train.precision` mean the same with or without
DeepSpeed.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import sys
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


def uses_launcher(t: TrainConfig) -> bool:
    """Whether the step runs under the `deepspeed` launcher (else: in the calling process, no DeepSpeed)."""
    return t.deepspeed != "none" or t.launch.processes_per_node > 1 or t.launch.nodes > 1


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


def init_process(deepspeed: bool) -> dict[str, Any] | None:
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

    PartialState(backend="gloo")
    return {"use_configured_state": True}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def master_port(launch: LaunchConfig) -> int:
    """The rendezvous port: the configured one, else 29500 across nodes, else a free one (so that two steps
    on one machine do not collide)."""
    return launch.master_port or (29500 if launch.nodes > 1 else free_port())


def launcher_command(launch: LaunchConfig, port: int, module: str, *args: str) -> list[str]:
    """`deepspeed ... --module MODULE ARGS`, as a command list (run with this interpreter)."""
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(launch.processes_per_node),
           "--no_local_rank", "--master_port", str(port), "--module"]
    if launch.nodes > 1:
        if not launch.hostfile or not Path(launch.hostfile).is_file():
            raise ValueError(f"train.launch.nodes is {launch.nodes} but train.launch.hostfile "
                             f"({launch.hostfile!r}) is not a file; list the nodes there ('host slots=N' per line)")
        cmd += ["--hostfile", launch.hostfile, "--num_nodes", str(launch.nodes),
                "--launcher", launch.multinode_runner]
    else:
        # One node: never pick up a hostfile lying at DeepSpeed's default path (/job/hostfile).
        cmd += ["--hostfile", os.devnull]
    if launch.master_addr:
        cmd += ["--master_addr", launch.master_addr]
    return [*cmd, module, *args]


def remove_shm_buffers(port: int) -> None:
    """Delete the shared-memory buffers of DeepSpeed's CPU all-reduce for the run on `port`.

    Each CPU rank creates /dev/shm/deepspeed_allreduce_buffer_<uid>_<addr>_<port>_<rank> (69 MB in 0.19.8)
    and never unlinks it (ops/csrc/cpu/comm/shm.cpp), so every CPU run would leave RAM behind.
    """
    for f in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_{os.getuid()}_*_{port}_*"):
        f.unlink(missing_ok=True)
