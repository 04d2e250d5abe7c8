"""The quality filters a source's config turns on, and the cache of their reports.

``config.data.sources.NAME.dedup`` (``exact`` | ``near``, with ``dedup_threshold``) and
``.decontaminate`` (evaluation sets, with ``decontaminate_n``) and ``.quality_scores``
(with ``quality_keep`` or ``quality_min``: ``phijax.data.quality.scores``) make
``phijax.data.sources.build_source`` call ``apply``: the source's training documents
that the dedup report drops (``dedup.report``) or that share an n-gram with the
evaluation sets (``contamination.report``) or that score below the quality cut (ranked
among the training documents the other filters keep) go into ``src.dropped``, so
``train_indices()`` leaves them out. Held-out documents are never dropped: the
held-out split, and so every held-out score, means what it meant without the filter.

Reports are computed once and cached as JSON under ``CACHE_DIR``, keyed by the source's
identity (every file it reads, held-out ones included, by path, size and modification
time, as ``phijax.data.fingerprint`` identifies a corpus; a generated source by its
settings), the held-out fraction, the filter's settings and the library versions that
decide the result. The train loop builds its sources several times (tokenizer, train
and eval iterators); each build after the first reads the cache (and, in one process,
a memo). ``phijax.data.fingerprint.corpus_key`` adds ``settings`` to the corpus key, so
a tokenizer, token cache or provenance hash of a filtered corpus is not that of the
whole one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import tempfile
import time
from importlib import metadata

import numpy as np

from phijax import files as files_lib
from phijax.data import kinds
from phijax.data.errors import DataError
from phijax.data.quality import contamination, dedup, evalsets, scores

log = logging.getLogger(__name__)

CACHE_DIR = "~/.cache/phijax/quality"
FIELDS = ("dedup", "dedup_threshold", "decontaminate", "decontaminate_n") + scores.FIELDS
_VERSION = 1  # bump when a report's content changes for the same inputs
_MEMO: dict[str, tuple[np.ndarray, str]] = {}  # cache key -> (dropped, log line)


def settings(name: str, scfg) -> dict:
  """The filters source ``name`` asks for, checked (a DataError naming the field);
  ``{}`` when none is on. Reads no documents."""
  field = f"config.data.sources.{name}"
  out = {}
  if scfg.get("dedup", ""):
    s = dedup.Settings(mode=scfg.dedup, threshold=float(scfg.get("dedup_threshold", 0.8)))
    out["dedup"] = s.check({"mode": f"{field}.dedup",
                            "threshold": f"{field}.dedup_threshold"}).to_dict()
  if scfg.get("decontaminate", ""):
    entries = evalsets.parse(scfg.decontaminate, f"{field}.decontaminate")
    n = contamination.check_n(scfg.get("decontaminate_n", contamination.DEFAULT_N),
                              f"{field}.decontaminate_n")
    for e in entries:
      if e.startswith(evalsets.HELDOUT + ":") and e != f"{evalsets.HELDOUT}:{name}":
        raise DataError(f"{field}.decontaminate: {e!r}: a source's filter reads its own "
                        "held-out documents ('heldout'); check against another source's "
                        f"with python -m phijax.data.quality contamination --against={e}")
    out["decontaminate"] = dict(against=entries, n=n,
                                sets=[evalsets.identity(e) for e in entries])
  quality = scores.check(name, scfg)
  if quality:
    out["quality"] = quality
  if out and scfg.kind == "array_record":
    raise DataError(f"data source {name!r} is pre-tokenized (array_record): dedup, "
                    "decontaminate and quality scores read text; filter the text it was "
                    "made from")
  return out


def source_identity(name: str, scfg, heldout_fraction: float) -> dict:
  """What a report of source ``name`` depends on besides its settings, without reading
  a document: every file (relative path, size, modification time) or a generator's
  settings, the config fields that choose documents, the held-out fraction."""
  chosen = {k: v for k, v in scfg.items() if k not in FIELDS and k != "weight"}
  out = dict(name=name, config=chosen, heldout_fraction=float(heldout_fraction))
  kind = kinds.lookup(name, scfg.kind)
  if kind.generated:
    return out
  root, files = kind.files(name, scfg)
  out.update(root=str(pathlib.Path(root).resolve()), files=files_lib.stamp(root, files))
  return out


def _key(tool: str, identity: dict, tool_settings: dict) -> str:
  libs = {}
  if tool_settings.get("mode") == "near":  # MinHash signatures differ across versions
    dedup.datasketch()  # installed, or a DataError saying how
    libs["datasketch"] = metadata.version("datasketch")
  blob = json.dumps(dict(v=_VERSION, tool=tool, source=identity, settings=tool_settings,
                         libs=libs), sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_path(name: str, tool: str, key: str, cache_dir: str | None = None) -> pathlib.Path:
  # CACHE_DIR read now, not when the function was defined: tests point it elsewhere.
  return pathlib.Path(cache_dir or CACHE_DIR).expanduser() / f"{name}-{tool}-{key}.json"


def _cached(path: pathlib.Path, what: str, compute, recompute: bool):
  """``(report, hit)``: the report at ``path``, else ``compute()`` saved there (a
  read-only cache directory still works, recomputing every time)."""
  if path.is_file() and not recompute:
    try:
      with open(path, encoding="utf-8") as f:
        return json.load(f), True
    except (OSError, ValueError) as e:  # a damaged entry is recomputed, not fatal
      log.warning("quality cache %s unreadable (%s); recomputing", path, e)
  log.info("computing %s (kept in %s)", what, path)
  report = compute()
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Processes (hosts sharing the directory) may race: each writes its own temporary
    # file and renames it into place, so a reader sees a whole report or none.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=1)
    os.replace(tmp, path)
  except OSError as e:
    log.warning("could not cache the report at %s (%s)", path, e)
  return report, False


def dedup_report(src, scfg, heldout_fraction: float, s: dedup.Settings, *,
                 progress=None, recompute: bool = False, cache_dir: str | None = None):
  """``(report, path, hit)``: ``dedup.report`` of ``src`` (built from ``scfg``),
  from the cache when it holds one for the same source and settings."""
  key = _key("dedup", source_identity(src.name, scfg, heldout_fraction), s.to_dict())
  path = cache_path(src.name, "dedup", key, cache_dir)
  report, hit = _cached(path, f"the {s.mode} dedup report of data source {src.name!r}",
                        lambda: dedup.report(src, s, progress), recompute)
  return report, path, hit


def contamination_report(src, scfg, heldout_fraction: float, against, n: int, *,
                         others: dict | None = None, progress=None,
                         recompute: bool = False, cache_dir: str | None = None):
  """``(report, path, hit)``: ``contamination.report`` of ``src`` against the
  evaluation sets ``against`` (``evalsets`` entries; ``others``: ``{name: (Source,
  scfg)}`` for ``heldout:NAME``), cached like ``dedup_report``."""
  sets = []
  for e in against:
    name = e.split(":", 1)[1] if e.startswith(evalsets.HELDOUT + ":") else None
    if name and name != src.name and others and name in others:
      sets.append(source_identity(name, others[name][1], heldout_fraction))
    else:
      sets.append(evalsets.identity(e))
  key = _key("contamination", source_identity(src.name, scfg, heldout_fraction),
             dict(against=list(against), sets=sets, n=n))
  path = cache_path(src.name, "contamination", key, cache_dir)
  for e in against:  # a malformed problems file is bad input: said before any work
    if evalsets.kind(e) == "file":
      evalsets.problems(e)

  def compute():
    items = evalsets.load(against, src, {k: v[0] for k, v in (others or {}).items()})
    return contamination.report(src, items, n, against=against, progress=progress)
  report, hit = _cached(path, f"the contamination report of data source {src.name!r} "
                        f"against {','.join(against)}", compute, recompute)
  return report, path, hit


def apply(src, scfg, heldout_fraction: float) -> None:
  """Sets ``src.dropped`` from the filters ``scfg`` turns on (see the module
  docstring); logs what they dropped, once per process."""
  wanted = settings(src.name, scfg)
  if not wanted:
    return
  memo = _key("filters", source_identity(src.name, scfg, heldout_fraction), wanted)
  if memo not in _MEMO:
    _MEMO[memo] = _compute(src, scfg, heldout_fraction, wanted)
    log.info("%s", _MEMO[memo][1])
  dropped = _MEMO[memo][0].copy()
  if len(dropped) != src.num_documents:  # the memo key covers the files: cannot happen
    raise DataError(f"data source {src.name!r}: the quality filter's cache is stale")
  src.dropped = dropped


def _compute(src, scfg, heldout_fraction, wanted) -> tuple[np.ndarray, str]:
  dropped = np.zeros(src.num_documents, bool)
  notes = []
  for tool in ("dedup", "decontaminate"):
    if tool not in wanted:
      continue
    start = time.perf_counter()
    if tool == "dedup":
      s = dedup.Settings(**wanted["dedup"])
      rep, path, hit = dedup_report(src, scfg, heldout_fraction, s)
      what = (f"dedup={s.mode}: {len(rep['dropped'])} duplicates "
              f"({rep['dropped_bytes']:,} bytes) in {len(rep['clusters'])} clusters")
    else:
      c = wanted["decontaminate"]
      rep, path, hit = contamination_report(src, scfg, heldout_fraction, c["against"],
                                            c["n"])
      what = (f"decontaminate={','.join(c['against'])} ({c['n']}-grams): "
              f"{len(rep['dropped'])} documents ({rep['dropped_bytes']:,} bytes) sharing "
              f"text with {rep['contaminated_items']} evaluation items")
    dropped[rep["dropped"]] = True
    how = "cached" if hit else f"computed in {time.perf_counter() - start:.1f} s"
    notes.append(f"{what} ({how}; report {path})")
  dropped &= ~np.asarray(src.heldout, bool)  # held-out documents stay: the split holds
  if "quality" in wanted:  # ranks the training documents the other filters keep
    q = wanted["quality"]
    before = int(dropped.sum())
    sizes = None
    if q["keep"] and q["keep_by"] == "bytes":
      sizes = np.asarray([len(src.text(i).encode("utf-8"))
                          for i in range(src.num_documents)])
    dropped |= scores.dropped(scores.of_source(src, q), ~np.asarray(src.heldout, bool)
                              & ~dropped, q["keep"], q["min"], sizes)
    rule = (f"top {q['keep']:g} of {q['keep_by']}" if q["keep"]
            else f"score >= {q['min']:g}")
    notes.append(f"quality {rule} by {q['scores']}: {int(dropped.sum()) - before} "
                 "documents")
  if not (~src.heldout & ~dropped).any():
    raise DataError(f"data source {src.name!r}: the quality filters drop every training "
                    "document; loosen config.data.sources."
                    f"{src.name}.dedup_threshold, decontaminate or quality_min")
  line = (f"data source {src.name!r}: quality filters drop {int(dropped.sum())} of "
          f"{int((~src.heldout).sum())} training documents; " + "; ".join(notes))
  return dropped, line
