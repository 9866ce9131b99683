"""Multi-digit addition, the embedded default task.

Format (why): a 1M-parameter model learns addition in minutes only when each answer digit sits at a
fixed distance from the operand digits it depends on. So operands are zero-padded to `width` digits and
written least-significant digit first, and so is the sum (width + 1 digits). 2-digit problems with
`width=5`:  57 + 8 = 65  ->  prompt "75000+80000="  completion "560000".
Unpadded, variable-width operands barely learned in 4,000 steps on the reference machine (see
docs/architecture.md); minGPT's adder and Lee et al. 2023 make the same choice.

Difficulty = number of significant digits of both operands: the columns that need work. Operands are
shifted to a random place value (57 + 8 may appear as 5700 + 800), so that every column of the window
is exercised by easy problems too. A model warm-started on 1-2 significant digits has then learned a
column adder that works at any position, but never a carry that ripples through several columns: that
is what it has to learn from its own verified samples (without the shift, the columns beyond the seed
width carry only zeros in training and a tiny model learns nothing it can extend there).
Problems are split once, by a stable hash of the
operands, into a held-out quarter (evaluation draws only from it) and the rest (prompts and seed rows
draw only from it): no coordination between steps is needed for training data never to touch evaluation.
"""

from __future__ import annotations

import random
import re
import zlib
from typing import Any

from flywheel.tasks import Verdict


class Arithmetic:
    def __init__(self, width: int = 5, seed_digits: int = 2, seed_size: int = 3000, curriculum: bool = True,
                 frontier_share: float = 0.75, shift: bool = True, proposal_rows: int = 0, proposal_shots: int = 3):
        """
        width: digits every operand is padded to; the hardest difficulty.
        seed_digits: the labelled seed set has problems of 1..seed_digits digits.
        seed_size: rows in the labelled seed set.
        curriculum: iteration i draws prompts of 1..seed_digits+i digits (else 1..width from the start).
        frontier_share: share of an iteration's prompts at its hardest difficulty (the frontier, where
            the model is right sometimes but not always: the samples that teach it something new);
            the rest spread evenly over the easier levels, so that they are not forgotten.
        shift: place operands at a random place value (see the module docstring).
        proposal_rows: extra seed rows in the proposal format (`proposal_shots` problems of one difficulty
            -> another of that difficulty), so that the embedded model, trained from scratch, can write
            problems at all when `propose` is on (docs/tasks.md#propose); 0 = none.
        proposal_shots: example problems per proposal row (propose.examples should match it).
        """
        if not 0 < frontier_share <= 1:
            raise ValueError(f"frontier_share must be in (0, 1], got {frontier_share}")
        if not 1 <= seed_digits <= width:
            raise ValueError(f"seed_digits must be in 1..width ({width}), got {seed_digits}")
        self.width, self.seed_digits, self.seed_size = width, seed_digits, seed_size
        self.curriculum, self.frontier_share, self.shift = curriculum, frontier_share, shift
        if proposal_rows < 0 or proposal_shots < 1:
            raise ValueError(f"proposal_rows must be >= 0 and proposal_shots >= 1, got {proposal_rows}, {proposal_shots}")
        self.proposal_rows, self.proposal_shots = proposal_rows, proposal_shots

    # -- text format -------------------------------------------------------------------------------------
    def format_prompt(self, a: int, b: int) -> str:
        w = self.width
        return f"{a:0{w}d}"[::-1] + "+" + f"{b:0{w}d}"[::-1] + "="

    def format_answer(self, a: int, b: int) -> str:
        return f"{a + b:0{self.width + 1}d}"[::-1]

    @staticmethod
    def readable(text: str) -> str:
        """A prompt or answer as a person writes it, for the report: '75000+80000=' -> '57 + 8 =', '560000' -> '65'."""
        return re.sub(r"\d+", lambda m: str(int(m[0][::-1])), text).replace("+", " + ").replace("=", " =")

    def _problem(self, a: int, b: int, d: int) -> dict[str, Any]:
        return {"prompt_id": f"add{d}-{a}-{b}", "prompt": self.format_prompt(a, b),
                "reference": self.format_answer(a, b), "difficulty": d}

    def _draw(self, rng: random.Random, d: int) -> tuple[int, int]:
        lo = 0 if d == 1 else 10 ** (d - 1)
        a, b = rng.randint(lo, 10**d - 1), rng.randint(lo, 10**d - 1)
        scale = 10 ** rng.randint(0, self.width - d) if self.shift else 1
        return a * scale, b * scale

    def _space(self, d: int) -> int:
        return (10 if d == 1 else 9 * 10 ** (d - 1)) ** 2 * ((self.width - d + 1) if self.shift else 1)

    # -- Task interface ----------------------------------------------------------------------------------
    @staticmethod
    def is_held_out(a: int, b: int) -> bool:
        return zlib.crc32(f"{a}+{b}".encode()) % 4 == 0

    def _draw_from(self, rng: random.Random, d: int, held_out: bool) -> tuple[int, int]:
        while True:
            ab = self._draw(rng, d)
            if self.is_held_out(*ab) == held_out:
                return ab

    def eval_sets(self, per_difficulty: int, seed: int) -> list[dict[str, Any]]:
        rng = random.Random(f"eval-{seed}")
        rows = []
        for d in range(1, self.width + 1):
            # At most half of the held-out quarter of a difficulty (1 digit has only 100 problems).
            n = min(per_difficulty, self._space(d) // 8)
            chosen: set[tuple[int, int]] = set()
            while len(chosen) < n:
                chosen.add(self._draw_from(rng, d, held_out=True))
            rows += [self._problem(a, b, d) for a, b in sorted(chosen)]
        return rows

    def max_difficulty(self, iteration: int) -> int:
        return min(self.width, self.seed_digits + iteration) if self.curriculum else self.width

    def prompts(self, iteration: int, n: int, seed: int, top: int | None = None) -> list[dict[str, Any]]:
        """`top`: the hardest difficulty to draw, chosen by the caller (`generate.grow_threshold` raises it
        one digit once accuracy passes a threshold); None: the fixed schedule of `max_difficulty`."""
        rng = random.Random(f"prompts-{seed}-{iteration}")
        top = self.max_difficulty(iteration) if top is None else max(1, min(self.width, top))
        n_top = round(n * self.frontier_share) if top > 1 else n
        rows = []
        for i in range(n):
            d = top if i < n_top else 1 + (i - n_top) % (top - 1)
            rows.append(self._problem(*self._draw_from(rng, d, held_out=False), d))
        return rows

    def seed_set(self, seed: int) -> list[dict[str, Any]]:
        rng = random.Random(f"seed-{seed}")
        rows = []
        for i in range(self.seed_size):
            d = 1 + i % self.seed_digits
            row = self._problem(*self._draw_from(rng, d, held_out=False), d)
            row["completion"] = row["reference"]
            rows.append(row)
        for i in range(self.proposal_rows):  # few problems -> one more of the same difficulty
            d = 1 + i % self.seed_digits
            shown = [self._problem(*self._draw_from(rng, d, held_out=False), d) for _ in range(self.proposal_shots + 1)]
            new = shown.pop()["prompt"]
            rows.append({"prompt_id": f"propose{d}-{i}", "prompt": self.propose_prompt(shown), "reference": new,
                         "difficulty": d, "completion": new})
        return rows

    # -- propose (optional task methods, docs/tasks.md#propose) -----------------------------------------
    def propose_prompt(self, examples: list[dict[str, Any]]) -> str:
        """The examples' prompts, each followed by '|': "75000+80000=|34000+12000=|". A problem prompt ends
        with '=' (answer next), a proposal prompt with '|' (a new problem next)."""
        return "".join(e["prompt"] + "|" for e in examples)

    def parse_proposal(self, text: str) -> dict[str, Any]:
        w = self.width
        m = re.fullmatch(rf"(\d{{{w}}})\+(\d{{{w}}})=", text.strip())
        if not m:
            raise ValueError(f"not '{w} digits+{w} digits=': {text.strip()[:40]!r}")
        a, b = int(m.group(1)[::-1]), int(m.group(2)[::-1])
        if self.is_held_out(a, b):  # keeps the invariant that training never touches the held-out quarter
            raise ValueError(f"{a}+{b} is in the task's held-out quarter")
        return self._problem(a, b, self.difficulty(a, b))

    @staticmethod
    def difficulty(a: int, b: int) -> int:
        """Significant columns: from the lowest non-zero digit of either operand to the highest digit
        (57000 + 800 -> 3: columns 10^2..10^4)."""
        if a == b == 0:
            return 1
        low = min(len(str(x)) - len(str(x).rstrip("0")) for x in (a, b) if x)
        return len(str(max(a, b))) - low

    def verify(self, problem: dict[str, Any], completion: str) -> Verdict:
        got, want = completion.strip(), problem["reference"]
        if got == want:
            return Verdict(True, 1.0, "correct")
        if len(got) != len(want) or not got.isdigit():
            return Verdict(False, 0.0, f"malformed: expected {len(want)} digits, got {got[:20]!r}")
        return Verdict(False, 0.0, f"wrong: expected {want}, got {got}")
