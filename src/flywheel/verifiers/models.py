"""Model-based verifiers, both batched: `reward-model` (a sequence classifier scores each sample) and
`judge` (a causal LM is asked whether the answer is correct).

    verify:
      verifier: reward-model
      params: {model: path/to/reward-model, threshold: 0.5, batch_size: 64}

    verify:
      verifier: judge
      params: {model: path/to/judge-lm, template: "{prompt}{completion}\\nCorrect? ", yes: "Y", no: "N"}

`reward-model` loads any Hugging Face `AutoModelForSequenceClassification` by local path (or hub id,
where a hub is reachable) and scores `template` filled with the sample: with one output label the score is
the sigmoid of its logit, with several it is the softmax probability of `positive_label`. `judge` loads an
`AutoModelForCausalLM`, fills `template`, and scores P(yes) / (P(yes) + P(no)) from the logits of the next
token, where `yes` and `no` must each be a single token of its tokenizer. In both, correct = score >=
`threshold`. Inputs are sorted by length and run `batch_size` at a time, so padding stays small; batched
scores equal one-at-a-time scores (tests/test_verifiers.py checks it).
"""

from __future__ import annotations

import pandas as pd

from flywheel.tasks import Verdict


def _fill(template: str, samples: pd.DataFrame) -> list[str]:
    try:
        return [template.format_map(r) for r in samples.to_dict("records")]
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"verify.params.template {template!r} cannot be filled from a sample "
                         f"({type(err).__name__}: {err}); use sample columns such as {{prompt}} and {{completion}}") from None


def _load(path: str, auto: str):
    from pathlib import Path

    import torch
    import transformers
    from transformers import AutoTokenizer

    if Path(path).exists() and not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a model folder (no config.json); expected a Hugging Face checkpoint")
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = getattr(transformers, auto).from_pretrained(path, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id  # sequence classifiers find the last real token by it
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    return model, tok


def _batched(texts: list[str], batch_size: int, fn, what: str = "scoring") -> list[float]:
    """fn(list of texts) -> list of scores, applied to length-sorted batches; scores back in input order."""
    from flywheel.console import progress  # minutes for a batch on CPU: say how far it is

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    scores = [0.0] * len(texts)
    starts = range(0, len(order), batch_size)
    for start in progress(starts, len(starts), f"{what}: batches of {batch_size}"):
        chunk = order[start:start + batch_size]
        for i, s in zip(chunk, fn([texts[i] for i in chunk])):
            scores[i] = float(s)
    return scores


class RewardModel:
    def __init__(self, model: str, threshold: float = 0.5, template: str = "{prompt}{completion}",
                 positive_label: int | str | None = None, batch_size: int = 64, max_length: int = 1024):
        """
        model: path (or hub id) of a sequence-classification checkpoint.
        threshold: least score for correct.
        template: the text scored, filled with the sample's columns.
        positive_label: with several labels, the index or name (config.label2id) of 'good'; default the last.
        batch_size / max_length: texts per forward pass; longer texts are truncated (from the left, keeping the answer).
        """
        self.model, self.tok = _load(model, "AutoModelForSequenceClassification")
        self.threshold, self.template, self.batch_size, self.max_length = threshold, template, batch_size, max_length
        n = self.model.config.num_labels
        if isinstance(positive_label, str):
            if positive_label not in self.model.config.label2id:
                raise ValueError(f"positive_label {positive_label!r} is not a label of {model}: "
                                 f"{sorted(self.model.config.label2id)}")
            positive_label = self.model.config.label2id[positive_label]
        self.positive = n - 1 if positive_label is None else int(positive_label)
        if not 0 <= self.positive < n:
            raise ValueError(f"positive_label {positive_label} out of range for {n} labels")
        # Right padding: real tokens keep positions 0..n-1 (as unbatched); classifiers pool the last real
        # token (decoder) or the first (encoder). Truncation from the left keeps the answer.
        self.tok.padding_side, self.tok.truncation_side = "right", "left"

    def score(self, texts: list[str]) -> list[float]:
        import torch

        def run(batch: list[str]) -> list[float]:
            enc = self.tok(batch, return_tensors="pt", padding=True, truncation=True,
                           max_length=self.max_length).to(self.model.device)
            with torch.inference_mode():
                logits = self.model(**enc).logits.float()
            if logits.shape[-1] == 1:
                return torch.sigmoid(logits[:, 0]).tolist()
            return torch.softmax(logits, -1)[:, self.positive].tolist()

        return _batched(texts, self.batch_size, run, "reward-model")

    def verify_batch(self, samples: pd.DataFrame) -> list[Verdict]:
        scores = self.score(_fill(self.template, samples))
        return [Verdict(s >= self.threshold, s, f"reward {s:.3f} {'>=' if s >= self.threshold else '<'} "
                        f"{self.threshold:g}") for s in scores]


class Judge:
    def __init__(self, model: str, template: str = "{prompt}{completion}\nCorrect? ", yes: str = "Y",
                 no: str = "N", threshold: float = 0.5, batch_size: int = 64, max_length: int = 1024):
        """
        model: path (or hub id) of a causal LM (an instruction-tuned one grades better).
        template: the grading prompt, filled with the sample's columns; it should end where the verdict goes.
        yes / no: the verdict tokens (each must be one token of the model's tokenizer, e.g. " Yes"/" No").
        threshold: least P(yes) / (P(yes) + P(no)) for correct.
        """
        self.model, self.tok = _load(model, "AutoModelForCausalLM")
        self.template, self.threshold, self.batch_size, self.max_length = template, threshold, batch_size, max_length
        # Right padding keeps each row's positions as unbatched; the verdict logits are read at its last real token.
        self.tok.padding_side, self.tok.truncation_side = "right", "left"
        ids = []
        for word in (yes, no):
            t = self.tok(word, add_special_tokens=False)["input_ids"]
            if len(t) != 1:
                raise ValueError(f"judge: {word!r} is {len(t)} tokens for {model}'s tokenizer; yes/no must each "
                                 "be a single token (try a leading space, e.g. ' Yes')")
            ids.append(t[0])
        if ids[0] == ids[1]:
            raise ValueError(f"judge: yes {yes!r} and no {no!r} are the same token")
        self.yes_id, self.no_id = ids

    def score(self, texts: list[str]) -> list[float]:
        import torch

        def run(batch: list[str]) -> list[float]:
            enc = self.tok(batch, return_tensors="pt", padding=True, truncation=True,
                           max_length=self.max_length).to(self.model.device)
            last = enc["attention_mask"].sum(1) - 1
            with torch.inference_mode():
                logits = self.model(**enc).logits[torch.arange(len(batch)), last].float()
            pair = torch.log_softmax(logits, -1)[:, [self.yes_id, self.no_id]]
            return torch.softmax(pair, -1)[:, 0].tolist()

        return _batched(texts, self.batch_size, run, "judge")

    def verify_batch(self, samples: pd.DataFrame) -> list[Verdict]:
        scores = self.score(_fill(self.template, samples))
        return [Verdict(s >= self.threshold, s, f"judge P(yes) {s:.3f} {'>=' if s >= self.threshold else '<'} "
                        f"{self.threshold:g}") for s in scores]
