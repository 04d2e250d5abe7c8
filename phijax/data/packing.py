"""Documents -> fixed-length rows: tokenize, shift, pack, finalize.

Convention: a document is its tokens followed by ``<|endoftext|>``; its example is
``inputs = doc[:-1]``, ``targets = doc[1:]``, so no target crosses a document. Rows
of ``seq_len`` carry ``segment_ids`` (1, 2, ... per document piece in the row, 0 on
padding) and ``positions`` (restarting at 0 for every piece).

Pretraining sources are packed concat-then-split (grain's
``ConcatThenSplitIterDataset``): documents are laid end to end and cut every
``seq_len`` tokens, so rows have no padding and a long document continues in the
next row (its positions restart there); nothing is dropped. SFT conversations are
never split: they are truncated to ``max_tokens`` (with a warning) and packed
first-fit, padding the rest of a row.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
import zipfile

import grain
import numpy as np

from phijax.data import sft
from phijax.data.errors import DataError, DataWarning

ROW_KEYS = ("inputs", "targets", "segment_ids", "positions", "loss_mask")
# First-fit bins open at once for SFT rows: more bins, less padding, more reordering.
_SFT_PACKING_BINS = 8
log = logging.getLogger(__name__)


class DocumentExamples:
  """Map ``document index -> {"inputs", "targets"[, "loss_mask"]}`` for one source."""

  def __init__(self, source, tok, seq_len: int):
    self.source = source
    self.tok = tok
    self.sft_max_tokens = 0
    if not source.split_documents:
      max_tokens = source.max_tokens or seq_len + 1
      if max_tokens > seq_len + 1:
        raise DataError(
            f"data source {source.name!r}: max_tokens={max_tokens} does not fit a "
            f"row of seq_len={seq_len} (conversations are not split across rows); "
            f"set config.data.sources.{source.name}.max_tokens <= {seq_len + 1}")
      if max_tokens < 2:
        raise DataError(f"data source {source.name!r}: max_tokens must be >= 2")
      self.sft_max_tokens = max_tokens
    self._truncated = 0
    self._lock = threading.Lock()

  def __getstate__(self):
    state = dict(self.__dict__)
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def __call__(self, i):
    if self.sft_max_tokens:
      turns = self.source.conversation(int(i))
      ids, is_response, truncated_from = sft.render(turns, self.tok, self.sft_max_tokens,
                                                    self.source.template)
      if truncated_from:
        self._note_truncation(int(i), truncated_from)
      return dict(inputs=ids[:-1], targets=ids[1:],
                  loss_mask=is_response[1:].astype(np.float32))
    doc = self.source.tokens(int(i), self.tok)
    return dict(inputs=doc[:-1], targets=doc[1:])

  def _note_truncation(self, i, n):
    with self._lock:
      self._truncated += 1
      count = self._truncated
    if count <= 3 or count & (count - 1) == 0:  # the first few, then at powers of 2
      warnings.warn(
          f"data source {self.source.name!r}: conversation {i} has {n} tokens, "
          f"truncated to max_tokens={self.sft_max_tokens} ({count} truncated so far "
          "in this process)", DataWarning, stacklevel=2)


def _non_empty(example) -> bool:
  # A document with no tokens has only its eos: nothing to predict.
  return len(example["inputs"]) > 0


def pack_rows(examples: grain.IterDataset, seq_len: int, *, split_documents: bool,
              has_loss_mask: bool) -> grain.IterDataset:
  """Packs variable-length examples into rows of ``seq_len`` (grain's packers)."""
  features = ("inputs", "targets") + (("loss_mask",) if has_loss_mask else ())
  length_struct = {k: seq_len for k in features}
  if split_documents:
    # split_full_length_features=True: a document of exactly seq_len tokens is cut
    # like any other, so rows are the plain concatenation of documents in order.
    return grain.experimental.ConcatThenSplitIterDataset(
        examples, length_struct=length_struct, split_full_length_features=True)
  return grain.experimental.FirstFitPackIterDataset(
      examples, length_struct=length_struct, num_packing_bins=_SFT_PACKING_BINS,
      shuffle_bins=False)


class FinalizeRows:
  """Packed features -> the row dict the train step takes; padding gets ``pad_id``."""

  def __init__(self, pad_id: int, token_bytes: np.ndarray | None = None):
    self.pad_id = pad_id
    self.token_bytes = token_bytes

  def __call__(self, packed):
    segment_ids = packed["inputs_segment_ids"].astype(np.int32)
    pad = segment_ids == 0
    inputs = np.where(pad, self.pad_id, packed["inputs"]).astype(np.int32)
    targets = np.where(pad, self.pad_id, packed["targets"]).astype(np.int32)
    if "loss_mask" in packed:
      loss_mask = np.where(pad, 0.0, packed["loss_mask"]).astype(np.float32)
    else:
      loss_mask = (~pad).astype(np.float32)
    row = dict(inputs=inputs, targets=targets, segment_ids=segment_ids,
               positions=packed["inputs_positions"].astype(np.int32),
               loss_mask=loss_mask)
    if self.token_bytes is not None:
      row["bytes"] = np.where(loss_mask > 0, self.token_bytes[targets], 0).astype(np.int32)
    return row


class PackedRows:
  """The rows of documents ``indices`` of ``source`` packed concat-then-split in one
  seeded order, with random access: row ``r`` is positions ``[r L, (r + 1) L)`` of the
  documents' examples laid end to end (the last row padded). Every document is
  tokenized once, at construction (``Source.tokens_of``), so an epoch's rows
  can then be read in any order: grain's ``shuffle`` gives a corpus-wide random order,
  resumable by index. Memory: 8 bytes a token (inputs and targets); a prepared source
  (``phijax.data.prepare``) keeps only the lengths and reads a row's documents when
  the row is asked for."""

  def __init__(self, source, indices, tok, seq_len: int, *, order_seed: int,
               read_threads: int = 1, cache_path=None):
    indices = np.asarray(indices, np.int64)
    # A prepared source (phijax.data.prepare) knows its documents' lengths: the layout
    # is computed from them and a row reads only its own documents (lazily).
    store = getattr(source, "prepared", None)
    if store is not None:
      store_lengths = store.lengths[indices]
      docs = None
    else:
      docs = cached_tokens(source, indices, tok, read_threads, cache_path)
      store_lengths = np.asarray([len(d) for d in docs], np.int64)
    perm = np.random.default_rng(order_seed).permutation(len(indices))
    kept = perm[store_lengths[perm] > 1]
    self.order = indices[kept]  # the documents in packing order
    if not len(kept):
      raise DataError(f"data source {source.name!r}: its documents hold no tokens")
    lengths = store_lengths[kept] - 1  # examples: doc[:-1]
    self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    self._num_tokens = int(lengths.sum())
    self.seq_len, self.pad_id = seq_len, tok.pad_id
    self.num_documents = len(kept)
    self._source, self._tok = (source, tok) if store is not None else (None, None)
    if docs is not None:
      self.inputs = np.concatenate([docs[k][:-1] for k in kept]).astype(np.int32)
      self.targets = np.concatenate([docs[k][1:] for k in kept]).astype(np.int32)

  @property
  def num_tokens(self) -> int:
    return self._num_tokens

  def _window(self, a: int, b: int):
    """``(inputs, targets)`` of positions ``[a, b)``: from memory, or from the
    prepared documents those positions fall in."""
    if self._source is None:
      return self.inputs[a:b], self.targets[a:b]
    first, last = np.searchsorted(self.starts, [a, b - 1], "right") - 1
    ins, outs = [], []
    for d in range(first, last + 1):
      doc = self._source.tokens(int(self.order[d]), self._tok)
      start = int(self.starts[d])
      lo, hi = max(a, start) - start, min(b, start + len(doc) - 1) - start
      ins.append(doc[lo:hi])
      outs.append(doc[lo + 1:hi + 1])
    return np.concatenate(ins).astype(np.int32), np.concatenate(outs).astype(np.int32)

  def row_documents(self, r: int) -> np.ndarray:
    """The source's indices of the documents row ``r`` holds pieces of."""
    a = int(r) * self.seq_len
    first, last = np.searchsorted(self.starts, [a, a + self.seq_len - 1], "right") - 1
    return self.order[first:last + 1]

  def __len__(self) -> int:
    return -(-self._num_tokens // self.seq_len)

  def __getitem__(self, r):
    L, n = self.seq_len, self._num_tokens
    a = int(r) * L
    if not 0 <= a < n:
      raise IndexError(f"row {r} of {len(self)}")
    at = np.arange(a, min(a + L, n))
    doc = np.searchsorted(self.starts, at, "right") - 1
    # A piece starts at its document's start, or at the row's start if it began before.
    positions = at - np.maximum(self.starts[doc], a)
    pad = L - len(at)
    inputs, targets = self._window(a, min(a + L, n))
    return dict(
        inputs=np.pad(inputs, (0, pad), constant_values=self.pad_id),
        targets=np.pad(targets, (0, pad), constant_values=self.pad_id),
        segment_ids=np.pad(doc - doc[0] + 1, (0, pad)).astype(np.int32),
        positions=np.pad(positions, (0, pad)).astype(np.int32),
        loss_mask=np.pad(np.ones(len(at), np.float32), (0, pad)))


def shuffled_rows(rows: grain.MapDataset, shuffle_seed: int) -> grain.MapDataset:
  """An epoch's ``PackedRows`` in their corpus-wide order (grain reseeds it per epoch
  past the end); ``pipeline.documents_seen`` reads the same order from row indices."""
  return rows.shuffle(seed=shuffle_seed % (1 << 31))


def cached_tokens(source, indices, tok, threads: int, path=None) -> list[np.ndarray]:
  """``source.tokens_of(indices, tok)``, kept in ``path`` (``.npz``) when given: the
  next run on the same documents with the same tokenizer loads them (milliseconds)
  instead of tokenizing again (seconds for the stdlib corpus)."""
  if path is not None and os.path.isfile(path):
    try:
      with np.load(path) as f:
        if np.array_equal(f["indices"], indices):
          return np.split(f["tokens"], np.cumsum(f["lengths"])[:-1])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # damaged
      log.warning("token cache %s is unreadable (%s); tokenizing again", path, e)
  docs = source.tokens_of(indices, tok, threads)
  if path is not None:
    tmp = f"{path}.{os.getpid()}.tmp.npz"  # write-then-rename: readers never see half
    try:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      np.savez(tmp, indices=indices, lengths=np.asarray([len(d) for d in docs], np.int64),
               tokens=(np.concatenate(docs).astype(np.int32) if docs
                       else np.zeros(0, np.int32)))
      os.replace(tmp, path)
    except OSError as e:  # a read-only or full cache directory: train without it
      log.warning("cannot keep the token cache at %s (%s); the next run tokenizes again",
                  path, e)
  return docs


def source_rows(source, indices, tok, seq_len: int, *, shuffle_seed: int | None,
                read_threads: int, token_bytes=None, row_order: str = "documents",
                token_cache=None) -> grain.IterDataset:
  """Rows from documents ``indices`` of ``source``.

  ``shuffle_seed`` set: an endless stream, reshuffled every epoch (grain's
  ``shuffle`` reseeds per epoch when indexed past the end, which ``repeat`` does):
  with ``row_order="global"`` the rows themselves (``PackedRows``: one packing, every
  epoch its rows in a new corpus-wide order), else the documents, their rows in
  stream order. None: one pass in order (evaluation). SFT conversations (never split
  across rows) always shuffle as documents. ``token_cache``: where ``PackedRows``
  keeps the documents' tokens between runs (``cached_tokens``).
  """
  if shuffle_seed is not None and row_order == "global" and source.split_documents:
    read_options = grain.ReadOptions(num_threads=read_threads,
                                     prefetch_buffer_size=max(16, 8 * read_threads))
    return global_rows(source, indices, tok, seq_len, shuffle_seed=shuffle_seed,
                       read_threads=read_threads, token_cache=token_cache).to_iter_dataset(
                           read_options)
  docs = grain.MapDataset.source(np.asarray(indices, np.int64))
  if shuffle_seed is not None:
    docs = docs.shuffle(seed=shuffle_seed).repeat()
  examples = docs.map(DocumentExamples(source, tok, seq_len)).filter(_non_empty)
  read_options = grain.ReadOptions(num_threads=read_threads,
                                   prefetch_buffer_size=max(16, 8 * read_threads))
  rows = pack_rows(examples.to_iter_dataset(read_options), seq_len,
                   split_documents=source.split_documents,
                   has_loss_mask=not source.split_documents)
  return rows.map(FinalizeRows(tok.pad_id, token_bytes))


def global_rows(source, indices, tok, seq_len: int, *, shuffle_seed: int, read_threads: int,
                token_cache=None) -> grain.MapDataset:
  """The endless corpus-wide shuffled rows of a pretraining source with random access:
  element ``j`` is the source's ``j``-th training row (epoch ``j // len``, reshuffled
  each epoch), what ``source_rows`` streams and ``hosts.HostBatches`` indexes."""
  rows = PackedRows(source, indices, tok, seq_len, order_seed=shuffle_seed,
                    read_threads=read_threads, cache_path=token_cache)
  log.info("data source %r: %s tokens of %d documents in %s rows, shuffled corpus-wide",
           source.name, f"{rows.num_tokens:,}", rows.num_documents, f"{len(rows):,}")
  return shuffled_rows(grain.MapDataset.source(rows), shuffle_seed).repeat()


def packing_efficiency(batches) -> float:
  """Fraction of row positions holding a token (not padding)."""
  used = total = 0
  for b in batches:
    used += int((b["segment_ids"] > 0).sum())
    total += b["segment_ids"].size
  return used / max(total, 1)
