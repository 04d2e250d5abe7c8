"""The training and evaluation pipelines the train loop calls.

Train: per source, this process's share of the train-split documents, tokenized and
packed into rows, the rows in a corpus-wide random order that changes every epoch
(``data.shuffle="global"``; or ``"documents"``: documents shuffled per epoch and
streamed, their rows in order then shuffled in windows of ``data.shuffle_rows``, for
a corpus too big to tokenize into memory), repeated forever; the sources' rows mixed
by weight (``phijax.data.mixture``), batched, optionally produced by
grain worker processes (``data.fixed_batch``: the first batch, repeated every
step). ``get_state()`` / ``set_state()`` on the iterator resume
exactly (grain's checkpointing; orbax saves it with
``grain.checkpoint.CheckpointSave``).

Hosts: the training loop builds the global stream in every process
(``process_index=0`` of 1) and asks for its ``rows`` of each global batch; where the
stream has random access (``random_access``: global shuffle, pretraining sources)
only those rows are materialised (``phijax.data.hosts``); every process still tokenizes
the documents when the stream opens, unless ``data.prepared`` is set, when it reads
only the documents its rows hold. ``process_count > 1`` here instead gives each process every
``process_count``-th document of each source before shuffling (disjoint shares whose
union is the data set; ``batch_size`` per process): another stream for every count.
Text sources read their tokens from ``data.prepared`` when it is set
(``phijax.data.prepare``).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
from typing import Mapping, Sequence

import grain
import numpy as np

from phijax.data import hosts, packing, sources as sources_lib
from phijax.data.errors import DataError
from phijax.data.mixture import WeightedMix

log = logging.getLogger(__name__)
SHUFFLES = ("global", "documents")  # config.data.shuffle


def _process(process_index, process_count):
  if process_index is None or process_count is None:
    import jax  # local: the pipeline itself never needs jax (worker processes)
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise DataError(f"process_index {process_index} is not in [0, {process_count})")
  return process_index, process_count


def _check_cfg(cfg_data):
  if cfg_data.seq_len < 1:
    raise DataError(f"config.data.seq_len must be >= 1, got {cfg_data.seq_len}")
  if cfg_data.workers < 0:
    raise DataError(f"config.data.workers must be >= 0, got {cfg_data.workers}")
  if not 0.0 <= cfg_data.heldout_fraction < 1.0:
    raise DataError("config.data.heldout_fraction must be in [0, 1), got "
                    f"{cfg_data.heldout_fraction}")
  if not cfg_data.sources:
    raise DataError("config.data.sources is empty; add at least one source")
  if cfg_data.shuffle not in SHUFFLES:
    raise DataError(f"config.data.shuffle={cfg_data.shuffle!r}: choose one of {SHUFFLES}")


def source_weights(cfg_data, weights: Mapping[str, float] | None = None) -> dict:
  """``{name: weight}`` of the sources that take part (weight > 0).

  ``weights`` (a curriculum stage's mixture) replaces the config's; sources it does
  not name get weight 0.
  """
  names = list(cfg_data.sources)
  if weights is None:
    weights = {n: cfg_data.sources[n].weight for n in names}
  else:
    unknown = sorted(set(weights) - set(names))
    if unknown:
      raise DataError(f"mixture weights name unknown data sources {unknown}; "
                      f"config.data.sources has {names}")
  for n, w in weights.items():
    if not w >= 0:  # also catches NaN
      raise DataError(f"data source {n!r}: weight must be >= 0, got {w}")
  active = {n: float(weights.get(n, 0.0)) for n in names if weights.get(n, 0.0) > 0}
  if not active:
    raise DataError(f"all data source weights are 0 ({dict(weights)}); give at least "
                    "one source a positive weight")
  return active


def build_sources(cfg_data, names: Sequence[str] | None = None) -> dict:
  """``{name: Source}`` for ``names`` (default: all configured sources)."""
  from phijax.data import prepare
  names = list(cfg_data.sources) if names is None else list(names)
  return prepare.attach(cfg_data, {
      n: sources_lib.build_source(n, cfg_data.sources[n], cfg_data.heldout_fraction,
                                  cfg_data.seq_len)
      for n in names})


def _shard(indices: np.ndarray, source, process_index, process_count, split):
  share = indices[process_index::process_count]
  if len(share) == 0:
    raise DataError(
        f"data source {source.name!r} has {len(indices)} {split} documents, too few "
        f"to give each of {process_count} processes one; add data or lower "
        "config.data.heldout_fraction")
  return share


def stage_seed(seed: int, stage: int, name: str) -> int:
  """The shuffle seed of one source in one curriculum stage (32 bits, stable)."""
  digest = hashlib.sha256(f"{seed}/{stage}/{name}".encode()).digest()
  return int.from_bytes(digest[:4], "big")


def make_train_dataset(cfg_data, tok, *, batch_size: int, seed: int,
                       weights: Mapping[str, float] | None = None,
                       process_index: int | None = None,
                       process_count: int | None = None,
                       stage: int = 0, rows=None, on_row=None) -> grain.IterDataset:
  """The endless training ``grain.IterDataset`` (see ``make_train_iterator``)."""
  _check_cfg(cfg_data)
  if batch_size < 1:
    raise DataError(f"batch_size must be >= 1, got {batch_size}")
  process_index, process_count = _process(process_index, process_count)
  active = source_weights(cfg_data, weights)
  srcs = build_sources(cfg_data, list(active))
  for name, src in srcs.items():
    if src.kind == "preferences":
      raise DataError(f"data source {name!r} holds preference pairs, which train with "
                      "--config.train.objective=dpo (phijax.data.preferences)")
  if random_access(cfg_data, srcs):
    # The global stream indexed: this process materialises only its ``rows``.
    maps = {}
    for name, src in srcs.items():
      share = _shard(src.train_indices(), src, process_index, process_count, "train")
      maps[name] = packing.global_rows(
          src, share, tok, cfg_data.seq_len, shuffle_seed=stage_seed(seed, stage, name),
          read_threads=cfg_data.read_threads,
          token_cache=token_cache_path(cfg_data, name, tok, share))
    ds = hosts.HostBatches(maps, active, batch_size,
                           np.arange(batch_size) if rows is None else rows, on_row=on_row)
    return _with_workers(ds, cfg_data)
  streams = {}
  for name, src in srcs.items():
    share = _shard(src.train_indices(), src, process_index, process_count, "train")
    streams[name] = packing.source_rows(
        src, share, tok, cfg_data.seq_len, shuffle_seed=stage_seed(seed, stage, name),
        read_threads=cfg_data.read_threads, row_order=cfg_data.shuffle,
        token_cache=token_cache_path(cfg_data, name, tok, share))
  stream = WeightedMix(streams, active)
  if cfg_data.shuffle == "documents" and cfg_data.shuffle_rows > 1:
    # Packed rows come out in document order, so a batch of consecutive rows would
    # hold pieces of only one or two files: very correlated gradients, and (measured
    # on the tiny run) much slower learning. Shuffling rows in a window decorrelates
    # batches; the window restores exactly from its start state on resume.
    stream = grain.experimental.WindowShuffleIterDataset(
        stream, window_size=cfg_data.shuffle_rows,
        seed=stage_seed(seed, stage, "rows") % (1 << 31))
  ds = stream.batch(batch_size, drop_remainder=True)
  if cfg_data.fixed_batch:
    # Full-batch training on a fixed set: the first batch, every step (copied out, so
    # no step can change another's). Its state is the step count: resume is exact.
    first = next(iter(ds))
    ds = grain.MapDataset.source([first]).repeat().to_iter_dataset().map(_own_arrays)
  else:
    ds = _with_workers(ds, cfg_data)
  # Every process builds the whole global batch here and keeps its rows.
  return ds if rows is None else ds.map(functools.partial(hosts.select_rows, rows=rows))


def random_access(cfg_data, srcs) -> bool:
  """Whether the global stream can be indexed (``hosts.HostBatches``): rows shuffled
  corpus-wide, every source a pretraining one (``PackedRows``), no fixed batch."""
  return (cfg_data.shuffle == "global" and not cfg_data.fixed_batch
          and all(src.split_documents for src in srcs.values()))


def _with_workers(ds, cfg_data):
  if cfg_data.workers > 0:
    _ensure_absl_flags_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg_data.workers))
    # Copy out of grain's shared memory: the batch then owns plain numpy memory.
    ds = ds.map(_own_arrays)
  return ds


def make_train_iterator(cfg_data, tok, *, batch_size: int, seed: int,
                        weights: Mapping[str, float] | None = None,
                        process_index: int | None = None,
                        process_count: int | None = None,
                        stage: int = 0, rows=None, on_row=None) -> grain.DatasetIterator:
  """Endless iterator of training batches (dicts of numpy ``[batch_size, seq_len]``).

  ``inputs``, ``targets`` (the next token of the same document), ``segment_ids``
  (1.. per document piece in a row, 0 padding), ``positions`` (0 at each piece's
  start), all int32, and ``loss_mask`` float32. Epochs repeat forever, reshuffled.

  Args:
    weights: ``{source: weight}`` for this curriculum stage (None: the config's);
      weights are shares of tokens, kept exactly.
    process_index, process_count: this host's share (default: jax's).
    stage: curriculum stage; each stage shuffles with its own seed, so a new stage
      does not replay the documents the previous one started with.
    rows: positions of each ``batch_size``-row global batch to return (a multi-host
      process's share, ``hosts.sharding_rows``; default all): batches are then
      ``[len(rows), seq_len]``. Where the stream has random access (``random_access``)
      only those rows are read; otherwise the whole batch is built and cut.
    on_row: ``on_row(source, j)`` for every row read on the random-access path.

  The iterator's ``get_state()`` / ``set_state()`` resume exactly; restore into an
  iterator built with the same arguments and ``config.data.workers`` (on the
  random-access path the state is the mixture's counts: any ``rows``, and the order is
  the same for any worker count; elsewhere the worker count changes the order).
  With workers, call ``it.close()`` when done with it (e.g. before building the next
  stage's iterator) to stop its processes; a script that starts workers needs the
  usual ``if __name__ == "__main__":`` guard (spawn).
  """
  ds = make_train_dataset(cfg_data, tok, batch_size=batch_size, seed=seed,
                          weights=weights, process_index=process_index,
                          process_count=process_count, stage=stage, rows=rows,
                          on_row=on_row)
  return iter(ds)


def _own_arrays(batch):
  return {k: np.array(v) for k, v in batch.items()}


def _ensure_absl_flags_parsed():
  # grain's worker start reads an absl flag; outside absl.app (pytest, notebooks)
  # that raises UnparsedFlagAccessError (google/grain#1355, fixed after 0.2.18).
  # Marking flags parsed keeps their defaults (phijax's commands parse with argparse).
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def token_cache_path(cfg_data, name: str, tok, indices) -> str | None:
  """Where the tokens of documents ``indices`` of source ``name`` are kept between
  runs (``packing.cached_tokens``): under ``data.tokenizer.cache_dir``, keyed by the
  tokenizer's bytes, the source's files (paths, sizes, modification times) and the
  indices. None (no cache) for generated sources and without a cache directory."""
  import os

  from phijax.data import fingerprint, kinds
  scfg = cfg_data.sources[name]
  if kinds.lookup(name, scfg.kind).generated or not cfg_data.tokenizer.cache_dir:
    return None
  label, corpus = fingerprint.corpus_key(cfg_data, [name])
  if not corpus.get("corpus"):  # no files to identify it by (array_record: ids already)
    return None
  digest = hashlib.sha256()
  for part in (tok.model_proto, repr(sorted(corpus.items())).encode(),
               np.asarray(indices, np.int64).tobytes()):
    digest.update(hashlib.sha256(part).digest())
  return os.path.join(os.path.expanduser(cfg_data.tokenizer.cache_dir), "tokens",
                      f"{label}-{digest.hexdigest()[:16]}.npz")


def documents_seen(cfg_data, tok, *, seed: int, rows: int, stage: int = 0) -> dict:
  """``{source: distinct documents}`` in the first ``rows`` training rows of one
  process (each source's share of rows by weight), from the orders the training
  iterator uses: how much of the corpus a short run sees. With
  ``data.shuffle="documents"`` the rows are counted before the window shuffle, which
  moves rows by less than ``data.shuffle_rows``."""
  active = source_weights(cfg_data)
  total = sum(active.values())
  out = {}
  for name, src in build_sources(cfg_data, list(active)).items():
    n = max(1, round(rows * active[name] / total))
    shuffle_seed = stage_seed(seed, stage, name)
    indices = src.train_indices()
    if cfg_data.shuffle == "global" and src.split_documents:
      packed = packing.PackedRows(src, indices, tok, cfg_data.seq_len,
                                  order_seed=shuffle_seed, read_threads=cfg_data.read_threads,
                                  cache_path=token_cache_path(cfg_data, name, tok, indices))
      order = packing.shuffled_rows(grain.MapDataset.source(np.arange(len(packed))),
                                    shuffle_seed).repeat()
      seen = {int(d) for k in range(n) for d in packed.row_documents(order[k])}
    else:
      docs = grain.MapDataset.source(np.asarray(indices, np.int64)).shuffle(
          seed=shuffle_seed).repeat()
      seen, positions, k = set(), 0, 0
      while positions < n * cfg_data.seq_len:
        seen.add(int(docs[k]))
        positions += len(src.tokens(int(docs[k]), tok)) - 1
        k += 1
    out[name] = len(seen)
  return out


def eval_source_names(cfg_data) -> list[str]:
  """The sources held-out evaluation reads: ``data.eval_sources`` (comma-separated
  names), or every source with weight > 0 when it is empty."""
  chosen = [n.strip() for n in str(cfg_data.get("eval_sources", "") or "").split(",")
            if n.strip()]
  if not chosen:
    return list(source_weights(cfg_data))
  unknown = [n for n in chosen if n not in cfg_data.sources]
  if unknown:
    raise DataError(f"config.data.eval_sources names {unknown}, which config.data.sources "
                    f"does not have ({sorted(cfg_data.sources)}); name some of those, or "
                    "'' for every source with weight > 0")
  return chosen


def _eval_sources(cfg_data, names):
  return build_sources(cfg_data, eval_source_names(cfg_data) if names is None else names)


def make_eval_batches(cfg_data, tok, *, batch_size: int, num_batches: int | None,
                      process_index: int | None = None,
                      process_count: int | None = None,
                      sources: Sequence[str] | None = None) -> list[dict]:
  """``num_batches`` batches over the held-out split, in a fixed order.

  Same dicts as training plus ``bytes`` (int32 ``[B, L]``: UTF-8 bytes of each
  target token, 0 where ``loss_mask`` is 0), so bits per byte is
  ``sum(loss * loss_mask) / ln(2) / sum(bytes)``. Covers the held-out documents of
  ``sources`` (default: ``eval_source_names``, i.e. ``data.eval_sources`` or else
  those with weight > 0) from the start, at full ``seq_len``. With several sources
  and a ``num_batches``, the rows are shared among them by their config weights
  (largest remainder; equal shares if no weight is positive; a source with too few
  held-out rows leaves its share to the others), so the number measures the mixture,
  not whichever source comes first. Every process gets exactly ``num_batches`` (a
  multi-host eval step must run the same number of times everywhere): when the
  held-out data runs out, the rest is padding rows (``loss_mask`` 0), with a warning.
  ``num_batches=None`` takes every held-out row of this process (the last batch
  padded); multi-host callers then agree on the largest count and pass it.
  """
  _check_cfg(cfg_data)
  process_index, process_count = _process(process_index, process_count)
  seq_len = cfg_data.seq_len
  wanted = batch_size * num_batches if num_batches is not None else None
  srcs = _eval_sources(cfg_data, sources)
  its = {}
  for name, src in srcs.items():
    indices = src.heldout_indices()
    if len(indices):
      share = _shard(indices, src, process_index, process_count, "held-out")
      its[name] = iter(packing.source_rows(src, share, tok, seq_len, shuffle_seed=None,
                                           read_threads=cfg_data.read_threads,
                                           token_bytes=tok.token_bytes))
  quotas = _row_quotas(wanted, {n: cfg_data.sources[n].weight for n in its})
  per_source = {n: list(itertools.islice(it, quotas[n])) for n, it in its.items()}
  if wanted is not None:  # sources short of their share leave it to the others
    for name, it in its.items():
      short = wanted - sum(map(len, per_source.values()))
      if short <= 0:
        break
      per_source[name].extend(itertools.islice(it, short))
  rows = [r for n in its for r in per_source[n]]
  if not rows:
    raise DataError(_no_heldout_message(cfg_data, srcs))
  if len(its) < len(srcs) and process_index == 0:  # one-document sources: never evaluated
    log.warning("data source(s) %s hold no held-out document (one document each), so the "
                "evaluation measures %s only; give such a source several documents to "
                "evaluate on it", sorted(set(srcs) - set(its)), sorted(its))
  if num_batches is None:
    num_batches = -(-len(rows) // batch_size)
    wanted = batch_size * num_batches
  elif len(rows) < wanted:
    log.warning("held-out data fills %d of %d eval rows; the rest is padding",
                len(rows), wanted)
  if len(rows) < wanted:
    pad = {k: np.zeros_like(v) for k, v in rows[0].items()}
    pad["inputs"][:] = tok.pad_id
    pad["targets"][:] = tok.pad_id
    rows.extend([pad] * (wanted - len(rows)))
  return [{k: np.stack([r[k] for r in rows[b * batch_size:(b + 1) * batch_size]])
           for k in rows[0]} for b in range(num_batches)]


def _row_quotas(wanted: int | None, weights: dict) -> dict:
  """Rows per source: ``wanted`` split by weight (largest remainder; equal shares when
  no weight is positive), or None (every row) for each when ``wanted`` is None."""
  if wanted is None:
    return {n: None for n in weights}
  w = {n: max(0.0, float(x)) for n, x in weights.items()}
  total = sum(w.values())
  w = w if total > 0 else {n: 1.0 for n in w}
  total = sum(w.values()) or 1.0
  exact = {n: wanted * x / total for n, x in w.items()}
  quotas = {n: int(e) for n, e in exact.items()}
  for n in sorted(exact, key=lambda n: quotas[n] - exact[n])[:wanted - sum(quotas.values())]:
    quotas[n] += 1
  return quotas


def check_heldout(cfg_data, sources: Sequence[str] | None = None) -> None:
  """Raises the DataError ``make_eval_batches`` would, without reading documents:
  the train loop calls it before it writes anything to the run directory."""
  _check_cfg(cfg_data)
  srcs = _eval_sources(cfg_data, sources)
  if not any(len(src.heldout_indices()) for src in srcs.values()):
    raise DataError(_no_heldout_message(cfg_data, srcs))


def _no_heldout_message(cfg_data, srcs) -> str:
  if cfg_data.heldout_fraction <= 0:
    return ("no held-out documents to evaluate on; set config.data.heldout_fraction > 0 "
            "(e.g. 0.05)")
  # With a fraction > 0 every source of >= 2 documents holds one out (sources._split),
  # so the sources here are single documents.
  return (f"no held-out documents to evaluate on: data source(s) {sorted(srcs)} hold one "
          "document each, which is trained on (holding one out needs two or more); give "
          "several documents (a directory or glob of files, or a .jsonl file with one "
          "per line), e.g. cut a file into parts with `split -l 2000 FILE parts/`")


def heldout_documents(cfg_data, tok=None, sources: Sequence[str] | None = None) -> list[str]:
  """Texts of the held-out documents ``make_eval_batches`` reads, in its order
  (all processes' shares), e.g. for a gzip bits-per-byte baseline. ``tok`` is
  needed only for pre-tokenized (array_record) sources."""
  _check_cfg(cfg_data)
  texts = []
  for src in _eval_sources(cfg_data, sources).values():
    texts.extend(src.text(int(i), tok) for i in src.heldout_indices())
  return texts


def epoch_rows(cfg_data, tok, names: Sequence[str] | None = None) -> int:
  """Packed rows in one pass over the train split of ``names`` (default: the sources
  with weight > 0), packed in document order as evaluation packs: the length of an
  epoch in rows (a shuffled epoch packs within a row or two of it)."""
  names = list(source_weights(cfg_data)) if names is None else list(names)
  rows = 0
  for src in build_sources(cfg_data, names).values():
    rows += sum(1 for _ in packing.source_rows(
        src, src.train_indices(), tok, cfg_data.seq_len, shuffle_seed=None,
        read_threads=cfg_data.read_threads))
  if rows == 0:
    raise DataError(f"the train split of {', '.join(names)} is empty: nothing to make "
                    "an epoch of")
  return rows
