"""propose: the model writes problems; duplicates, evaluation prompts, invalid texts and problems outside the
pass-rate window are dropped with their reason; kept ones join the next iteration's prompts."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from flywheel.config import ConfigError, parse_config
from flywheel.io import read_table
from flywheel.schema import DROPPED_PROPOSAL_COLUMNS, PROPOSAL_COLUMNS
from flywheel.steps.data import grow_difficulty, make_datasets, sample_prompts
from flywheel.steps.propose import REASONS, filter_proposals, keep_in_window, propose_problems
from flywheel.tasks.arithmetic import Arithmetic

from conftest import TINY


def fmt(t: Arithmetic, a: int, b: int) -> str:
    return t.format_prompt(a, b)


def not_held_out(pairs):
    return [(a, b) for a, b in pairs if not Arithmetic.is_held_out(a, b)]


# -- the arithmetic task's propose methods -------------------------------------------------------------------

@pytest.mark.parametrize("a, b, difficulty", [(57000, 800, 3), (5, 3, 1), (50, 30, 1), (0, 7, 1), (0, 0, 1),
                                              (99, 1, 2), (12345, 1, 5)])
def test_difficulty_counts_the_significant_columns(a, b, difficulty):
    assert Arithmetic.difficulty(a, b) == difficulty


def test_parse_proposal_gives_a_problem_with_its_answer_or_says_why_not():
    t = Arithmetic(width=3)
    a, b = not_held_out([(x, 7) for x in range(10, 60)])[0]
    row = t.parse_proposal(" " + fmt(t, a, b) + "\n")
    assert row["prompt"] == fmt(t, a, b) and row["reference"] == t.format_answer(a, b)
    assert t.verify(row, row["reference"]).correct
    held = next((x, 7) for x in range(10, 60) if Arithmetic.is_held_out(x, 7))
    for text, why in [("12+34=", "3 digits"), ("123+456", "3 digits"), ("123*456=", "3 digits"),
                      (fmt(t, *held), "held-out")]:
        with pytest.raises(ValueError, match=why):
            t.parse_proposal(text)


def test_seed_set_teaches_the_proposal_format():
    t = Arithmetic(width=3, seed_digits=2, seed_size=10, proposal_rows=6, proposal_shots=2)
    rows = t.seed_set(0)
    assert len(rows) == 16
    for r in rows[10:]:
        shown = r["prompt"].split("|")[:-1]
        assert len(shown) == 2 and r["prompt"].endswith("|")
        new = t.parse_proposal(r["completion"])  # the completion is a valid, non-held-out problem
        # of the examples' difficulty (significant columns never exceed the generator's digits)
        assert new["difficulty"] <= r["difficulty"]


# -- filtering, on hand-made proposals -----------------------------------------------------------------------

def test_filter_proposals_drops_each_kind_with_its_reason():
    t = Arithmetic(width=3)
    pairs = not_held_out([(x, y) for x in range(100, 130) for y in (5, 6)])
    new1, new2, pooled, evald = (fmt(t, *p) for p in pairs[:4])
    texts = [new1, new1, " " + new1.upper() + " ", new2, pooled, evald, "12+3=", "hello"]
    candidates, dropped = filter_proposals(t, texts, pool_prompts=[pooled], eval_prompts=[evald])
    assert [c["prompt"] for c in candidates] == [new1, new2]
    assert [c["proposal"] for c in candidates] == [new1, new2]
    got = [(d["proposal"], d["drop_reason"]) for d in dropped]
    assert got == [(new1, "duplicate"), (" " + new1.upper() + " ", "duplicate"), (pooled, "duplicate"),
                   (evald, "in-eval"), ("12+3=", "invalid"), ("hello", "invalid")]
    assert dropped[0]["duplicate_of"] == "proposal 0" and dropped[2]["duplicate_of"] == f"pool: {pooled}"
    assert all(d["detail"] for d in dropped)


def test_keep_in_window_drops_too_hard_and_too_easy():
    rows = [{"prompt_id": str(i)} for i in range(5)]
    kept, dropped = keep_in_window(rows, [0.0, 0.125, 0.5, 0.875, 1.0], (0.125, 0.875))
    assert [(r["prompt_id"], r["pass_rate"]) for r in kept] == [("1", 0.125), ("2", 0.5), ("3", 0.875)]
    assert [(d["prompt_id"], d["drop_reason"]) for d in dropped] == [("0", "too-hard"), ("4", "too-easy")]


# -- config errors -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("propose, match", [
    ({"pass_rate_window": [0.9, 0.1]}, r"propose\.pass_rate_window.*lo <= hi"),
    ({"samples": 2, "pass_rate_window": [0.6, 0.9]}, r"propose\.pass_rate_window.*no pass rate k/2.*propose\.samples"),
    ({"samples": 0}, r"propose\.samples.*greater than 0"),
])
def test_bad_propose_config_names_the_field(propose, match):
    with pytest.raises(ConfigError, match=match):
        parse_config({"propose": propose})


def test_propose_needs_sampled_pass_rates():
    with pytest.raises(ConfigError, match=r"propose\.samples.*generate\.temperature is 0.*propose\.samples: 1"):
        parse_config({"propose": {"enabled": True}, "generate": {"temperature": 0, "samples_per_prompt": 1}})


def test_propose_needs_fresh_prompts():
    with pytest.raises(ConfigError, match=r"propose\.enabled.*task\.prompt_source"):
        parse_config({"propose": {"enabled": True}, "task": {"prompt_source": "seed"}})


def test_a_task_without_the_propose_methods_is_refused_before_the_run():
    from flywheel.steps.verify import preflight

    cfg = parse_config({"propose": {"enabled": True}, "gates": TINY["gates"],
                        "task": {"name": "jsonl", "params": {"path": "examples/data/word_problems.jsonl"}}})
    with pytest.raises(ValueError, match=r"propose\.enabled.*'jsonl'.*propose_prompt, parse_proposal.*"
                                         r"propose\.enabled: false"):
        preflight(cfg)


def test_grow_threshold_needs_a_task_that_takes_top():
    from flywheel.steps.verify import preflight

    cfg = parse_config({"generate": {"grow_threshold": 0.8}, "gates": TINY["gates"],
                        "task": {"name": "jsonl", "params": {"path": "examples/data/word_problems.jsonl"}}})
    with pytest.raises(ValueError, match=r"generate\.grow_threshold.*'jsonl'.*`top`.*grow_threshold: 0"):
        preflight(cfg)


# -- the difficulty grows a digit at a time once accuracy passes generate.grow_threshold ---------------------

@pytest.mark.parametrize("last, top", [
    (None, 2),                                                                       # nothing measured yet
    ({"evaluate": {"accuracy_by_difficulty": {"1": 1.0, "2": 0.9, "3": 0.2}}}, 3),        # seed level mastered
    ({"evaluate": {"accuracy_by_difficulty": {"1": 1.0, "2": 0.7, "3": 0.2}}}, 2),        # not yet
    ({"evaluate": {"accuracy_by_difficulty": {"2": 1.0, "3": 0.95, "4": 0.9}},
      "generate": {"plan": {"top_difficulty": 3}}}, 4),                              # one digit, not two
    ({"evaluate": {"accuracy_by_difficulty": {"2": 1.0, "3": 0.5}},
      "generate": {"plan": {"top_difficulty": 3}}}, 3),
    ({"evaluate": {"accuracy_by_difficulty": {"2": 1.0, "3": 0.95}},
      "generate": {"plan": {"top_difficulty": 3}}}, 3),                              # the hardest evaluated
])
def test_grow_difficulty(last, top):
    assert grow_difficulty(0.8, last, seed_top=2)["top"] == top


def test_prompts_follow_the_grown_difficulty(tmp_path):
    cfg = parse_config({**TINY, "task": {"params": {"width": 5, "seed_digits": 2, "seed_size": 50}},
                        "generate": {**TINY["generate"], "grow_threshold": 0.8}})
    summary = tmp_path / "summary.json"
    for acc, top in [(0.5, 2), (0.9, 3)]:
        summary.write_text(json.dumps({"iterations": [{"iteration": 0, "evaluate": {
            "accuracy_by_difficulty": {"1": 1.0, "2": acc, "3": 0.1}}}]}))
        m = sample_prompts(cfg, 1, tmp_path / "p.parquet", previous_summary=summary)
        assert m["plan"]["top_difficulty"] == top and f"accuracy {acc:.3f}" in m["plan"]["top_reason"]
        assert max(int(d) for d in m["by_difficulty"]) == top


# -- the step, with the real tiny model ----------------------------------------------------------------------

def propose_config(**propose):
    d = copy.deepcopy(TINY)
    d["task"]["params"].update(proposal_rows=200, proposal_shots=2)
    # 2 example prompts of 9 chars + an 8-char problem + EOS; 300 warm-up steps teach the tiny model both formats
    d["model"]["embedded"].update(max_position_embeddings=32, warmup_steps=300)
    d["propose"] = {"enabled": True, "proposals": 64, "examples": 2, "samples": 4, "max_new_tokens": 10, **propose}
    return d


@pytest.fixture(scope="module")
def proposer(tmp_path_factory):
    from flywheel.steps.init_model import init_model

    cfg = parse_config(propose_config())
    d = tmp_path_factory.mktemp("proposer")
    make_datasets(cfg, d / "seed.parquet", d / "eval.parquet")
    init_model(cfg, d / "seed.parquet", d / "model")
    sample_prompts(cfg, 1, d / "prompts.parquet")
    return {"dir": d, "cfg": cfg}


def test_the_tiny_model_proposes_valid_problems_and_every_drop_has_a_reason(proposer):
    d, cfg = proposer["dir"], proposer["cfg"].model_copy(update={"propose": proposer["cfg"].propose.model_copy(
        update={"pass_rate_window": (0.0, 0.75)})})
    m = propose_problems(d / "model", d / "prompts.parquet", d / "eval.parquet", d / "kept.parquet",
                         d / "dropped.parquet", cfg, 1)
    kept = read_table(d / "kept.parquet", PROPOSAL_COLUMNS)
    dropped = read_table(d / "dropped.parquet", DROPPED_PROPOSAL_COLUMNS)
    assert m["proposed"] == 64 and len(kept) + len(dropped) == 64 and m["kept"] == len(kept)
    # measured: 44 of 64 valid after 300 warm-up steps; a model that never saw the format writes ~0
    assert m["valid"] >= 16, m
    assert set(dropped["drop_reason"]) <= set(REASONS)
    assert m["dropped_by_reason"] == {r: int((dropped["drop_reason"] == r).sum()) for r in REASONS}
    assert len(kept) > 0  # the window starts at 0, so every valid new problem the model fails 1+ times stays
    task = Arithmetic(**cfg.task.params)
    evals = set(read_table(d / "eval.parquet")["prompt"])
    pool = set(read_table(d / "prompts.parquet")["prompt"])
    for row in kept.to_dict("records"):
        assert 0.0 <= row["pass_rate"] <= 0.75 and row["iteration"] == 1
        assert task.parse_proposal(row["prompt"])["reference"] == row["reference"]
        assert row["prompt"] not in evals and row["prompt"] not in pool
    assert kept["prompt"].is_unique
    # the kept problems join the next iteration's prompts
    p2 = sample_prompts(cfg, 2, d / "prompts2.parquet", proposed_path=d / "kept.parquet")
    assert p2["proposed"] == len(kept) and p2["prompts"] == cfg.generate.prompts_per_iteration + len(kept)
    assert set(kept["prompt"]) <= set(read_table(d / "prompts2.parquet")["prompt"])


# -- through the pipeline ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_kept_proposals_join_the_next_iterations_prompts_in_the_pipeline(tmp_path):
    from flywheel.cli import main

    # window [0, 1]: the tiny model's pass rates are near 0, and this test is about the wiring
    data = propose_config(pass_rate_window=[0.0, 1.0], proposals=32)
    data["promote"] = {"policy": "always"}  # iteration 2 must run
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "out")]) == 0
    its = json.loads((tmp_path / "out" / "summary.json").read_text())["iterations"]
    assert [it["iteration"] for it in its] == [0, 1, 2]
    assert "propose" in its[1] and "propose" not in its[2]  # the last iteration's proposals would feed nothing
    m = its[1]["propose"]
    assert m["proposed"] == 32 and m["kept"] > 0 and sum(m["dropped_by_reason"].values()) == 32 - m["kept"]
    root = next((tmp_path / "out" / "kfp").iterdir())
    kept = read_table(root / "propose" / "proposals", PROPOSAL_COLUMNS)
    prompts2 = read_table(root / "prompts-2" / "prompts")
    assert len(kept) == m["kept"] and set(kept["prompt"]) <= set(prompts2["prompt"])


def test_dvc_stages_carry_the_kept_proposals_to_the_next_prompts():
    from flywheel.versions import dvc_yaml

    stages = yaml.safe_load(dvc_yaml("examples/propose.yaml"))["stages"]
    assert [s for s in stages if s.startswith("propose")] == ["propose_1", "propose_2"]  # 3 iterations
    assert "--proposed data/iter_1/propose/proposals.parquet" in stages["prompts_2"]["cmd"]
    assert stages["prompts_2"]["deps"][0] == "data/iter_1/propose/proposals.parquet"
    assert "--plan metrics/iter_1/prompts.json" in stages["propose_1"]["cmd"]  # the plan's temperature
    assert "--propose metrics/iter_2/propose.json" in stages["record_2"]["cmd"]
