"""Final-answer extraction and comparison, for tasks whose answers are numbers or short strings.

    extract_answer("... so she has 72 apples.\\n#### 72", "auto")   # '72'
    extract_answer("the area is $\\\\boxed{\\\\frac{3}{4}}$", "auto")  # '\\\\frac{3}{4}'
    answers_match("0.75", "3/4")                                    # True (numeric, within tolerance)

Formats (`answer_format`):
- `gsm8k`: the text after the last `####` (GSM8K's final line), tolerant of what models write there:
  `##### 12`, `#### $12`, `#### 1,200`, `#### 12.`, `#### 12 apples` (the first number of a line that is
  not a number as a whole);
- `boxed`: the contents of the last `\\boxed{...}` (MATH, most chain-of-thought prompts), braces balanced;
- `last-number`: the last number in the text (`1,234`, `-3.5`, `3/4`);
- `exact`: the whole text, stripped;
- `math`: Hugging Face's `math-verify` finds the answer (the last `\\boxed{}`, LaTeX, or a plain
  expression) and compares it symbolically: `\\frac{1}{2}` = `0.5`, `\\boxed{12\\text{ cm}}` = `12`,
  `x = 5` = `5`, `\\{1,2\\}` = `\\{2,1\\}`;
- `auto`: `gsm8k` if the text has `####`, else `boxed` if it has `\\boxed`, else `last-number`, else `exact`.
"""

from __future__ import annotations

import math
import re
import threading
from fractions import Fraction

FORMATS = ("auto", "gsm8k", "boxed", "last-number", "exact", "math")
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def _boxed(text: str) -> str | None:
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None  # unbalanced: no answer


def extract_answer(text: str, answer_format: str = "auto") -> str | None:
    """The final answer in `text` per `answer_format`, or None when there is none."""
    if answer_format not in FORMATS:
        raise ValueError(f"answer_format {answer_format!r}: expected one of {', '.join(FORMATS)}")
    text = text or ""
    fmt = answer_format
    if fmt == "auto":
        fmt = "gsm8k" if "####" in text else "boxed" if ("\\boxed" in text or "\\fbox" in text) else "last-number"
    if fmt == "math":
        found = _math_parse(text)
        return found[-1] if found and isinstance(found[-1], str) else None
    if fmt == "gsm8k":
        if "####" not in text:
            return None
        ans = text.rsplit("####", 1)[1].strip().splitlines()
        if not ans or not ans[0].strip():
            return None
        ans = ans[0].strip().rstrip(".").strip()
        if to_number(ans) is None and (number := _NUMBER.search(ans)):
            return number.group(0)  # '12 apples', '**12**', 'x = 12' -> '12'
        return ans
    if fmt == "boxed":
        return _boxed(text)
    if fmt == "last-number":
        found = _NUMBER.findall(text)
        if found:
            return found[-1]
        if answer_format == "last-number":
            return None
        fmt = "exact"  # auto, and no number in the text: the text itself
    return text.strip() or None


def to_number(s: str) -> float | None:
    """'1,234' -> 1234.0, '3/4' -> 0.75, '$5' -> 5.0, '12%' -> 12.0, '\\\\frac{1}{2}' -> 0.5; None if not a number."""
    t = s.strip().replace(",", "").replace("$", "").rstrip("%").strip()
    try:
        return float(t)  # the common case, ~20x faster than Fraction
    except ValueError:
        pass
    if "frac" in t:
        m = re.fullmatch(r"\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}", t)
        t = f"{m.group(1)}/{m.group(2)}" if m else t
    if "/" not in t:
        return None
    try:
        return float(Fraction(t))
    except (ValueError, ZeroDivisionError):
        return None


def _norm(s: str) -> str:
    return " ".join(s.strip().rstrip(".").casefold().split())


def _timeout() -> int | None:
    # math-verify times out with SIGALRM, which only the main thread may set; elsewhere (a verifier's
    # worker thread) it must run without one. 5 s: its own default, ~100x the slowest parse seen here.
    return 5 if threading.current_thread() is threading.main_thread() else None


def _math_parse(text: str) -> list:
    from math_verify import parse

    return parse(text, parsing_timeout=_timeout())


def _delimited(answer: str) -> str:
    """An extracted answer ('\\frac{3}{4}') as LaTeX math-verify recognises as such ('$\\frac{3}{4}$')."""
    return answer if any(d in answer for d in ("$", "\\boxed", "\\(", "\\[")) else f"${answer}$"


def math_match(got: str, want: str) -> bool:
    """`math-verify`'s verdict on answer `got` against reference `want` (both as extracted strings)."""
    from math_verify import verify

    gold, pred = _math_parse(_delimited(want)), _math_parse(_delimited(got))
    return bool(gold and pred and verify(gold, pred, timeout_seconds=_timeout()))


def answers_match(got: str, want: str, rel_tol: float = 1e-6, abs_tol: float = 1e-9,
                  answer_format: str = "auto") -> bool:
    """Numbers compare within tolerance, anything else as case- and whitespace-normalised text; with
    `answer_format` 'math', symbolically (math-verify)."""
    if got == want:
        return True
    if answer_format == "math":
        return math_match(got, want)
    a, b = to_number(got), to_number(want)
    if a is not None and b is not None:
        return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)
    return _norm(got) == _norm(want)


def canonical(answer: str) -> str:
    """A key under which equal answers collide (for majority vote): '1,000' and '1000.0' -> '1000'."""
    x = to_number(answer)
    if x is None or not math.isfinite(x):
        return _norm(answer)
    return str(int(x)) if x == int(x) and abs(x) < 1e15 else repr(round(x, 9))
