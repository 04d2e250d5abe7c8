"""Quality scores of a source's documents, and the filter that keeps the best of them.

A scores file (JSON, written by ``python -m phijax.curate score``) holds one score per
document of one source, keyed by document key, with what produced them::

    {"version": 1, "tool": "quality_scores", "source": {identity}, "keys": [...],
     "scores": [...], "model": ..., "annotator": ..., "classifier": ..., "report": {...}}

``config.data.sources.NAME.quality_scores=PATH`` with ``quality_keep=F`` keeps the
training documents in the top fraction F by score (ties: the earlier key first; with
``quality_keep_by="bytes"`` the best documents until they hold F of the training bytes,
so that two filters keep subsets of the same size, whatever the lengths they favour), or
with ``quality_min=S`` those scoring at least S. ``quality_scores="random:SEED"`` scores each
document by a hash of (SEED, key) instead: the random subset of the same size that a
quality filter's result must beat. Held-out documents are never dropped (the held-out
split keeps its meaning), so only training documents are ranked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os

import numpy as np

from phijax.data.errors import DataError

log = logging.getLogger(__name__)

VERSION = 1
TOOL = "quality_scores"
RANDOM = "random"
FIELDS = ("quality_scores", "quality_keep", "quality_min", "quality_keep_by")
KEEP_BY = ("documents", "bytes")


def check(name: str, scfg) -> dict | None:
  """The quality filter source ``name`` asks for, as settings that identify it (the
  scores file's sha256, so a new file is a new corpus), or None when off. A bad
  setting is a DataError naming the field."""
  field = f"config.data.sources.{name}"
  spec = scfg.get("quality_scores", "")
  keep = float(scfg.get("quality_keep", 0.0))
  minimum = float(scfg.get("quality_min", 0.0))
  if not spec:
    if keep or minimum:
      which = "quality_keep" if keep else "quality_min"
      raise DataError(f"{field}.{which} needs {field}.quality_scores: a scores file "
                      "(python -m phijax.curate score) or random:SEED")
    return None
  if keep and minimum:
    raise DataError(f"{field}: set quality_keep (a top fraction) or quality_min (a "
                    "threshold), not both")
  if not keep and not minimum:
    raise DataError(f"{field}.quality_scores is set but neither quality_keep (e.g. 0.5: "
                    "the top half) nor quality_min (a score threshold) is")
  if not 0.0 < keep <= 1.0 and keep:
    raise DataError(f"{field}.quality_keep must be in (0, 1], got {keep}")
  keep_by = scfg.get("quality_keep_by", "documents")
  if keep_by not in KEEP_BY:
    raise DataError(f"{field}.quality_keep_by must be one of {KEEP_BY}, got {keep_by!r}")
  out = dict(keep=keep, min=minimum, keep_by=keep_by)
  if spec.startswith(RANDOM + ":"):
    seed = spec.split(":", 1)[1]
    if not seed.lstrip("-").isdigit():
      raise DataError(f"{field}.quality_scores={spec!r}: random:SEED takes an integer seed")
    return dict(out, scores=f"{RANDOM}:{int(seed)}")
  path = os.path.abspath(os.path.expanduser(spec))
  if not os.path.isfile(path):
    raise DataError(f"{field}.quality_scores: no scores file {path}; write one with "
                    "python -m phijax.curate score --out=PATH, or use random:SEED")
  with open(path, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()[:16]
  return dict(out, scores=path, sha256=digest)


def random_scores(keys, seed: int) -> np.ndarray:
  """Uniform [0, 1) scores from sha256(seed, key): the same subset on any machine, in
  any order of reading, for a given seed."""
  out = np.empty(len(keys))
  for i, k in enumerate(keys):
    h = hashlib.sha256(f"{seed}\0{k}".encode()).digest()
    out[i] = int.from_bytes(h[:8], "big") / 2**64
  return out


def read(path: str, where: str = "") -> dict:
  """A scores file, checked: a DataError naming the file for anything malformed."""
  label = f"{where}: " if where else ""
  try:
    with open(path, encoding="utf-8") as f:
      doc = json.load(f)
  except (OSError, ValueError) as e:
    raise DataError(f"{label}cannot read the scores file {path}: {e}") from None
  if not isinstance(doc, dict) or doc.get("tool") != TOOL:
    raise DataError(f"{label}{path} is not a quality scores file (write one with "
                    "python -m phijax.curate score --out=PATH)")
  keys, scores = doc.get("keys"), doc.get("scores")
  if (not isinstance(keys, list) or not isinstance(scores, list)
      or len(keys) != len(scores)):
    raise DataError(f"{label}{path}: 'keys' and 'scores' must be lists of equal length")
  if any(not isinstance(s, (int, float)) or not math.isfinite(s) for s in scores):
    raise DataError(f"{label}{path}: every score must be a finite number")
  return doc


def write(path: str, doc: dict) -> None:
  """Writes ``doc`` (``keys``, ``scores`` and what made them) atomically."""
  doc = dict(doc, version=VERSION, tool=TOOL)
  tmp = f"{path}.tmp{os.getpid()}"
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(doc, f, indent=1)
  os.replace(tmp, path)


def of_source(src, settings: dict) -> np.ndarray:
  """One score per document of ``src`` (in its order), from the settings ``check``
  returned."""
  keys = [src.key(i) for i in range(src.num_documents)]
  spec = settings["scores"]
  if spec.startswith(RANDOM + ":"):
    return random_scores(keys, int(spec.split(":", 1)[1]))
  where = f"config.data.sources.{src.name}.quality_scores"
  doc = read(spec, where)
  by_key = dict(zip(doc["keys"], doc["scores"]))
  train = ~np.asarray(src.heldout, bool)
  missing = [k for k, t in zip(keys, train) if t and k not in by_key]
  if missing:
    raise DataError(f"{where}: {spec} has no score for {len(missing)} of the source's "
                    f"training documents (first: {missing[0]!r}); it was computed for "
                    "another corpus: rerun python -m phijax.curate score on this source")
  return np.asarray([by_key.get(k, np.nan) for k in keys], float)


def dropped(scores: np.ndarray, train: np.ndarray, keep: float = 0.0,
            minimum: float = 0.0, sizes: np.ndarray | None = None) -> np.ndarray:
  """The training documents the filter drops: all but the top ``keep`` fraction of
  ``train`` by score (round half up, at least one; ties to the lower index), or, with
  ``sizes``, all but the best documents whose sizes sum to the fraction of the total
  nearest to ``keep``; or those below ``minimum``."""
  train = np.asarray(train, bool)
  out = np.zeros(len(scores), bool)
  idx = np.flatnonzero(train)
  if keep:
    order = idx[np.lexsort((idx, -scores[idx]))]  # best first; equal scores by index
    if sizes is None:
      n_keep = max(1, int(math.floor(keep * len(idx) + 0.5)))
    else:
      total = np.cumsum(np.asarray(sizes, float)[order])
      target = keep * total[-1]
      n_keep = int(np.searchsorted(total, target))  # the first prefix reaching it
      if n_keep < len(total) and (n_keep == 0 or total[n_keep] - target
                                  <= target - total[n_keep - 1]):
        n_keep += 1  # ... or the one before it, whichever is nearer
    out[order[n_keep:]] = True
  else:
    out[idx[scores[idx] < minimum]] = True
  return out
