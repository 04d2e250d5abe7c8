"""Quality scores for every document of a source: annotate a sample, embed every
document with a model, fit a classifier on the sample, score the rest (phi-1's filter,
Gunasekar et al. 2023, section 2.1).

``compute`` returns a scores document (``phijax.data.quality.scores``) and keeps it in
the quality cache, keyed by the source's files, the embedding model, the annotator and
every setting; the embeddings are cached on their own (keyed by source, model and
``max_tokens``), so trying another annotator or classifier does not embed again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time

import numpy as np

from phijax.curate import annotate, classify
from phijax.data import kinds
from phijax.data.quality import filters, rubric, scores

log = logging.getLogger(__name__)
_VERSION = 1  # bump when the same inputs give other scores


@dataclasses.dataclass(frozen=True)
class Settings:
  annotator: annotate.Annotator
  sample: int = 400  # documents labelled (labels:FILE: the file's)
  label_share: float = 0.5  # model annotators: the share of the sample labelled good
  classifier: str = "forest"
  seed: int = 0
  max_tokens: int = 256  # each document's first tokens embedded
  batch_size: int = 32

  def key_fields(self) -> dict:
    out = dataclasses.asdict(self)
    out.pop("batch_size")  # how rows are batched changes no result
    out["annotator"] = self.annotator.identity
    return out


def model_identity(loaded) -> dict:
  """What the embeddings depend on: the model's directory and a stamp of its files
  (for a run, the chosen step and its checkpoint)."""
  d = loaded.directory
  if loaded.step is not None:
    ckpt = os.path.join(d, "checkpoints", str(loaded.step))
    return dict(source=loaded.source, stamp=annotate.stamp(ckpt if os.path.isdir(ckpt)
                                                           else d))
  return dict(source=loaded.source, stamp=annotate.stamp(d))


def _key(*parts) -> str:
  blob = json.dumps([_VERSION, *parts], sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_source(cfg_data, name: str):
  """The source as configured, without its quality filters (every document is scored,
  whatever a filter would drop)."""
  from phijax.data import sources  # noqa: F401  (registers the kinds)
  return kinds.lookup(name, cfg_data.sources[name].kind).build(
      name, cfg_data.sources[name], cfg_data.heldout_fraction, cfg_data.seq_len)


def embeddings(src, identity: dict, loaded, model_id: dict, s: Settings, *,
               progress=None, recompute=False) -> tuple[np.ndarray, bool]:
  """``([documents, hidden], cache hit)``: every document's mean-pooled hidden states."""
  from phijax.curate.forward import Forward
  path = filters.cache_path(src.name, "embed", _key(identity, model_id, s.max_tokens))
  path = path.with_suffix(".npy")
  if path.is_file() and not recompute:
    X = np.load(path)
    if X.shape[0] == src.num_documents:
      return X, True
  texts = [src.text(i) for i in range(src.num_documents)]
  tokens = loaded.tokenizer.encode_batch(texts) if hasattr(
      loaded.tokenizer, "encode_batch") else [loaded.tokenizer.encode(t) for t in texts]
  tokens = [t or [0] for t in tokens]  # an empty document embeds as one pad token
  X = Forward(loaded.cfg, loaded.params).embed(
      tokens, max_tokens=s.max_tokens, batch_size=s.batch_size, progress=progress)
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, X)
    os.replace(tmp, path)
  except OSError as e:
    log.warning("could not cache the embeddings at %s (%s)", path, e)
  return X, False


def _labels(src, s: Settings, keys, train_idx, progress):
  """``(sample indices, labels, annotator margins or None)``."""
  a = s.annotator
  if a.kind == "labels":
    given = annotate.read_labels(a.path, keys)
    index = {k: i for i, k in enumerate(keys)}
    idx = np.asarray(sorted(index[k] for k in given))
    return idx, np.asarray([given[keys[i]] for i in idx]), None
  rng = np.random.default_rng(s.seed)
  idx = np.sort(rng.choice(train_idx, min(s.sample, len(train_idx)), replace=False))
  texts = [src.text(int(i)) for i in idx]
  if a.kind == "rubric":
    return idx, np.asarray([rubric.label(t) for t in texts]), None
  from phijax.evals import model_source
  loaded = {"run": model_source.load_run, "params": model_source.load_params_dir,
            "hf": model_source.load_hf_dir}[a.kind](a.path)
  margins = annotate.model_margins(loaded, texts, max_tokens=max(s.max_tokens, 64) * 2,
                                   batch_size=s.batch_size, progress=progress)
  return idx, annotate.top_share(margins, s.label_share), margins


def compute(cfg_data, name: str, loaded, s: Settings, *, progress=None,
            recompute: bool = False):
  """``(scores document, cache path, hit)`` for source ``name`` of ``cfg_data``, the
  embedding model ``loaded`` (``phijax.evals.model_source.Loaded``) and ``s``.
  ``progress(stage)``: a ``(done, total)`` callback for the stage ("annotate", "embed")."""
  identity = filters.source_identity(name, cfg_data.sources[name], cfg_data.heldout_fraction)
  model_id = model_identity(loaded)
  path = filters.cache_path(name, "scores", _key(identity, model_id, s.key_fields()))
  if path.is_file() and not recompute:
    return scores.read(str(path)), path, True
  start = time.perf_counter()
  src = build_source(cfg_data, name)
  keys = [src.key(i) for i in range(src.num_documents)]
  train_idx = np.flatnonzero(~np.asarray(src.heldout, bool))
  idx, labels, margins = _labels(src, s, keys, train_idx,
                                 progress and progress("annotate"))
  X, hit = embeddings(src, identity, loaded, model_id, s, recompute=recompute,
                      progress=progress and progress("embed"))
  clf, report = classify.fit(X[idx], labels, kind=s.classifier, seed=s.seed)
  p = classify.good_probability(clf, X)
  report.update(documents=len(keys), training_documents=int(len(train_idx)),
                embeddings_cached=hit, seconds=round(time.perf_counter() - start, 1),
                sample=[dict(key=keys[i], label=int(lab),
                             **({} if margins is None else dict(margin=float(m))))
                        for i, lab, m in zip(idx, labels, margins if margins is not None
                                             else [None] * len(idx))])
  doc = dict(source=identity, keys=keys, scores=[float(v) for v in p], model=model_id,
             annotator=s.annotator.identity, settings=s.key_fields(), report=report)
  scores.write(str(path), doc)
  return scores.read(str(path)), path, False
