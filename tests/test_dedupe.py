"""Near-duplicate removal in curate (datasketch MinHash + LSH, confirmed on the shingle sets)."""

from __future__ import annotations

import pandas as pd

from flywheel.dedupe import near_duplicates, shingles
from flywheel.io import read_table, write_table
from flywheel.steps.curate import curate_samples

from conftest import tiny_config

TEXT = ("the model adds the digits column by column from the right and carries a one to the next column "
        "whenever a column sums to ten or more then writes the digits of the sum in reverse order")


def _verdict(pid, sid, completion, prompt=None):
    return {"prompt_id": pid, "prompt": prompt or f"{pid}=", "reference": "", "difficulty": 1, "sample_id": sid,
            "completion": completion, "prompt_tokens": 4, "completion_tokens": 40, "finished": True, "model": "m",
            "correct": True, "score": 1.0, "reason": "correct"}


def test_near_duplicates_are_found_at_the_threshold_and_short_texts_compare_whole():
    one_word = TEXT.replace("carries", "carry")          # 5 of ~35 shingles change: Jaccard ~0.75
    texts = [TEXT, one_word, TEXT.replace("the", "a")]   # the last changes every few words: far below
    sim = len(shingles(TEXT, 5) & shingles(one_word, 5)) / len(shingles(TEXT, 5) | shingles(one_word, 5))
    dup, sims = near_duplicates(texts, ["a", "b", "c"], threshold=0.7, n=5)
    assert dup == [None, "a", None] and abs(sims[1] - sim) < 1e-9 and 0.7 <= sim < 0.8
    dup, _ = near_duplicates(texts, ["a", "b", "c"], threshold=0.8, n=5)
    assert dup == [None, None, None]
    # arithmetic rows are shorter than a shingle: only equal texts (after case/space folding) match
    dup, _ = near_duplicates(["12+34=\n46", "12+35=\n47", "12+34= \n46"], ["x", "y", "z"], threshold=0.5, n=5)
    assert dup == [None, None, "x"]
    # earlier iterations' rows are kept and matched against
    dup, _ = near_duplicates([one_word], ["new"], threshold=0.7, kept_texts=[TEXT], kept_keys=["old"])
    assert dup == ["old"]


def test_curate_drops_near_duplicates_with_the_id_of_the_kept_twin(tmp_path, prepared):
    cfg = tiny_config(curate={"near_dup_threshold": 0.7, "max_per_prompt": 5, "seed_fraction": 0.0})
    rows = [_verdict("a", 0, TEXT, prompt="explain="), _verdict("a", 1, TEXT.replace("carries", "carry"), prompt="explain="),
            _verdict("b", 0, "46", prompt="12+34="), _verdict("c", 0, "47", prompt="12+35=")]
    write_table(pd.DataFrame(rows), tmp_path / "v1.parquet")
    m = curate_samples(tmp_path / "v1.parquet", prepared["seed"], tmp_path / "c1.parquet", tmp_path / "d1.parquet",
                       cfg, 1)
    dropped = read_table(tmp_path / "d1.parquet")
    assert dropped[["prompt_id", "sample_id", "duplicate_of"]].values.tolist() == [["a", 1, "a/0"]]
    assert dropped["drop_reason"].item().startswith("near duplicate (Jaccard 0.7")
    assert m["kept_new"] == 3 and m["dropped_by_reason"] == {dropped["drop_reason"].item(): 1}
    # the next iteration: a near-copy of a carried row is dropped, naming the carried row
    write_table(pd.DataFrame([_verdict("d", 0, TEXT.replace("ten", "10"), prompt="explain=")]), tmp_path / "v2.parquet")
    curate_samples(tmp_path / "v2.parquet", prepared["seed"], tmp_path / "c2.parquet", tmp_path / "d2.parquet", cfg, 2,
                   previous_path=tmp_path / "c1.parquet")
    assert read_table(tmp_path / "d2.parquet")["duplicate_of"].tolist() == ["a@iteration 1"]
