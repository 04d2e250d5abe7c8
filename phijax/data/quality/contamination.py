"""Training documents that share an n-gram with an evaluation set (GPT-3's check).

Both sides are cut into normalised words (``normalize.words``: lowercased runs of word
characters, punctuation and whitespace dropped); a training document and an
evaluation item overlap when they share a run of ``n`` words (13 by default, as GPT-3,
Brown et al. 2020, appendix C). An item shorter than ``n`` words cannot match and is
counted as such (``short_items``): compared whole, a three-word held-out document would
"contaminate" every file that uses those words in a row. Every contaminated (document,
item) pair is reported with the spans of the document the shared n-grams cover
(overlapping and adjacent n-grams merged), as character offsets and the text itself.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from phijax.data.errors import DataError
from phijax.data.quality import normalize

DEFAULT_N = 13


@dataclasses.dataclass(frozen=True)
class EvalItem:
  """One thing a model is evaluated on: a problem (prompt and reference solution) or a
  held-out document."""
  set: str  # which evaluation set: "humaneval", a file's name, "heldout:SOURCE"
  id: str  # the item's id in it: a task_id, a document key
  text: str


def check_n(n: int, name: str = "n") -> int:
  """``n`` if it is a valid n-gram length, else a DataError naming it by ``name``."""
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise DataError(f"{name}={n!r}: the n-gram length must be an integer >= 1")
  return n


class NgramIndex:
  """``{n-gram: items holding it}`` over the evaluation items (``short``: how many
  have fewer than ``n`` words, and so no n-gram)."""

  def __init__(self, items: Sequence[EvalItem], n: int):
    self.n = check_n(n)
    self.items = list(items)
    self.grams: dict[tuple[str, ...], list[int]] = {}
    self.short = 0
    for k, item in enumerate(self.items):
      words = normalize.words(item.text)
      self.short += len(words) < n
      for g in {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}:
        self.grams.setdefault(g, []).append(k)

  def matches(self, text: str) -> dict[int, list[tuple[int, int]]]:
    """``{item: [(first word, end word), ...]}``: the runs of ``text``'s words that are
    n-grams of each item, merged where they overlap or touch; with the words'
    character offsets (``word_spans``) they are the shared spans."""
    words, n = normalize.words(text), self.n
    hits: dict[int, list[tuple[int, int]]] = {}
    for i in range(len(words) - n + 1):
      found = self.grams.get(tuple(words[i:i + n]))
      if found:
        for k in found:
          hits.setdefault(k, []).append((i, i + n))
    return {k: _merge(runs) for k, runs in hits.items()}


def _merge(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
  out = []
  for a, b in sorted(runs):
    if out and a <= out[-1][1]:
      out[-1] = (out[-1][0], max(out[-1][1], b))
    else:
      out.append((a, b))
  return out


def report(src, items: Sequence[EvalItem], n: int = DEFAULT_N, *,
           against: Sequence[str] = (),
           progress: Callable[[int, int], None] | None = None) -> dict:
  """The contamination report of ``src``'s training documents against ``items``: every
  (document, item) pair sharing an ``n``-gram, with its spans, and totals. Held-out
  documents are not scanned (they are evaluated on, not trained on)."""
  index = NgramIndex(items, n)
  train = [int(i) for i in np.flatnonzero(~np.asarray(src.heldout, bool))]
  pairs, train_bytes, contaminated_bytes = [], 0, 0
  for done, i in enumerate(train, 1):
    text = src.text(i)
    size = len(text.encode("utf-8"))
    train_bytes += size
    found = index.matches(text) if index.grams else {}
    if found:
      contaminated_bytes += size
      _, starts, ends = normalize.word_spans(text)
      for k in sorted(found):
        spans = [dict(start=int(starts[a]), end=int(ends[b - 1]), words=b - a,
                      text=text[starts[a]:ends[b - 1]]) for a, b in found[k]]
        item = index.items[k]
        pairs.append(dict(document=i, key=src.key(i), bytes=size, eval_set=item.set,
                          item=item.id, shared_words=sum(s["words"] for s in spans),
                          spans=spans))
    if progress is not None:
      progress(done, len(train))
  docs = sorted({p["document"] for p in pairs})
  return dict(
      tool="contamination", source=src.name, kind=src.kind, n=n, against=list(against),
      normalisation=normalize.WORDS_RULE,
      eval_items=len(index.items), eval_sets=sorted({it.set for it in index.items}),
      short_items=index.short,
      train_documents=len(train), train_bytes=train_bytes,
      pairs=pairs, contaminated_documents=len(docs),
      contaminated_items=len({(p["eval_set"], p["item"]) for p in pairs}),
      dropped=docs, dropped_bytes=contaminated_bytes)


def summary(rep: dict, show: int = 10, width: int = 160) -> str:
  """The report as lines a person reads: totals, then the first ``show`` pairs with
  their longest shared span (cut to ``width`` characters)."""
  lines = [
      f"contamination of source {rep['source']!r} ({rep['kind']}) against "
      f"{', '.join(rep['against']) or 'nothing'} ({rep['eval_items']:,} items), "
      f"{rep['n']}-grams of lowercased words"
      + (f" ({rep['short_items']:,} items shorter than that not compared)"
         if rep["short_items"] else "") + ":",
      f"  {rep['train_documents']:,} training documents ({rep['train_bytes']:,} bytes) scanned",
      f"  {len(rep['pairs']):,} contaminated (document, item) pairs: "
      f"{rep['contaminated_documents']:,} documents ({rep['dropped_bytes']:,} bytes), "
      f"{rep['contaminated_items']:,} items"]
  for p in rep["pairs"][:show]:
    span = max(p["spans"], key=lambda s: s["words"])
    text = " ".join(span["text"].split())
    text = text if len(text) <= width else text[:width - 3] + "..."
    lines.append(f"  {p['key']} ~ {p['eval_set']}/{p['item']}: {p['shared_words']} shared "
                 f"words in {len(p['spans'])} span(s); longest {span['words']} words at "
                 f"chars {span['start']}-{span['end']}: {text!r}")
  if len(rep["pairs"]) > show:
    lines.append(f"  ... {len(rep['pairs']) - show} more pairs in the JSON report")
  return "\n".join(lines)
