"""The curated gate's contamination rules on templated real-model data: an instruction template that every
prompt shares does not flag rows, a planted evaluation question still does (on the real GX gate)."""

from __future__ import annotations

import pandas as pd
import pytest

from flywheel.gates import GateError, NgramIndex, check_gate, ngrams
from flywheel.io import write_table
from flywheel.steps.curate import curated_suite

from conftest import tiny_config

# A fixed 16-word instruction before every question and the common 12-word suffix after it.
PREFIX = "You are a careful math tutor. Read the problem below and answer it with one number."
SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."

EVAL_QUESTIONS = [
    "Mia picks 12 apples and gives 5 to her brother. How many apples does she have?",
    "A baker makes 24 rolls and sells 9 of them. How many rolls are left?",
    "Tom reads 15 pages on Monday and 20 on Tuesday. How many pages did he read?",
    "A box holds 6 eggs. How many eggs are in 7 boxes?",
    "Sara has 40 stickers and shares them equally among 8 friends. How many does each friend get?",
    "A train travels 60 miles per hour for 3 hours. How far does it go?",
    "Ben had 30 marbles and lost 12. How many marbles does he have?",
    "A garden has 9 rows of 8 tulips. How many tulips are there?",
]
TRAIN_QUESTIONS = [  # different problems; several end on the same words as an evaluation question
    "Lily buys 7 pears and eats 2 of them. How many pears does she have?",
    "Ava collects 18 shells and drops 4 on the way home. How many shells does she have?",
    "A shop had 50 hats and sold 21. How many hats are left?",
    "Max runs 3 miles a day for 5 days. How many miles did he run?",
    "A crate holds 12 bottles. How many bottles are in 4 crates?",
    "Noah had 25 cards and gave away 10. How many cards does he have?",
    "A farm has 6 pens of 5 sheep. How many sheep are there?",
    "Emma saves 4 dollars a week for 9 weeks. How much did she save?",
]


def _prompt(question: str) -> str:
    return f"{PREFIX} {question} {SUFFIX}"


def _curated(prompts: list[str], completions: list[str] | None = None) -> pd.DataFrame:
    completions = completions or [f"Step by step: answer {i}. \\boxed{{{i}}}" for i in range(len(prompts))]
    rows = [{"prompt_id": f"p{i}", "prompt": p, "completion": c, "difficulty": 1,
             "source": "seed" if i < 2 else "self", "iteration": 1, "score": 1.0}
            for i, (p, c) in enumerate(zip(prompts, completions))]
    return pd.DataFrame(rows)  # 2 seed rows of 10: the configured seed share 0.2


TRAIN = [_prompt(q) for q in TRAIN_QUESTIONS] + [_prompt("What is 11 plus 13?"), _prompt("What is 9 times 7?")]


def _gate(tmp_path, curated: pd.DataFrame) -> dict:
    write_table(pd.DataFrame({"prompt": [_prompt(q) for q in EVAL_QUESTIONS]}), tmp_path / "eval.parquet")
    write_table(curated, tmp_path / "curated.parquet")
    return check_gate("curated", tmp_path / "curated.parquet", curated_suite, tiny_config(), rows=len(curated),
                      eval_path=tmp_path / "eval.parquet")


def test_a_shared_instruction_template_does_not_flag_rows(tmp_path):
    # Without removing the template, a plain 13-gram comparison flags most of these rows: the 16-word
    # instruction is a 13-gram of every prompt, and the suffix plus a question's last word is another.
    eval_grams = {g for q in EVAL_QUESTIONS for g in ngrams(_prompt(q), 13)}
    assert sum(any(g in eval_grams for g in ngrams(p, 13)) for p in TRAIN) == len(TRAIN)
    g = _gate(tmp_path, _curated(TRAIN))
    assert g["passed"], g["failed"]
    assert g["observed"]["curated.contamination_ngram_prompt"] == 0


@pytest.mark.parametrize("plant,rules", [
    # an evaluation prompt as it is: the same prompt, so its question too
    (lambda rows: rows.assign(prompt=rows["prompt"].where(rows.index != 4, _prompt(EVAL_QUESTIONS[1]))),
     {"curated.contamination_exact", "curated.contamination_ngram_prompt"}),
    # the evaluation question under another instruction
    (lambda rows: rows.assign(prompt=rows["prompt"].where(rows.index != 4, "Solve: " + EVAL_QUESTIONS[6])),
     {"curated.contamination_ngram_prompt"}),
    # the evaluation question quoted in a completion
    (lambda rows: rows.assign(completion=rows["completion"].where(rows.index != 5, "Like '" + EVAL_QUESTIONS[2]
                                                                  + "' the answer is \\boxed{35}")),
     {"curated.contamination_ngram_completion"}),
])
def test_a_planted_evaluation_question_still_fails(tmp_path, plant, rules):
    with pytest.raises(GateError) as err:
        _gate(tmp_path, plant(_curated(TRAIN)))
    assert set(err.value.failed) == rules


def test_the_template_is_what_most_references_share():
    refs = [_prompt(q) for q in EVAL_QUESTIONS]
    index = NgramIndex(refs, n=13)
    # the instruction and the suffix are removed; each question is left whole
    assert [" ".join(index.content(p.lower().split())) for p in refs] == [q.lower() for q in EVAL_QUESTIONS]
    # fewer than 5 references: no template is inferred (a share of 3 prompts says nothing)
    assert not NgramIndex(refs[:3], n=13).template
    # one-word prompts (arithmetic) have no 3-grams, so nothing changes for them
    assert not NgramIndex([f"{i}+{i}=" for i in range(50)], n=13).template
