"""The verifier interface (per-sample or batch, by import path), majority vote, and the model-based
verifiers on tiny models built here (no hub)."""

from __future__ import annotations

import sys
import textwrap

import pandas as pd
import pytest
import torch

from flywheel.io import read_table, write_table
from flywheel.steps.verify import verify_samples
from flywheel.tasks import Verdict
from flywheel.verifiers import load_verifier
from flywheel.verifiers.majority import MajorityVote

from conftest import tiny_config


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A module `my_verifiers` on sys.path with verifiers of every shape, and some broken ones."""
    (tmp_path / "my_verifiers.py").write_text(textwrap.dedent('''
        from flywheel.tasks import Verdict

        def exact(problem, completion):
            ok = completion == problem["reference"]
            return Verdict(ok, float(ok), "same" if ok else "different")

        def longest(samples):                      # batch: sees every sample of every prompt
            best = samples.groupby("prompt_id")["completion"].transform(lambda s: s.str.len().max())
            return [Verdict(bool(n == b), float(n == b), "longest") for n, b in zip(samples["completion"].str.len(), best)]

        class Prefix:
            def __init__(self, prefix="a"):
                self.prefix = prefix
            def verify(self, problem, completion):
                ok = completion.startswith(self.prefix)
                return Verdict(ok, float(ok), "prefix")

        class Nothing:
            pass

        def three(a, b, c):
            pass

        def too_few(samples):
            return []

        def tuples(problem, completion):
            return (True, 1.0, "ok")
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_verifiers", None)
    return pd.DataFrame({"prompt_id": ["p", "p", "q"], "prompt": "x", "reference": ["ab", "ab", "c"],
                         "difficulty": 1, "sample_id": [0, 1, 0], "completion": ["ab", "abc", "c"]})


def test_a_verifier_may_be_a_function_a_batch_function_or_a_class(plugin):
    assert [v.correct for v in load_verifier("my_verifiers:exact")(plugin)] == [True, False, True]
    assert [v.correct for v in load_verifier("my_verifiers:longest")(plugin)] == [False, True, True]
    assert [v.correct for v in load_verifier("my_verifiers:Prefix", {"prefix": "c"})(plugin)] == [False, False, True]


@pytest.mark.parametrize("name,params,message", [
    ("my_verifiers:nope", {}, "module 'my_verifiers' has no attribute 'nope'"),
    ("no_such_module:f", {}, "cannot import module 'no_such_module'"),
    ("my_verifiers:Nothing", {}, "has neither a verify nor a verify_batch method"),
    ("my_verifiers:three", {}, "takes 3 required positional arguments"),
    ("my_verifiers:exact", {"x": 1}, "is a function, so it takes no verify.params"),
    ("my_verifiers:Prefix", {"suffix": "a"}, "bad verify.params"),
])
def test_a_wrong_verifier_stops_with_one_message(plugin, name, params, message):
    with pytest.raises(ValueError, match=message):
        load_verifier(name, params)


@pytest.mark.parametrize("name,message", [("my_verifiers:too_few", "returned 0 verdicts for 3 samples"),
                                          ("my_verifiers:tuples", "expected flywheel.tasks.Verdict")])
def test_a_verifier_returning_the_wrong_thing_is_named(plugin, name, message):
    with pytest.raises(ValueError, match=message):
        load_verifier(name)(plugin)


# --- majority vote ----------------------------------------------------------------------------------

def _votes(groups: dict[str, list[str]]) -> pd.DataFrame:
    rows = [{"prompt_id": p, "prompt": p, "reference": "", "difficulty": 1, "sample_id": i, "completion": c}
            for p, cs in groups.items() for i, c in enumerate(cs)]
    return pd.DataFrame(rows)


def test_majority_vote_table():
    df = _votes({"a": ["#### 7", "#### 7", "so 7.0\n#### 7.0", "#### 8"],   # 3/4 agree on 7
                 "b": ["#### 1", "#### 2", "#### 1", "#### 2"],            # tie
                 "c": ["#### 5", "#### 5", "#### 6", "nothing"],           # 2/4: a weak majority at 0.6
                 "d": ["#### 9"]})                                          # one sample: nothing to vote
    v = MajorityVote(min_agreement=0.6, answer_format="gsm8k").verify_batch(df)
    got = [(x.correct, x.score, x.reason.split(":")[0]) for x in v]
    assert got == [(True, 0.75, "majority"), (True, 0.75, "majority"), (True, 0.75, "majority"),
                   (False, 0.25, "minority"),
                   (False, 0.5, "no majority"), (False, 0.5, "no majority"), (False, 0.5, "no majority"),
                   (False, 0.5, "no majority"),
                   (False, 0.5, "weak majority"), (False, 0.5, "weak majority"), (False, 0.25, "minority"),
                   (False, 0.0, "no answer"),
                   (False, 1.0, "too few samples to vote")]


def test_majority_vote_exact_keeps_formats_apart():
    df = _votes({"a": ["056", "056", "56", "56", "56"]})  # the same number, but only '56' is a 2-digit answer
    v = MajorityVote(answer_format="exact").verify_batch(df)
    assert [x.correct for x in v] == [False, False, True, True, True]


def test_majority_vote_in_the_verify_step_uses_no_reference(prepared, tmp_path):
    from flywheel.steps.data import sample_prompts
    from flywheel.steps.generate import generate_samples

    cfg = tiny_config(verify={"verifier": "majority-vote", "params": {"answer_format": "exact"}, "audit": True},
                      generate={"prompts_per_iteration": 16, "samples_per_prompt": 6, "max_new_tokens": 6,
                                "batch_size": 96})
    sample_prompts(cfg, 1, tmp_path / "p.parquet")
    generate_samples(prepared["model"], tmp_path / "p.parquet", tmp_path / "s.parquet", cfg, iteration=1)
    m = verify_samples(tmp_path / "s.parquet", tmp_path / "v.parquet", cfg)
    samples = read_table(tmp_path / "s.parquet")
    write_table(samples.assign(reference=""), tmp_path / "blank.parquet")  # no labels at all
    m_blank = verify_samples(tmp_path / "blank.parquet", tmp_path / "vb.parquet", cfg.model_copy(
        update={"verify": cfg.verify.model_copy(update={"audit": False})}))
    with_ref, without = read_table(tmp_path / "v.parquet"), read_table(tmp_path / "vb.parquet")
    assert with_ref["correct"].tolist() == without["correct"].tolist()
    assert m["pass_rate"] == m_blank["pass_rate"] > 0
    a = m["audit"]
    assert a["accepted_precision"] == pytest.approx(with_ref.loc[with_ref["correct"], "reference_correct"].mean())
    assert 0 <= a["reference_pass_rate"] <= 1
    accepted = with_ref[with_ref["correct"]]
    assert a["accepted_precision_by_difficulty"] == pytest.approx(
        {str(k): v for k, v in accepted.groupby("difficulty")["reference_correct"].mean().items()})


# --- model-based verifiers on tiny local models ------------------------------------------------------

def _tiny(tmp_path, kind: str, num_labels: int = 1):
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    from flywheel.model import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    conf = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, max_position_embeddings=64, pad_token_id=tok.pad_token_id,
                       eos_token_id=tok.eos_token_id, num_labels=num_labels)
    model = (LlamaForCausalLM if kind == "lm" else LlamaForSequenceClassification)(conf)
    path = tmp_path / kind
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


SAMPLES = pd.DataFrame({"prompt_id": list("abcdef"), "prompt": ["1+1=", "12+34=", "7+8=", "100+1=", "5+5=", "9+9="],
                        "reference": "", "difficulty": 1, "sample_id": 0,
                        "completion": ["2", "46", "15", "101", "10", "18888"]})


@pytest.mark.parametrize("num_labels", [1, 2])
def test_reward_model_batched_equals_one_at_a_time_and_thresholds(tmp_path, num_labels):
    from flywheel.verifiers.models import RewardModel

    rm = RewardModel(_tiny(tmp_path, "cls", num_labels), batch_size=4)
    texts = (SAMPLES["prompt"] + SAMPLES["completion"]).tolist()
    batched = rm.score(texts)
    single = [rm.score([t])[0] for t in texts]
    assert batched == pytest.approx(single, abs=1e-5) and all(0 < s < 1 for s in batched)
    assert len(set(round(s, 6) for s in batched)) > 1  # the score depends on the text
    rm.threshold = sorted(batched)[3]
    v = rm.verify_batch(SAMPLES)
    assert [x.correct for x in v] == [s >= rm.threshold for s in batched] and sum(x.correct for x in v) == 3
    assert [x.score for x in v] == pytest.approx(batched)


def test_judge_scores_p_yes_batched_like_one_at_a_time(tmp_path):
    from flywheel.verifiers.models import Judge

    path = _tiny(tmp_path, "lm")
    judge = Judge(path, template="{prompt}{completion}?", yes="Y", no="N", batch_size=4)
    texts = (SAMPLES["prompt"] + SAMPLES["completion"] + "?").tolist()
    batched = judge.score(texts)
    assert batched == pytest.approx([judge.score([t])[0] for t in texts], abs=1e-5)
    # the definition, computed directly: P(Y) / (P(Y) + P(N)) for the next token
    enc = judge.tok(texts[1], return_tensors="pt")
    with torch.inference_mode():
        p = torch.softmax(judge.model(**enc).logits[0, -1], -1)
    y, n = judge.tok.convert_tokens_to_ids(["Y", "N"])
    assert batched[1] == pytest.approx((p[y] / (p[y] + p[n])).item(), abs=1e-5)
    v = judge.verify_batch(SAMPLES)
    assert [x.correct for x in v] == [s >= 0.5 for s in batched]


def test_judge_needs_single_token_verdicts(tmp_path):
    from flywheel.verifiers.models import Judge

    with pytest.raises(ValueError, match="'Yes' is 3 tokens"):
        Judge(_tiny(tmp_path, "lm"), yes="Yes", no="N")


def test_model_verifiers_load_by_name_with_params(tmp_path):
    v = load_verifier("reward-model", {"model": _tiny(tmp_path, "cls"), "threshold": 0.0})
    assert all(isinstance(x, Verdict) and x.correct for x in v(SAMPLES))
    with pytest.raises(ValueError, match="not a model folder"):
        load_verifier("judge", {"model": str(tmp_path)})
