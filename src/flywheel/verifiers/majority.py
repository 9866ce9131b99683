"""`majority-vote`: a label-free verifier (self-consistency, Wang et al. 2023; SelfCheckGPT, Manakul et al.
2023; the majority-vote filter of Lee et al. 2025).

    verify:
      verifier: majority-vote
      params: {min_agreement: 0.5, answer_format: exact}

No reference is read. For each prompt, the final answers of its K samples are extracted
(`answer_format`, see flywheel.tasks.answers) and counted; a sample is accepted when its answer is the
strict majority answer (no tie) and the share of the K samples that give it, its *agreement*, is at
least `min_agreement`. Every sample's score is its own answer's agreement (0 without an answer), so curate
can also rank or threshold on it. The majority is only as good as the model: it helps where the model is
right more often than it is wrong in any one way (run with `verify.audit: true` to measure how often the
accepted answers are in fact right).
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from flywheel.tasks import Verdict
from flywheel.tasks.answers import FORMATS, canonical, extract_answer


class MajorityVote:
    def __init__(self, min_agreement: float = 0.5, answer_format: str = "auto", min_samples: int = 2):
        """
        min_agreement: least share of a prompt's samples that must agree with a sample for it to pass.
        answer_format: how a sample's final answer is found; 'exact' compares whole completions (stripped),
            the others compare numbers by value ('1,000' = '1000.0').
        min_samples: prompts with fewer samples are rejected (a single sample always agrees with itself).
        """
        if not 0 < min_agreement <= 1:
            raise ValueError(f"min_agreement must be in (0, 1], got {min_agreement}")
        if answer_format not in FORMATS:
            raise ValueError(f"answer_format {answer_format!r}: expected one of {', '.join(FORMATS)}")
        self.min_agreement, self.answer_format, self.min_samples = min_agreement, answer_format, min_samples

    def _key(self, completion: str) -> str | None:
        ans = extract_answer(completion, self.answer_format)
        if ans is None:
            return None
        return ans.strip() if self.answer_format == "exact" else canonical(ans)

    def verify_batch(self, samples: pd.DataFrame) -> list[Verdict]:
        keys = [self._key(c) for c in samples["completion"]]
        verdicts: list[Verdict | None] = [None] * len(samples)
        positions: dict[str, list[int]] = {}
        for i, pid in enumerate(samples["prompt_id"]):
            positions.setdefault(pid, []).append(i)
        for idx in positions.values():
            k = len(idx)
            counts = Counter(keys[i] for i in idx if keys[i] is not None)
            top = counts.most_common(2)
            majority = top[0][0] if top and (len(top) == 1 or top[0][1] > top[1][1]) else None
            for i in idx:
                key = keys[i]
                agree = counts[key] / k if key is not None else 0.0
                if key is None:
                    v = Verdict(False, 0.0, "no answer")
                elif k < self.min_samples:
                    v = Verdict(False, agree, f"too few samples to vote: {k} < {self.min_samples}")
                elif majority is None:
                    v = Verdict(False, agree, f"no majority: tie at {top[0][1]}/{k}")
                elif key != majority:
                    v = Verdict(False, agree, f"minority: {counts[key]}/{k} agree (majority {majority}: {counts[majority]}/{k})")
                elif agree < self.min_agreement:
                    v = Verdict(False, agree, f"weak majority: {counts[key]}/{k} < {self.min_agreement:g}")
                else:
                    v = Verdict(True, agree, f"majority: {counts[key]}/{k} agree")
                verdicts[i] = v
        return verdicts  # type: ignore[return-value]
