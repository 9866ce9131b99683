"""Near-duplicate removal: the curate step vs a plain datasketch MinHash + LSH pipeline, same rows, one run.

    .venv/bin/python bench/curate.py [--docs 20000] [--words 60]

A synthetic corpus of random 60-word texts; 10 % of them get a planted copy at known similarity: an exact
copy, one word changed (word 5-gram shingle Jaccard ~0.84, a duplicate at threshold 0.8), or 2-3 words
changed (~0.71 / ~0.59, near misses that must be kept). Truth is the exact Jaccard of the shingle sets.
Prints rows/s and recall/precision for
  - baseline: SHA-1 per shingle, `MinHash.bulk`, `MinHashLSH(threshold)` query-then-insert (the datasketch
    README recipe, performance-anchors.md section 3);
  - flywheel.dedupe.near_duplicates (what curate calls), and the whole curate step (exact dedupe, near
    dedupe, Parquet in and out; gates off, bench/gates.py measures those).
Goal: >= the baseline's rows/s at recall >= 0.9 and precision >= 0.95.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from flywheel.config import CurateConfig  # noqa: E402
from flywheel.dedupe import near_duplicates, shingles  # noqa: E402

THRESHOLD, NGRAM, PERM = 0.8, 5, 128   # the baseline's permutations (datasketch's default)
OURS = CurateConfig()  # the curate step's defaults: near_dup_num_perm etc.
PROMPT = "Write a paragraph:"


def corpus(n_docs: int, n_words: int, seed: int = 0):
    """Texts, and for each planted copy (index of copy, index of original, words changed)."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(20000)])
    docs = [list(rng.choice(vocab, n_words)) for _ in range(n_docs)]
    planted = []
    for orig in rng.choice(n_docs, n_docs // 10, replace=False):
        changes = int(rng.choice([0, 1, 1, 2, 3]))  # 40 % duplicates at ~0.84, 20 % exact, 40 % near misses
        copy = list(docs[orig])
        for pos in rng.choice(np.arange(6, n_words - 6, 8), changes, replace=False):  # >= 5 words apart
            copy[pos] = f"x{rng.integers(1 << 30)}"
        planted.append((len(docs), int(orig), changes))
        docs.append(copy)
    order = rng.permutation(len(docs))  # copies anywhere, before or after their original
    texts = [" ".join(docs[i]) for i in order]
    where = {int(old): new for new, old in enumerate(order)}
    return texts, [(where[c], where[o], k) for c, o, k in planted]


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(f"{PROMPT}\n{a}", NGRAM), shingles(f"{PROMPT}\n{b}", NGRAM)
    return len(sa & sb) / len(sa | sb)


def baseline(texts: list[str]) -> dict[int, int]:
    """The plain datasketch pipeline: {row: the earlier row it duplicates}."""
    from datasketch import MinHash, MinHashLSH

    sets = [[s.encode() for s in shingles(f"{PROMPT}\n{t}", NGRAM)] for t in texts]
    sigs = MinHash.bulk(sets, num_perm=PERM)
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=PERM)
    dup = {}
    for i, sig in enumerate(sigs):
        found = lsh.query(sig)
        if found:
            dup[i] = found[0]
        else:
            lsh.insert(i, sig)
    return dup


def ours(texts: list[str], num_perm: int = OURS.near_dup_num_perm) -> dict[int, int]:
    keys = [str(i) for i in range(len(texts))]
    dup_of, _ = near_duplicates([f"{PROMPT}\n{t}" for t in texts], keys, threshold=THRESHOLD, n=NGRAM, num_perm=num_perm)
    return {i: int(d) for i, d in enumerate(dup_of) if d is not None}


def curate_step(texts: list[str]) -> dict[int, int]:
    """The real curate step on verdicts made of the corpus (every sample correct, one prompt)."""
    from flywheel.config import parse_config
    from flywheel.io import read_table, write_table
    from flywheel.steps.curate import curate_samples

    cfg = parse_config({"curate": {"max_per_prompt": 10 ** 9, "seed_fraction": 0.0, "near_dup_threshold": THRESHOLD,
                                   "near_dup_ngram": NGRAM}, "gates": {"enabled": False}})
    v = pd.DataFrame({"prompt_id": "p", "prompt": PROMPT, "reference": "", "difficulty": 1,
                      "sample_id": range(len(texts)), "completion": texts, "prompt_tokens": 3,
                      "completion_tokens": 60, "finished": True, "model": "m", "correct": True, "score": 1.0,
                      "reason": "ok"})
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        write_table(v, d / "v.parquet")
        write_table(v.head(1)[["prompt_id", "prompt", "completion", "difficulty"]], d / "seed.parquet")
        curate_samples(d / "v.parquet", d / "seed.parquet", d / "c.parquet", d / "d.parquet", cfg, 1)
        dropped = read_table(d / "d.parquet")
    return {int(r.sample_id): int(r.duplicate_of.split("/")[1]) for r in dropped.itertuples()}


def score(found: dict[int, int], texts, planted) -> tuple[float, float]:
    """Recall over planted pairs at J >= threshold; precision over every flagged row (its true J with the
    row it was matched to)."""
    positives = [(c, o) for c, o, _ in planted if jaccard(texts[c], texts[o]) >= THRESHOLD]
    # a pair is found when the later of the two was flagged (the earlier one is kept)
    tp = sum(max(c, o) in found for c, o in positives)
    correct = sum(jaccard(texts[i], texts[j]) >= THRESHOLD for i, j in found.items())
    return tp / max(len(positives), 1), correct / max(len(found), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--words", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    texts, planted = corpus(args.docs, args.words)
    sims = {k: np.mean([jaccard(texts[c], texts[o]) for c, o, kk in planted if kk == k]) for k in range(4)}
    print(f"{len(texts)} rows ({len(planted)} planted copies; mean Jaccard by words changed: "
          + ", ".join(f"{k}: {v:.2f}" for k, v in sims.items()) + f"); threshold {THRESHOLD}, {NGRAM}-word "
          f"shingles, {PERM} permutations")
    ours(texts[:200])  # warm imports for both
    # Best of --repeats runs each, interleaved: the dev box is shared and single runs vary by 30 %.
    methods = [("baseline: datasketch SHA-1 + bulk + LSH", baseline),
               (f"flywheel.dedupe ({OURS.near_dup_num_perm} perm, exact check)", ours),
               ("curate step (exact + near, Parquet in/out)", curate_step)]
    best: dict[str, tuple[float, dict]] = {}
    for _ in range(args.repeats):
        for name, fn in methods:
            t0 = time.perf_counter()
            found = fn(texts)
            seconds = time.perf_counter() - t0
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, found)
    rows = [(name, *best[name]) for name, _ in methods]
    base_rate = len(texts) / rows[0][1]
    print(f"\n{'method (best of ' + str(args.repeats) + ')':<46}{'rows/s':>10}{'x base':>8}{'recall':>8}{'precision':>11}{'flagged':>9}")
    for name, seconds, found in rows:
        recall, precision = score(found, texts, planted)
        rate = len(texts) / seconds
        print(f"{name:<46}{rate:>10,.0f}{rate / base_rate:>8.2f}{recall:>8.3f}{precision:>11.3f}{len(found):>9}")
    print("\ngoal: curate >= 1.00x baseline rows/s at recall >= 0.9 and precision >= 0.95 (performance-anchors.md 3)")


if __name__ == "__main__":
    main()
