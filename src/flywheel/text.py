"""Word n-grams, shared by the gates (diversity, contamination), near-duplicate detection (dedupe) and propose.

Words are lower case and split on whitespace; a text shorter than n words is one n-gram (itself), so short
texts such as arithmetic prompts compare as wholes.
"""

from __future__ import annotations

from typing import Iterable


def words(text: str) -> list[str]:
    """Normalised words: lower case, split on whitespace."""
    return str(text).lower().split()


def ngrams(text: str | list[str], n: int) -> list[tuple[str, ...]]:
    """Word n-grams of `text` (or of a list of words)."""
    w = words(text) if isinstance(text, str) else text
    if len(w) <= n:
        return [tuple(w)] if w else []
    return [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]


def shingles(text: str, n: int) -> set[str]:
    """The word n-grams of `ngrams`, as strings (built without the tuples: dedupe's hot loop)."""
    w = words(text)
    if len(w) <= n:
        return {" ".join(w)} if w else set()
    return {" ".join(w[i:i + n]) for i in range(len(w) - n + 1)}


def distinct_ngram_ratio(texts: Iterable[str], n: int) -> float:
    """Distinct n-grams / all n-grams over `texts` (distinct-n, Li et al. 2016); 0 for no text."""
    grams = [g for t in texts for g in ngrams(t, n)]
    return len(set(grams)) / len(grams) if grams else 0.0
