"""Duplicates of a growing set of texts, found one text at a time: the incremental form
of ``phijax.data.quality.dedup``, with its normalisation, word shingles, MinHash
permutations and LSH bands, for a tool that keeps a text only when nothing before it
repeats it (``phijax.curate.synth``).

    index = DuplicateIndex(dedup.Settings(mode="near", threshold=0.8))
    index.add(corpus_text, "corpus:a.py")
    match, sig = index.match(text)      # ("corpus:a.py", 0.91, False) or None
    if match is None:
      index.add(text, "document:7", sig)

A match is an exact copy (the same ``normalize.exact_key``: whitespace runs collapsed)
or, for ``near``, a text LSH proposes whose estimated Jaccard similarity is at least the
threshold (a similarity, not an LSH collision, as in ``dedup.find_duplicates``).
"""

from __future__ import annotations

from phijax.data.quality import dedup, normalize


class DuplicateIndex:
  """The texts seen so far (corpus documents, kept documents), exactly by
  ``normalize.exact_key`` and, for ``near``, by MinHash-LSH: which one a text repeats."""

  def __init__(self, settings: dedup.Settings):
    self.s = settings
    self.exact: dict[str, str] = {}
    self.labels: list[str] = []  # LSH key -> label
    self.signatures = []
    if settings.mode == "near":
      self.MinHash, MinHashLSH = dedup.datasketch()
      self.lsh = MinHashLSH(threshold=settings.threshold, num_perm=settings.num_perm,
                            weights=dedup.LSH_WEIGHTS)

  def _signature(self, text: str):
    if self.s.mode != "near":
      return None
    shingles = dedup.shingles(normalize.words(text), self.s.shingle)
    if not shingles:
      return None  # no words: matched exactly or not at all (as dedup does)
    m = self.MinHash(num_perm=self.s.num_perm, seed=dedup.SEED)
    m.update_batch(list(shingles))
    return m

  def match(self, text: str):
    """``(label, similarity, exact)`` of the text ``text`` repeats (the most similar;
    1.0 for an exact copy), or None; the MinHash is returned for ``add``."""
    key = normalize.exact_key(text)
    if key in self.exact:
      return (self.exact[key], 1.0, True), None
    sig = self._signature(text)
    best = None
    if sig is not None:
      for k in sorted(self.lsh.query(sig)):
        sim = float(sig.jaccard(self.signatures[k]))
        if sim >= self.s.threshold and (best is None or sim > best[1]):
          best = (self.labels[k], sim, False)
    return best, sig

  def add(self, text: str, label: str, sig=None) -> None:
    self.exact.setdefault(normalize.exact_key(text), label)
    sig = sig if sig is not None else self._signature(text)
    if sig is not None:
      self.lsh.insert(len(self.labels), sig)
      self.labels.append(label)
      self.signatures.append(sig)
