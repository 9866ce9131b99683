"""Answers as real models write them: `answer_format: math` (math-verify) and the `gsm8k` variants.
Tables of (prediction, label, expected), as open-instruct tests its verifiers."""

from __future__ import annotations

import json
import threading

import pytest

from flywheel.tasks.answers import answers_match, extract_answer
from flywheel.tasks.jsonl import Jsonl


def _math(prediction: str, label: str) -> bool:
    got = extract_answer(prediction, "math")
    return got is not None and answers_match(got, label, answer_format="math")


@pytest.mark.parametrize("prediction,label,expected", [
    ("So the answer is $\\frac{1}{2}$.", "0.5", True),                   # fraction vs decimal
    ("\\boxed{\\dfrac{3}{4}}", "3/4", True),
    ("The area is \\boxed{12\\text{ cm}^2}", "12", True),                 # units
    ("we get \\boxed{12\\text{ cm}}", "12", True),
    ("Solving, $x = 5$", "5", True),                                      # an equation's right side
    ("x = 5", "5", True),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", True),                           # symbolic equality
    ("\\boxed{\\{1,2\\}}", "\\{2,1\\}", True),                            # sets, any order
    ("The total is 1,200 apples.", "1200", True),
    ("first $3$, then finally \\boxed{7}", "7", True),                    # the boxed answer wins
    ("\\boxed{0.33}", "1/3", False),                                      # close is not equal
    ("I get 7", "8", False),
    ("\\boxed{x^2}", "x^3", False),
    ("no answer here", "5", False),
    ("", "5", False),
])
def test_math_format(prediction, label, expected):
    assert _math(prediction, label) is expected


@pytest.mark.parametrize("prediction,label,expected", [
    ("She has 12.\n#### 12", "12", True),
    ("##### 12", "12", True),                   # one '#' too many
    ("#### $12", "12", True),
    ("#### 1,200", "1200", True),
    ("#### 12.", "12", True),                   # trailing period
    ("#### 12 apples", "12", True),             # trailing units
    ("#### $1,200.00 dollars", "1200", True),
    ("#### **12**", "12", True),                # markdown bold
    ("#### 3\n#### 4\n#### 5", "5", True),      # a looping model: the last final line counts
    ("#### 13 apples", "12", False),
    ("She has 12 apples", "12", False),         # no final line
    ("#### ", "12", False),
])
def test_gsm8k_variants(prediction, label, expected):
    got = extract_answer(prediction, "gsm8k")
    assert (got is not None and answers_match(got, label)) is expected


def test_math_format_works_off_the_main_thread():
    # math-verify's timeouts use SIGALRM, which only the main thread may set
    out = []
    worker = threading.Thread(target=lambda: out.append(_math("\\boxed{\\frac{1}{2}}", "0.5")))
    worker.start()
    worker.join()
    assert out == [True]


def test_jsonl_task_with_math_answers(tmp_path):
    rows = [{"question": f"q{i}: half of {2 * i}?", "answer": f"It is $\\boxed{{\\frac{{{2 * i}}}{{2}}}}$"}
            for i in range(1, 41)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = Jsonl(str(tmp_path / "p.jsonl"), answer_format="math", seed_size=4)
    problem = next(p for p in task.pool.rows if p["prompt"].startswith("q3:"))
    assert problem["reference"] == "\\frac{6}{2}"
    assert task.verify(problem, "Half of 6 is \\boxed{3}.").correct
    assert task.verify(problem, "so x = 3").correct
    verdict = task.verify(problem, "\\boxed{4}")
    assert not verdict.correct and verdict.reason == "wrong: expected \\frac{6}{2}, got 4"
