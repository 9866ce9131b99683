import pytest

from flywheel.tasks import load_task
from flywheel.tasks.arithmetic import Arithmetic


def test_format_is_reversed_and_padded():
    t = Arithmetic(width=5)
    assert t.format_prompt(57, 8) == "75000+80000="
    assert t.format_answer(57, 8) == "560000"  # 65, padded to 6 digits, least significant first


@pytest.mark.parametrize("completion,correct,reason", [
    ("560000", True, "correct"),
    (" 560000\n", True, "correct"),
    ("560001", False, "wrong"),
    ("56000", False, "malformed"),
    ("56a000", False, "malformed"),
    ("", False, "malformed"),
])
def test_verifier_table(completion, correct, reason):
    t = Arithmetic(width=5)
    problem = {"reference": t.format_answer(57, 8)}
    v = t.verify(problem, completion)
    assert v.correct is correct and v.score == float(correct) and v.reason.startswith(reason)


def test_held_out_never_reaches_training():
    t = Arithmetic(width=3, seed_digits=2, seed_size=500)
    held = {r["prompt"] for r in t.eval_sets(50, seed=0)}
    train = {r["prompt"] for r in t.seed_set(0)} | {r["prompt"] for i in (1, 2, 3) for r in t.prompts(i, 300, 0)}
    assert held and train and not held & train


def test_prompts_are_seeded_and_follow_the_curriculum():
    t = Arithmetic(width=5, seed_digits=2, frontier_share=0.75)
    assert t.prompts(1, 40, 0) == t.prompts(1, 40, 0)
    assert t.prompts(1, 40, 0) != t.prompts(2, 40, 0)
    ds = [r["difficulty"] for r in t.prompts(1, 40, 0)]
    assert max(ds) == 3 and ds.count(3) == 30
    assert max(r["difficulty"] for r in t.prompts(9, 40, 0)) == 5  # capped at the width


def test_answers_are_right():
    t = Arithmetic(width=4)
    for r in t.eval_sets(20, seed=1):
        a, b = (int(x[::-1]) for x in r["prompt"][:-1].split("+"))
        assert int(r["reference"][::-1]) == a + b


def test_load_task_errors():
    assert isinstance(load_task("arithmetic", {"width": 3}), Arithmetic)
    with pytest.raises(ValueError, match="cannot import module"):
        load_task("no_such_pkg.tasks:Thing")
    with pytest.raises(ValueError, match="no attribute"):
        load_task("flywheel.tasks.arithmetic:Nope")
    with pytest.raises(ValueError, match="lacks method"):
        load_task("collections:OrderedDict")
    with pytest.raises(ValueError, match="bad task.params"):
        load_task("arithmetic", {"digits": 3})
    with pytest.raises(ValueError, match="import path"):
        load_task("not-a-path")
