"""What identifies a corpus without reading it: the key the tokenizer cache, the token
cache and a run's provenance use (files' paths, sizes and modification times)."""

from __future__ import annotations

import hashlib
import pathlib
import re
from typing import Iterable, Sequence

from phijax import files as files_lib
from phijax.data import corpus, sources
from phijax.data.quality import filters


def _files_digest(lines: Iterable[str]) -> str:
  return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def corpus_key(cfg_data, names: Sequence[str]) -> tuple[str, dict]:
  """``(label, settings)``: a file-name label and what identifies the corpus.

  Reads no documents (a cache hit must stay cheap): files are identified by their
  paths, sizes and modification times. The built-in stdlib alone keeps the key it
  always had (relative paths and sizes of its train files), so existing caches stay
  valid and another Python version (or a patched stdlib) gets its own model. A source
  with quality filters on (``dedup``, ``decontaminate``) adds their settings: its train
  split is another corpus.
  """
  srcs = {n: cfg_data.sources[n] for n in names}
  if len(srcs) == 1 and next(iter(srcs.values())).kind == "stdlib":
    name, scfg = next(iter(srcs.items()))
    root, files = sources.source_files(name, scfg)
    rel = [f.relative_to(root) for f in files]
    train = [f for f in rel if not corpus.is_heldout(f.as_posix(), cfg_data.heldout_fraction)]
    fingerprint = _files_digest(f"{f.as_posix()}:{(root / f).stat().st_size}" for f in train)
    key = dict(corpus="stdlib", files=fingerprint)
    wanted = filters.settings(name, scfg)
    if wanted:
      key["filters"] = wanted
    return "stdlib", key
  described = []
  for name, scfg in srcs.items():
    if scfg.kind == "array_record":
      continue  # ids already: nothing to train on (see _train_texts)
    root, files = sources.source_files(name, scfg)
    # The root is part of the key: two directories with the same layout and sizes
    # are different corpora.
    entry = dict(
        name=name, kind=scfg.kind, text_field=scfg.get("text_field", "text"),
        root=str(pathlib.Path(root).resolve()),
        files=files_lib.stamp(root, files))
    wanted = filters.settings(name, scfg)
    if wanted:
      entry["filters"] = wanted
    described.append(entry)
  label = re.sub(r"[^A-Za-z0-9_.-]+", "_", "+".join(d["name"] for d in described))[:40]
  return label or "corpus", dict(corpus=described)
