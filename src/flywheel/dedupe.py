"""Near-duplicate detection for curate: MinHash signatures and LSH from `datasketch`, candidates confirmed
by the exact Jaccard similarity of the shingle sets.

Texts are shingled into word n-grams (`flywheel.gates.ngrams`: lower case, whitespace split; a text shorter
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

from flywheel.gates import ngrams

_MASK32 = np.uint64(0xFFFFFFFF)


def _identity(x):
    return x


def shingles(text: str, n: int) -> set[str]:
    return {" ".join(g) for g in ngrams(text, n)}


def _hash_sets(sets: Sequence[set[str]]) -> list[np.ndarray]:
    """32-bit hashes of every shingle, one array per text (one vectorised call for all of them)."""
    flat = [s for st in sets for s in st]
    if not flat:
        return [np.empty(0, dtype=np.uint64) for _ in sets]
    hashed = pd.util.hash_array(np.asarray(flat, dtype=object)) & _MASK32
    bounds = np.cumsum([len(st) for st in sets])[:-1]
    return np.split(hashed, bounds)


def near_duplicates(texts: Sequence[str], keys: Sequence[str], *, threshold: float, n: int = 5,
                    num_perm: int = 128, kept_texts: Sequence[str] = (), kept_keys: Sequence[str] = (),
                    ) -> tuple[list[str | None], list[float]]:
    """For each text in order: the key of an earlier kept text it near-duplicates (Jaccard of its shingle
    set >= threshold), or None when it is kept. `kept_texts` (e.g. earlier iterations' rows) are kept and
    indexed first. Returns (duplicate_of, similarity) lists aligned with `texts`."""
    from datasketch import MinHash, MinHashLSH

    all_sets = [shingles(t, n) for t in kept_texts] + [shingles(t, n) for t in texts]
    hashes = _hash_sets(all_sets)
    sigs = MinHash.bulk(hashes, num_perm=num_perm, seed=1, hashfunc=_identity)
    # Favour recall in the banding (false negatives are lost duplicates); the exact check below removes
    # the extra false positives.
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.2, 0.8))
    set_of: dict[str, set[str]] = {}
    with lsh.insertion_session() as session:
        for key, st, sig in zip(kept_keys, all_sets, sigs):
            session.insert(key, sig, check_duplication=False)
            set_of[key] = st
    dup_of: list[str | None] = []
    sims: list[float] = []
    offset = len(kept_texts)
    for i, key in enumerate(keys):
        st, sig = all_sets[offset + i], sigs[offset + i]
        best, best_sim = None, 0.0
        for cand in lsh.query(sig):
            other = set_of[cand]
            union = len(st | other)
            sim = len(st & other) / union if union else 1.0
            if sim > best_sim:
                best, best_sim = cand, sim
        if best is not None and best_sim >= threshold:
            dup_of.append(best)
            sims.append(best_sim)
        else:
            lsh.insert(key, sig, check_duplication=False)
            set_of[key] = st
            dup_of.append(None)
            sims.append(best_sim)
    return dup_of, sims
