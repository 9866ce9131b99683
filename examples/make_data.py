"""Write the small data files of the example configs (no downloads; deterministic, so the committed files
are exactly what this script writes, and tests/test_examples_data.py checks that they are).

    python examples/make_data.py            # rewrites examples/data/*.jsonl

- `word_problems.jsonl` (examples/word-problems.yaml, the `jsonl` task): GSM8K-style one-step addition
  and subtraction word problems, answers written as `12+7=19` then a `#### 19` line, difficulty = digits
  of the larger operand (1-3). Short enough for the embedded character-level model.
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


FILES = {"word_problems.jsonl": word_problems, "code_problems.jsonl": code_problems}


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def main(out: Path = DATA) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, make in FILES.items():
        (out / name).write_text(render(make()))
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA)
