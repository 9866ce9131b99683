"""Near-duplicate detection for curate: MinHash signatures and LSH from `datasketch`, candidates confirmed
by the exact Jaccard similarity of the shingle sets.

Texts are shingled into word n-grams (`flywheel.text.shingles`: lower case, whitespace split; a text shorter
than n words is one shingle, so short texts such as arithmetic rows are near-duplicates only when equal).
Two choices make this faster than the plain datasketch recipe (bench/curate.py measures both):
- shingles are hashed all at once with pandas' vectorised, seedless SipHash (`pd.util.hash_array`) instead
  of one SHA-1 call per shingle; datasketch then only applies its permutations (`hashfunc` is the identity);
- LSH candidates are confirmed on the shingle sets, so the LSH can favour recall (more bands) while the
  exact check keeps precision.
Deterministic: the same texts give the same result in every process (no salted `hash()`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from flywheel.text import shingles

_MASK32 = np.uint64(0xFFFFFFFF)


def _identity(x):
    return x


def _hash_sets(sets: Sequence[set[str]]) -> list[list[int]]:
    """32-bit hashes of every shingle, one list per text (one vectorised call for all of them;
    `categorize=False` hashes each string directly, 9x faster than factorizing first)."""
    flat = [s for st in sets for s in st]
    if not flat:
        return [[] for _ in sets]
    hashed = (pd.util.hash_array(np.asarray(flat, dtype=object), categorize=False) & _MASK32).tolist()
    out, start = [], 0
    for st in sets:
        out.append(hashed[start:start + len(st)])
        start += len(st)
    return out


def near_duplicates(texts: Sequence[str], keys: Sequence[str], *, threshold: float, n: int = 5,
                    num_perm: int = 128, kept_texts: Sequence[str] = (), kept_keys: Sequence[str] = (),
                    ) -> tuple[list[str | None], list[float]]:
    """For each text in order: the key of an earlier kept text it near-duplicates (Jaccard of its shingle
    set >= threshold), or None when it is kept. `kept_texts` (e.g. earlier iterations' rows) are kept and
    indexed first. Returns (duplicate_of, similarity) lists aligned with `texts`."""
    from datasketch import MinHash, MinHashLSH

    all_sets = [shingles(t, n) for t in kept_texts] + [shingles(t, n) for t in texts]
    hashes = _hash_sets(all_sets)
    # One MinHash, cleared per text: the LSH index keeps only band hashes, not the MinHash objects, and
    # building a MinHash per text (what `MinHash.bulk` does) costs as much as hashing it.
    sig = MinHash(num_perm=num_perm, seed=1, hashfunc=_identity)

    def signature(j: int):
        sig.clear()
        sig.update_batch(hashes[j])
        return sig

    # Favour recall in the banding (a false negative is a duplicate kept); the exact Jaccard check below
    # removes the extra candidates, so precision does not depend on the banding.
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.1, 0.9))
    set_of: dict[str, set[str]] = {}
    for j, key in enumerate(kept_keys):
        lsh.insert(key, signature(j), check_duplication=False)
        set_of[key] = all_sets[j]
    dup_of: list[str | None] = []
    sims: list[float] = []
    offset = len(kept_texts)
    for i, key in enumerate(keys):
        st, m = all_sets[offset + i], signature(offset + i)
        best, best_sim = None, 0.0
        for cand in lsh.query(m):
            other = set_of[cand]
            union = len(st | other)
            sim = len(st & other) / union if union else 1.0
            if sim > best_sim:
                best, best_sim = cand, sim
        if best is not None and best_sim >= threshold:
            dup_of.append(best)
            sims.append(best_sim)
        else:
            lsh.insert(key, m, check_duplication=False)
            set_of[key] = st
            dup_of.append(None)
            sims.append(best_sim)
    return dup_of, sims
