"""Duplicate documents of a source, exact and near, grouped into clusters.

Exact: documents with the same ``normalize.exact_key`` (whitespace collapsed).
Near: MinHash signatures of each document's set of word ``shingle``-grams (``shingle``
consecutive normalised words; a document shorter than that is one shingle), indexed
with locality-sensitive hashing (datasketch's ``MinHashLSH``, bands chosen for
``threshold`` to miss few pairs above it); each candidate pair LSH returns is kept only
if its estimated Jaccard similarity is at least ``threshold``, so what is reported is a
similarity, not an LSH collision. Pairs are joined into clusters by connected components
(as BigCode's dedup does): a chain a~b~c is one cluster even if a and c are less alike.

Which copy stays: a cluster with a held-out member keeps none of its training members
(they would let the model memorise text it is evaluated on); any other cluster keeps
its first training document in the source's order (sorted paths, then lines) and
drops the rest. Held-out documents are never dropped.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from phijax.data.errors import DataError
from phijax.data.quality import normalize

MODES = ("exact", "near")
SHINGLE = 5  # words per shingle: long enough that shared idioms do not make two files alike
NUM_PERM = 128  # MinHash permutations: about +-0.035 standard error on a Jaccard of 0.8
SEED = 1  # the MinHash permutations' seed: fixed, so clusters are the same on every run
# LSH's (false positive, false negative) weights when it picks bands x rows. Every
# candidate is checked against the threshold with its MinHash estimate, so a false
# positive costs one comparison and a false negative a missed duplicate: at threshold 0.8
# datasketch's default (0.5, 0.5) gives 9 x 13, which makes a pair of Jaccard 0.85 a
# candidate only 69% of the time; (0.05, 0.95) gives 16 x 8: 99.4%.
LSH_WEIGHTS = (0.05, 0.95)


@dataclasses.dataclass(frozen=True)
class Settings:
  mode: str = "near"
  threshold: float = 0.8
  shingle: int = SHINGLE
  num_perm: int = NUM_PERM

  def check(self, names: dict | None = None) -> "Settings":
    """Raises a DataError naming the bad value by ``names[field]`` (a config field or
    a flag; default: the field's own name)."""
    names = names or {}
    bad = lambda field, why: DataError(  # noqa: E731
        f"{names.get(field, field)}={getattr(self, field)!r}: {why}")
    if self.mode not in MODES:
      raise bad("mode", f"choose one of {', '.join(MODES)}")
    if not 0.0 < self.threshold <= 1.0:
      raise bad("threshold", "a Jaccard similarity threshold must be in (0, 1]")
    if self.shingle < 1:
      raise bad("shingle", "a shingle is at least 1 word")
    if self.num_perm < 2:
      raise bad("num_perm", "MinHash needs at least 2 permutations")
    return self

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    if self.mode == "exact":  # the near-duplicate knobs do not change exact clusters
      d = {"mode": "exact"}
    return d

  def describe(self) -> str:
    if self.mode == "exact":
      return "exact (whitespace collapsed)"
    return (f"near (Jaccard >= {self.threshold:g} over {self.shingle}-word shingles, "
            f"MinHash {self.num_perm} permutations, LSH) and exact")


def datasketch():
  """``(MinHash, MinHashLSH)``, or a DataError saying how to install them."""
  try:
    from datasketch import MinHash, MinHashLSH
  except ModuleNotFoundError as e:
    if e.name != "datasketch":
      raise
    raise DataError("near-duplicate dedup needs datasketch: pip install 'phijax[quality]' "
                    "(or use exact dedup)") from None
  return MinHash, MinHashLSH


def shingles(words: list[str], k: int) -> set[bytes]:
  """The set of ``k``-word runs of ``words`` (one run of all of them when fewer)."""
  if len(words) <= k:
    return {" ".join(words).encode("utf-8")} if words else set()
  return {" ".join(words[i:i + k]).encode("utf-8") for i in range(len(words) - k + 1)}


class _Components:
  """Union-find over document indices."""

  def __init__(self):
    self.parent = {}

  def find(self, i: int) -> int:
    self.parent.setdefault(i, i)
    while self.parent[i] != i:
      self.parent[i] = self.parent[self.parent[i]]
      i = self.parent[i]
    return i

  def union(self, i: int, j: int) -> None:
    a, b = self.find(i), self.find(j)
    if a != b:
      self.parent[max(a, b)] = min(a, b)

  def groups(self) -> list[list[int]]:
    out = {}
    for i in self.parent:
      out.setdefault(self.find(i), []).append(i)
    return sorted((sorted(g) for g in out.values() if len(g) > 1), key=lambda g: g[0])


def find_duplicates(texts, settings: Settings,
                    progress: Callable[[int, int], None] | None = None):
  """Clusters of duplicates among ``texts`` (a sequence of strings, or of callables
  returning one, read once each in order).

  Returns ``(clusters, pairs, sizes, copy_of)``: clusters as sorted lists of indices
  (two or more each, ordered by first member), ``pairs`` ``{(i, j): estimated
  Jaccard}`` of the duplicate pairs found (``i < j``; exact copies are 1.0 and paired
  with the first text of their kind), ``sizes`` the UTF-8 bytes of every text,
  ``copy_of[i]`` the first text exactly equal to text ``i`` (``i`` itself if none).
  """
  settings.check()
  n = len(texts)
  sizes = np.zeros(n, np.int64)
  copy_of = np.arange(n)
  by_key: dict[str, int] = {}
  comps = _Components()
  pairs: dict[tuple[int, int], float] = {}
  ids = []  # the texts with a MinHash signature, in order

  def shingle_sets():
    """Reads every text once: its size and exact key here, its shingles yielded to
    MinHash (so only signatures are kept, not a corpus of shingle sets)."""
    for i in range(n):
      text = texts[i]() if callable(texts[i]) else texts[i]
      sizes[i] = len(text.encode("utf-8"))
      first = copy_of[i] = by_key.setdefault(normalize.exact_key(text), i)
      if first != i:
        comps.union(first, i)
        pairs[(first, i)] = 1.0
      elif settings.mode == "near":
        s = shingles(normalize.words(text), settings.shingle)
        if s:  # a text without words (punctuation only) is matched exactly or not at all
          ids.append(i)
          yield s
      if progress is not None:
        progress(i + 1, n)

  if settings.mode == "exact":
    for _ in shingle_sets():
      pass
    return comps.groups(), pairs, sizes, copy_of
  MinHash, MinHashLSH = datasketch()
  signatures = MinHash.bulk(shingle_sets(), num_perm=settings.num_perm, seed=SEED)
  lsh = MinHashLSH(threshold=settings.threshold, num_perm=settings.num_perm,
                   weights=LSH_WEIGHTS)
  for k, sig in enumerate(signatures):
    lsh.insert(k, sig)
  for k, sig in enumerate(signatures):
    for other in lsh.query(sig):
      if other <= k:
        continue
      sim = float(sig.jaccard(signatures[other]))
      if sim >= settings.threshold:
        i, j = ids[k], ids[other]
        comps.union(i, j)
        pairs[(i, j)] = max(pairs.get((i, j), 0.0), sim)
  return comps.groups(), pairs, sizes, copy_of


def report(src, settings: Settings, progress: Callable[[int, int], None] | None = None
           ) -> dict:
  """The dedup report of source ``src`` (a ``phijax.data.kinds.Source``): every
  cluster with its members, the one kept and the ones dropped (see the module
  docstring), and totals. A plain dict: what the cache stores and ``--out`` writes."""
  texts = [(lambda i=i: src.text(i)) for i in range(src.num_documents)]
  clusters, pairs, sizes, copy_of = find_duplicates(texts, settings, progress)
  heldout = np.asarray(src.heldout, bool)
  cluster_of = {i: c for c, members in enumerate(clusters) for i in members}
  sims_of = [[] for _ in clusters]
  for (i, _), sim in pairs.items():
    sims_of[cluster_of[i]].append(sim)
  out_clusters, dropped = [], []
  for members, sims in zip(clusters, sims_of):
    train = [i for i in members if not heldout[i]]
    has_heldout = len(train) < len(members)
    kept = None if has_heldout or not train else train[0]
    drop = [i for i in train if i != kept]
    dropped.extend(drop)
    exact = len({int(copy_of[i]) for i in members}) == 1
    out_clusters.append(dict(
        kind="exact" if exact else "near",
        # the least similar pair joined directly (a chain's ends can be less alike)
        min_similarity=round(min(sims), 4),
        kept=kept, dropped=drop, heldout_member=has_heldout,
        members=[dict(index=i, key=src.key(i), bytes=int(sizes[i]), heldout=bool(heldout[i]))
                 for i in members]))
  train_bytes = int(sizes[~heldout].sum())
  removed = int(sizes[dropped].sum()) if dropped else 0
  return dict(
      tool="dedup", source=src.name, kind=src.kind, settings=settings.to_dict(),
      normalisation=normalize.EXACT_RULE if settings.mode == "exact" else
      f"{normalize.EXACT_RULE} Near: {normalize.WORDS_RULE}",
      documents=int(src.num_documents), heldout_documents=int(heldout.sum()),
      bytes=int(sizes.sum()), train_bytes=train_bytes,
      clusters=out_clusters,
      exact_clusters=sum(c["kind"] == "exact" for c in out_clusters),
      near_clusters=sum(c["kind"] == "near" for c in out_clusters),
      documents_in_clusters=sum(len(c["members"]) for c in out_clusters),
      dropped=sorted(dropped), dropped_bytes=removed,
      dropped_for_heldout=sum(len(c["dropped"]) for c in out_clusters if c["heldout_member"]))


def summary(rep: dict, show: int = 10) -> str:
  """The report as lines a person reads: totals, then the first ``show`` clusters."""
  s = rep["settings"]
  how = Settings(**s).describe()
  train_docs = rep["documents"] - rep["heldout_documents"]
  lines = [
      f"dedup of source {rep['source']!r} ({rep['kind']}), {how}:",
      f"  {rep['documents']:,} documents ({train_docs:,} train, {rep['heldout_documents']:,} "
      f"held out), {rep['bytes']:,} bytes",
      f"  {len(rep['clusters']):,} clusters ({rep['exact_clusters']:,} exact, "
      f"{rep['near_clusters']:,} near) holding {rep['documents_in_clusters']:,} documents",
      f"  dropped: {len(rep['dropped']):,} training documents, {rep['dropped_bytes']:,} bytes "
      f"({_percent(rep['dropped_bytes'], rep['train_bytes'])} of the train bytes); "
      f"{rep['dropped_for_heldout']:,} of them copies of held-out documents"]
  for n, c in enumerate(rep["clusters"][:show], 1):
    sim = "" if c["kind"] == "exact" else f", similarity >= {c['min_similarity']:.2f}"
    names = ", ".join(
        f"{m['key']}{' (held out)' if m['heldout'] else ''}"
        f"{' [kept]' if m['index'] == c['kept'] else ''} {m['bytes']:,} B"
        for m in c["members"][:6])
    more = f" and {len(c['members']) - 6} more" if len(c["members"]) > 6 else ""
    lines.append(f"  {n}. {c['kind']}{sim}: {names}{more}")
  if len(rep["clusters"]) > show:
    lines.append(f"  ... {len(rep['clusters']) - show} more clusters in the JSON report")
  return "\n".join(lines)


def _percent(part: int, whole: int) -> str:
  return f"{100.0 * part / whole:.2f}%" if whole else "0%"
