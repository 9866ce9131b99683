"""LoRA for the train step (`train.lora`, peft): the adapter config, an early check of its target modules,
and the merge that turns the trained adapter into a plain checkpoint.

The trainers get `peft_config` and wrap the model themselves (TRL's `get_peft_model`); DPO/SPIN then need
no reference copy: with `ref_model=None` and a PeftModel, TRL computes the reference log-probabilities
with the adapter disabled, which is exactly the starting model. The step's output stays a plain merged
Hugging Face model, so generate, evaluate, promotion and vLLM load it like any other checkpoint; the
adapter (a few MB: rank r x (in + out) per target layer) is kept in its `adapter/` subfolder, which
`from_pretrained` of the folder never reads.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from flywheel.config import LoraConfig

ADAPTER_DIR = "adapter"


def peft_config(lora: LoraConfig):
    """peft's `LoraConfig` for `train.lora`, or None when `r` is 0 (full fine-tuning)."""
    if not lora.r:
        return None
    import peft

    return peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                           target_modules=lora.target_modules, task_type="CAUSAL_LM")


def linear_modules(model_dir: str) -> list[str]:
    """Full names of the model's linear layers (nn.Linear, and GPT-2's Conv1D), built on the meta device
    from its config alone: no weights are read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))]


def check_target_modules(model_dir: str, lora: LoraConfig) -> None:
    """Fail before training when `train.lora.target_modules` names modules the model does not have.

    peft matches a listed name against a module's full name or its dotted suffix, and a single string other
    than 'all-linear' as a regular expression over full names; the same rules apply here.
    """
    if not lora.r or lora.target_modules == "all-linear":
        return
    names = linear_modules(model_dir)
    if isinstance(lora.target_modules, str):
        if any(re.fullmatch(lora.target_modules, n) for n in names):
            return
        missing = [lora.target_modules]
    else:
        missing = [k for k in lora.target_modules if not any(n == k or n.endswith("." + k) for n in names)]
        if not missing:
            return
    short = sorted({n.rpartition(".")[2] for n in names})
    raise ValueError(f"train.lora.target_modules: {', '.join(map(repr, missing))} not in the model at {model_dir}; "
                     f"its linear modules are {', '.join(short)} (or use 'all-linear')")


def merge_adapter(model_dir: str, adapter_dir: str | Path, out_dir: str | Path, dtype) -> None:
    """Write base `model_dir` + the adapter at `adapter_dir`, merged, as a plain checkpoint in `dtype` into
    `out_dir` (an existing folder), with the adapter copied to `out_dir/adapter`."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out_dir)
    shutil.copytree(adapter_dir, Path(out_dir) / ADAPTER_DIR, dirs_exist_ok=True)
