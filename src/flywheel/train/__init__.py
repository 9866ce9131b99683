"""The trainers behind the train step (`flywheel.steps.train` dispatches to them).

- `runner`: one training run, in this process or under the `deepspeed` launcher: checkpoints, resume,
  the final Hugging Face checkpoint, metrics.
- `sft`: recipe sft, TRL's `SFTTrainer` on prompt/completion rows.
- `preference`: recipes dpo and spin, TRL's `DPOTrainer` on (prompt, chosen, rejected) pairs.
- `distributed`: DeepSpeed presets, precision, the launcher command, the CPU (gloo) set-up.
"""
