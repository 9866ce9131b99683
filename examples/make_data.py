"""Write the small data files of the example configs (no downloads; deterministic, so the committed files
are exactly what this script writes, and tests/test_examples_data.py checks that they are).

    python examples/make_data.py            # rewrites examples/data/*.jsonl

- `word_problems.jsonl` (examples/word-problems.yaml, the `jsonl` task): GSM8K-style one-step addition
  and subtraction word problems, answers written as `12+7=19` then a `#### 19` line, difficulty = digits
  of the larger operand (1-3). Short enough for the embedded character-level model.
- `smollm2_train.jsonl`, `smollm2_eval.jsonl` (examples/smollm2.yaml): one-step word problems with 1-2
  digit operands for SmolLM2-135M-Instruct; the held-out file says them in other words (`REWORDED`).
- `code_problems.jsonl` (examples/code.yaml, the `code` task): infer a small function from three of its
  values and write it as a lambda body (`f(0)=2,f(1)=5,f(2)=8;f=lambda x:` -> `3*x+2`), checked by unit
  tests at other points; difficulty 1 = x+b, 2 = a*x, 3 = a*x+b, 4 = a*x*x+b.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
NAMES = ["Ann", "Ben", "Cal", "Dee", "Eli", "Fay", "Gus", "Ivy", "Jon", "Kim", "Lea", "Max", "Ned", "Ola"]
ITEMS = ["pens", "cups", "eggs", "pears", "cards", "books", "coins", "shells"]


def word_problems(n: int = 1500, seed: int = 0) -> list[dict]:
    rng = random.Random(f"word-problems-{seed}")
    rows, seen = [], set()
    while len(rows) < n:
        digits = 1 + len(rows) % 3
        a, b = (rng.randint(1 if digits == 1 else 10 ** (digits - 1), 10**digits - 1) for _ in range(2))
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        if rng.random() < 0.5:
            q, ans = f"{name} has {a} {item} and gets {b} more. How many {item} now?", f"{a}+{b}={a + b}\n#### {a + b}"
        else:
            a, b = max(a, b), min(a, b)
            q, ans = f"{name} has {a} {item} and gives away {b}. How many {item} now?", f"{a}-{b}={a - b}\n#### {a - b}"
        if q not in seen:
            seen.add(q)
            rows.append({"id": f"wp{len(rows)}", "question": q, "answer": ans, "difficulty": digits})
    return rows


# Held-out wordings of examples/smollm2.yaml: the same one-step sums, said differently from the training
# rows' "X has a items and gets b more. How many items now?", so a held-out gain is not the model learning
# one sentence shape.
REWORDED = {
    "+": ["There are {a} {item} in a box. {name} puts in {b} more. How many {item} are in the box now?",
          "{name} found {a} {item} on Monday and {b} {item} on Tuesday. How many {item} did {name} find in all?"],
    "-": ["{name} had {a} {item} and lost {b} of them. How many {item} are left?",
          "A shop has {a} {item}. It sells {b}. How many {item} does the shop have left?"],
}


def smollm2_problems(split: str, n: int, seed: int = 0) -> list[dict]:
    """One-step word problems with 1-2 digit operands for examples/smollm2.yaml: 'train' in the training
    wording (as word_problems.jsonl), 'eval' in the REWORDED ones; ids distinct across the two files."""
    rng = random.Random(f"smollm2-{split}-{seed}")
    rows, seen = [], set()
    while len(rows) < n:
        digits = 1 + len(rows) % 2
        a, b = (rng.randint(1 if digits == 1 else 10, 10**digits - 1) for _ in range(2))
        name, item, op = rng.choice(NAMES), rng.choice(ITEMS), rng.choice("+-")
        if op == "-":
            a, b = max(a, b), min(a, b)
        if split == "train":
            q = (f"{name} has {a} {item} and gets {b} more. How many {item} now?" if op == "+" else
                 f"{name} has {a} {item} and gives away {b}. How many {item} now?")
        else:
            q = rng.choice(REWORDED[op]).format(a=a, b=b, name=name, item=item)
        c = a + b if op == "+" else a - b
        if q not in seen:
            seen.add(q)
            rows.append({"id": f"smol-{split}{len(rows)}", "question": q, "answer": f"{a}{op}{b}={c}\n#### {c}",
                         "difficulty": digits})
    return rows


def code_problems(n: int = 800, seed: int = 0) -> list[dict]:
    rng = random.Random(f"code-problems-{seed}")
    forms = {1: "x{b:+d}", 2: "{a}*x", 3: "{a}*x{b:+d}", 4: "{a}*x*x{b:+d}"}
    rows, seen = [], set()
    while len(rows) < n:
        level = 1 + len(rows) % 4
        a, b = rng.randint(2, 20), rng.choice([v for v in range(-9, 31) if v])
        body = forms[level].format(a=a, b=b)
        f = eval(f"lambda x: {body}")  # our own generated expression, not model output
        xs = sorted(rng.sample(range(6), 3))
        prompt = ",".join(f"f({x})={f(x)}" for x in xs) + ";f=lambda x:"
        if prompt in seen:
            continue
        seen.add(prompt)
        tests = [f"assert f({x}) == {f(x)}" for x in (7, -2, 10)]
        rows.append({"id": f"code{len(rows)}", "prompt": prompt, "prefix": "f=lambda x:", "solution": body,
                     "tests": tests, "difficulty": level})
    return rows


FILES = {"word_problems.jsonl": word_problems, "code_problems.jsonl": code_problems,
         "smollm2_train.jsonl": lambda: smollm2_problems("train", 800),
         "smollm2_eval.jsonl": lambda: smollm2_problems("eval", 400)}


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def main(out: Path = DATA) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, make in FILES.items():
        (out / name).write_text(render(make()))
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA)
