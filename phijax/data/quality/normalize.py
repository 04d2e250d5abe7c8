"""What counts as the same text: the normalisations dedup and contamination compare.

- Exact duplicates: the text with every run of whitespace (spaces, tabs, newlines,
  CRLF) collapsed to one space and the ends stripped, then sha256. Case and punctuation
  are kept. Two files that differ only in trailing spaces, line endings, blank lines or
  re-indentation are the same document for training (the tokens a model learns from are
  nearly the same), though not for Python.
- Words: maximal runs of Unicode word characters (``\\w+``: letters, digits, ``_``),
  lowercased; punctuation and whitespace dropped. Code becomes its identifiers,
  keywords and literals (``return sorted(set(l))`` -> ``return sorted set l``), so a
  copy re-spaced or re-quoted still matches, as GPT-3's contamination check lowercased
  and dropped punctuation. Near-duplicate shingles and contamination n-grams are runs
  of these words.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

WORD = re.compile(r"\w+")
# The rules as the reports state them.
EXACT_RULE = ("exact: sha256 of the text with every whitespace run collapsed to one space "
              "and the ends stripped; case and punctuation kept.")
WORDS_RULE = ("words: runs of Unicode word characters (\\w+), lowercased; punctuation and "
              "whitespace dropped.")


def exact_key(text: str) -> str:
  """The hash exact duplicates share (see the module docstring)."""
  return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


def words(text: str) -> list[str]:
  """The normalised words of ``text``, in order."""
  return [w.lower() for w in WORD.findall(text)]


def word_spans(text: str) -> tuple[list[str], np.ndarray, np.ndarray]:
  """``(words, starts, ends)``: the words and each one's character range in ``text``,
  so a run of matching words maps back to the text it came from."""
  found = list(WORD.finditer(text))
  starts = np.fromiter((m.start() for m in found), np.int64, count=len(found))
  ends = np.fromiter((m.end() for m in found), np.int64, count=len(found))
  return [m.group().lower() for m in found], starts, ends
