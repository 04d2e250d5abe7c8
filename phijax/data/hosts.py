"""Each host reads only its share of the global batch.

The global training stream is a function of the data seed alone: with
``data.shuffle="global"`` every source's rows have random access (``PackedRows`` in a
corpus-wide order per epoch), and the weighted mixture picks the source of global row
``k`` from the counts before it (``mixture.choose_source``). So a process can walk the
global stream's *choices* (cheap arithmetic) and *materialise* only the rows that land
on its devices: global batch ``b`` is rows ``b B .. (b + 1) B - 1``, and the process
keeps positions ``rows`` of each (``sharding_rows``: what its devices hold of a
``[B, L]`` array under the batch sharding). Its iterator's state is the mixture's
counts, the same numbers in every process and for every process count, so a run
resumes on 1, 2 or 64 processes and continues the same global stream.

``block_rows`` is that assignment computed without devices (a data-parallel mesh over
processes holding equal, consecutive blocks of the batch): the simulated 64- and
256-process checks run on it.

Sources without random access (SFT conversations packed first-fit, ``shuffle=
"documents"`` streams) and ``data.fixed_batch`` keep the whole stream in every process,
each process then keeping its rows (``select_rows``): exact, not cheaper. Without
``data.prepared`` every process still tokenizes its sources' documents when the stream
opens (``PackedRows``); only the rows are split (``phijax.data.prepare`` splits the
reading too).
"""

from __future__ import annotations

import numpy as np

import grain

from phijax.data.mixture import choose_source


def block_rows(batch_size: int, process_count: int, process_index: int) -> np.ndarray:
  """The rows of a ``batch_size``-row global batch process ``process_index`` of
  ``process_count`` holds when the batch splits over processes in order: the block
  ``[floor(i B / N), floor((i + 1) B / N))`` (sizes within one row of each other)."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
  start = process_index * batch_size // process_count
  stop = (process_index + 1) * batch_size // process_count
  return np.arange(start, stop, dtype=np.int64)


def sharding_rows(batch_sharding, batch_size: int, seq_len: int = 1) -> np.ndarray:
  """The global rows (sorted) this process's devices hold of a ``[batch_size, ...]``
  array placed by ``batch_sharding``: what ``device_batch`` will ask it for."""
  rows = set()
  for index in batch_sharding.addressable_devices_indices_map((batch_size, seq_len)).values():
    rows.update(range(batch_size)[index[0]])
  return np.asarray(sorted(rows), np.int64)


class HostBatches(grain.IterDataset):
  """Batches of the global stream restricted to positions ``rows``: ``[len(rows), L]``
  per global batch of ``batch_size`` rows. ``sources``: ``{name: MapDataset}`` of each
  source's endless row stream (row ``j`` is the source's ``j``-th row); ``weights``:
  their mixture weights. ``on_row(name, j)`` is called for every row materialised
  (counting). Under ``mp_prefetch`` grain slices a copy per worker (``set_slice``):
  worker ``w`` of ``W`` materialises batches ``b = w, w + W, ...`` (walking the rest's
  choices only) and grain interleaves them in turn, so the order is the same for any
  number of workers."""

  def __init__(self, sources: dict, weights: dict, batch_size: int, rows, on_row=None):
    names = list(sources)
    super().__init__()
    self.names = names
    self.sources = [sources[n] for n in names]
    total = float(sum(weights[n] for n in names))
    self.weights = [weights[n] / total for n in names]
    self.batch_size = int(batch_size)
    self.rows = np.asarray(rows, np.int64)
    if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= self.batch_size):
      raise ValueError(f"rows {self.rows.tolist()} are not positions of a "
                       f"{self.batch_size}-row batch")
    self.on_row = on_row
    self.share = (0, 1)  # (index, count): a grain worker's share of the batches

  def set_slice(self, sl: slice, sequential_slice: bool = False) -> None:
    """grain's in-place slicing of a dataset copy per worker (``mp_prefetch``)."""
    if sequential_slice or (sl.stop is not None):
      raise ValueError("HostBatches is endless: only strided worker slices apply")
    self.share = (sl.start or 0, sl.step or 1)

  def __iter__(self):
    return _HostIterator(self)

  def __str__(self):
    return (f"HostBatches({dict(zip(self.names, self.weights))}, batch {self.batch_size}, "
            f"{len(self.rows)} rows here)")


class _HostIterator(grain.DatasetIterator):

  def __init__(self, ds: HostBatches):
    super().__init__()
    self._ds = ds
    self._counts = [0] * len(ds.sources)
    self._batch = 0  # global batches passed
    self._mine = np.zeros(ds.batch_size, bool)
    self._mine[ds.rows] = True

  def _skip_batch(self):
    for _ in range(self._ds.batch_size):
      self._counts[choose_source(self._counts, self._ds.weights)] += 1
    self._batch += 1

  def __next__(self):
    index, count = self._ds.share
    while self._batch % count != index:  # another worker's batch: its choices only
      self._skip_batch()
    ds, out = self._ds, []
    for position in range(ds.batch_size):
      s = choose_source(self._counts, ds.weights)
      if self._mine[position]:
        out.append(ds.sources[s][self._counts[s]])
        if ds.on_row is not None:
          ds.on_row(ds.names[s], self._counts[s])
      self._counts[s] += 1
    self._batch += 1
    if not out:  # a process holding no rows of this batch (more processes than rows)
      return {}
    return {k: np.stack([r[k] for r in out]) for k in out[0]}

  def get_state(self):
    # Each grain worker sits at its own position: the state says how many there were.
    return {"counts": list(self._counts), "batch": self._batch,
            "workers": self._ds.share[1]}

  def set_state(self, state):
    if isinstance(state, dict) and "iterators_in_use_states" in state:
      raise ValueError(f"the data state was saved with data.workers="
                       f"{len(state['iterators_in_use_states'])}: resume with that many "
                       "workers (the order is the same for any count; the state is not)")
    workers = state.get("workers", 1) if isinstance(state, dict) else 1
    if workers != self._ds.share[1]:
      raise ValueError(f"the data state was saved with {workers} grain worker(s) (data."
                       f"workers={0 if workers == 1 else workers}); resume with the same")
    counts = _counts_of(state)
    if counts is None:
      raise ValueError(f"data state {str(state)[:120]} holds no mixture counts: it is not "
                       "the state of a training stream")
    if len(counts) != len(self._ds.sources):
      raise ValueError(f"data state has {len(counts)} sources, this stream has "
                       f"{len(self._ds.sources)}: restore with the sources and weights "
                       "the state was saved with")
    self._counts = [int(c) for c in counts]
    total = sum(self._counts)
    if total % self._ds.batch_size:
      raise ValueError(f"data state is {total} rows into the stream, not a whole number "
                       f"of {self._ds.batch_size}-row batches: restore with the batch size "
                       "it was saved with")
    self._batch = int(state.get("batch", total // self._ds.batch_size))


def _counts_of(state) -> list:
  """The mixture's row counts in a state: ours, or a whole-stream iterator's (its
  mixture keeps the same counts under the batching's state)."""
  if isinstance(state, dict):
    if "counts" in state:
      return list(state["counts"])
    for value in state.values():
      found = _counts_of(value)
      if found is not None:
        return found
  return None


def split_rows(rows, pieces: int):
  """Global row indices after each row is cut into ``pieces`` consecutive rows
  (sequence-length warmup's reshape mode); None stays None."""
  if rows is None or pieces == 1:
    return rows
  return (np.asarray(rows, np.int64)[:, None] * pieces + np.arange(pieces)).reshape(-1)


def select_rows(batch: dict, rows) -> dict:
  """The positions ``rows`` of a whole global batch (``WholeStreamRows``)."""
  return {k: np.asarray(v)[rows] for k, v in batch.items()}
