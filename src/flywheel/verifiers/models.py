"""Model-based verifiers, both batched: `reward-model` (a sequence classifier scores each sample) and
`judge` (a causal LM is asked whether the answer is correct).

    verify:
      verifier: reward-model
      params: {model: path/to/reward-model, threshold: 0.5, batch_size: 64}

    verify:
      verifier: judge
      params: {model: path/to/judge-lm, template: "{prompt}{completion}\\nCorrect? ", yes: "Y", no: "N"}

`reward-model` loads any Hugging Face `AutoModelForSequenceClassification` by local path (or hub id,
where a hub is reachable) and scores `template` filled with the sample (or, when its tokenizer has a chat
template, the conversation user = prompt, assistant = completion): with one output label the score is
the sigmoid of its logit, with several it is the softmax probability of `positive_label`. `judge` loads an
`AutoModelForCausalLM`, fills `template` (the user turn of its chat template, when it has one), and scores P(yes) / (P(yes) + P(no)) from the logits of the next
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


def _load(path: str, auto: str, device: str, dtype: str):
    """Tokenizer and model (`auto`: a transformers Auto class name) by built-in name, folder or hub id,
    placed like every step's model (flywheel.model.placement: the GPU in bf16 when there is one)."""
    import transformers
    from transformers import AutoTokenizer

    from flywheel.config import ModelConfig
    from flywheel.model import ModelError, placement, resolve_base

    where, precision = placement(ModelConfig(device=device, dtype=dtype))
    source, kwargs = resolve_base(path)
    try:
        tok = AutoTokenizer.from_pretrained(source, **kwargs)
        model = getattr(transformers, auto).from_pretrained(source, dtype=precision, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelError(f"{path}: cannot load it as {auto}: {str(err).strip().splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id  # sequence classifiers find the last real token by it
    model.to(where).eval()
    return model, tok


def _chat(tok, chat: str, system_prompt: str):
    """The ModelConfig that flywheel.chat renders this verifier's texts with, or None for raw text."""
    from flywheel.chat import uses_chat
    from flywheel.config import ModelConfig

    cfg = ModelConfig(chat=chat, system_prompt=system_prompt)
    return cfg if uses_chat(tok, cfg) else None


def _batched(texts: list[str], batch_size: int, fn) -> list[float]:
    """fn(list of texts) -> list of scores, applied to length-sorted batches; scores back in input order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    scores = [0.0] * len(texts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        for i, s in zip(chunk, fn([texts[i] for i in chunk])):
            scores[i] = float(s)
    return scores


class RewardModel:
    def __init__(self, model: str, threshold: float = 0.5, template: str = "{prompt}{completion}",
                 positive_label: int | str | None = None, batch_size: int = 64, max_length: int = 1024,
                 chat: str = "auto", system_prompt: str = "", device: str = "auto", dtype: str = "auto"):
        """
        model: path (or hub id) of a sequence-classification checkpoint.
        threshold: least score for correct.
        template: the text scored, filled with the sample's columns (raw text: no chat template used).
        positive_label: with several labels, the index or name (config.label2id) of 'good'; default the last.
        batch_size / max_length: texts per forward pass; longer texts are truncated (from the left, keeping the answer).
        chat: 'auto' | 'always' | 'never' (as model.chat): with the tokenizer's chat template, the text scored is
            the conversation [system_prompt], user = the sample's prompt, assistant = its completion (`template`
            is then not used), as chat reward models are trained.
        device / dtype: as model.device / model.dtype ('auto': the GPU in bf16 when there is one).
        """
        self.model, self.tok = _load(model, "AutoModelForSequenceClassification", device, dtype)
        self.chat = _chat(self.tok, chat, system_prompt)
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
        """The score of each text (already rendered: `texts`)."""
        import torch

        special = self.chat is None  # a chat template wrote its special tokens itself

        def run(batch: list[str]) -> list[float]:
            enc = self.tok(batch, return_tensors="pt", padding=True, truncation=True,
                           max_length=self.max_length, add_special_tokens=special).to(self.model.device)
            with torch.inference_mode():
                logits = self.model(**enc).logits.float()
            if logits.shape[-1] == 1:
                return torch.sigmoid(logits[:, 0]).tolist()
            return torch.softmax(logits, -1)[:, self.positive].tolist()

        return _batched(texts, self.batch_size, run)

    def texts(self, samples: pd.DataFrame) -> list[str]:
        """What is scored for each sample: the conversation rendered by the chat template, or `template`."""
        if self.chat is None:
            return _fill(self.template, samples)
        from flywheel.chat import messages

        return [self.tok.apply_chat_template([*messages(p, self.chat), {"role": "assistant", "content": c}],
                                             tokenize=False)
                for p, c in zip(samples["prompt"].tolist(), samples["completion"].tolist())]

    def verify_batch(self, samples: pd.DataFrame) -> list[Verdict]:
        scores = self.score(self.texts(samples))
        return [Verdict(s >= self.threshold, s, f"reward {s:.3f} {'>=' if s >= self.threshold else '<'} "
                        f"{self.threshold:g}") for s in scores]


class Judge:
    def __init__(self, model: str, template: str = "{prompt}{completion}\nCorrect? ", yes: str = "Y",
                 no: str = "N", threshold: float = 0.5, batch_size: int = 64, max_length: int = 1024,
                 chat: str = "auto", system_prompt: str = "", device: str = "auto", dtype: str = "auto"):
        """
        model: path (or hub id) of a causal LM (an instruction-tuned one grades better).
        template: the grading prompt, filled with the sample's columns; it should end where the verdict goes.
        yes / no: the verdict tokens (each must be one token of the model's tokenizer, e.g. " Yes"/" No"; after a
            chat template the verdict opens the assistant turn, so no leading space: "Yes"/"No").
        threshold: least P(yes) / (P(yes) + P(no)) for correct.
        chat: 'auto' | 'always' | 'never' (as model.chat): the filled template becomes the user turn of the
            judge's chat template (with system_prompt), generation prompt added, and the verdict token is read
            where the assistant's answer starts.
        device / dtype: as model.device / model.dtype ('auto': the GPU in bf16 when there is one).
        """
        self.model, self.tok = _load(model, "AutoModelForCausalLM", device, dtype)
        self.chat = _chat(self.tok, chat, system_prompt)
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
        """P(yes) / (P(yes) + P(no)) after each text (already rendered: `prompts`)."""
        import torch

        special = self.chat is None  # a chat template wrote its special tokens itself

        def run(batch: list[str]) -> list[float]:
            enc = self.tok(batch, return_tensors="pt", padding=True, truncation=True,
                           max_length=self.max_length, add_special_tokens=special).to(self.model.device)
            last = enc["attention_mask"].sum(1) - 1
            with torch.inference_mode():
                logits = self.model(**enc).logits[torch.arange(len(batch)), last].float()
            pair = torch.log_softmax(logits, -1)[:, [self.yes_id, self.no_id]]
            return torch.softmax(pair, -1)[:, 0].tolist()

        return _batched(texts, self.batch_size, run)

    def prompts(self, samples: pd.DataFrame) -> list[str]:
        """The grading prompts: `template` filled, then rendered by the chat template when one is used."""
        from flywheel.chat import render_prompts

        filled = _fill(self.template, samples)
        return filled if self.chat is None else render_prompts(self.tok, filled, self.chat)

    def verify_batch(self, samples: pd.DataFrame) -> list[Verdict]:
        scores = self.score(self.prompts(samples))
        return [Verdict(s >= self.threshold, s, f"judge P(yes) {s:.3f} {'>=' if s >= self.threshold else '<'} "
                        f"{self.threshold:g}") for s in scores]
