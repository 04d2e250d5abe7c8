"""Exact weighted mixing of row streams.

Weights are shares of rows, and rows are full (concat-then-split), so they are
shares of training tokens, whatever the sources' document lengths. The choice is
deterministic (Tijdeman's chairman-assignment rule): among the sources not ahead
of their quota, the next row comes from the one whose next row is due first, so
after any ``n`` rows each of ``k`` sources has supplied ``w_i * n`` rows to within
``1 - 1/(2k - 2)`` (grain's own ``mix`` rounds weights to integers first). The state
is the row counts plus each source's iterator state, so resuming is exact.
"""

from __future__ import annotations

from typing import Mapping

import grain
import numpy as np


def choose_source(counts, weights) -> int:
  """Index of the source that supplies row ``sum(counts)`` (weights sum to 1)."""
  k = len(weights)
  if k == 1:
    return 0
  slack = 1.0 / (2 * k - 2)
  t = sum(counts) + 1
  best, best_due = -1, np.inf
  for i, (w, c) in enumerate(zip(weights, counts)):
    # Eligible: at least `slack` rows behind the quota after this row; among those,
    # the earliest deadline (c + 1 - slack) / w. Ties go to the earlier source.
    if w * t - c >= slack - 1e-9:
      due = (c + 1 - slack) / w
      if due < best_due:
        best, best_due = i, due
  return best


def _tuple_slices(state):
  """Undoes JSON's tuple -> list on concat-then-split's ``remainder_slices``.

  grain's checkpoint handler saves states as JSON; its concat-then-split iterator
  compares slices with the tuple ``(-1, -1)``, so a restored ``[-1, -1]`` reads as a
  remainder and silently drops a document (grain 0.2.18).
  """
  if isinstance(state, dict):
    return {k: ({f: tuple(sl) for f, sl in v.items()} if k == "remainder_slices"
                and isinstance(v, dict) else _tuple_slices(v))
            for k, v in state.items()}
  if isinstance(state, list):
    return [_tuple_slices(s) for s in state]
  return state


class _MixIterator(grain.DatasetIterator):

  def __init__(self, parents, weights):
    super().__init__(parents)
    self._weights = weights
    self._counts = [0] * len(parents)

  def __next__(self):
    i = choose_source(self._counts, self._weights)
    row = next(self._parents[i])
    self._counts[i] += 1
    return row

  def get_state(self):
    return {"counts": list(self._counts),
            "parents": [p.get_state() for p in self._parents]}

  def set_state(self, state):
    if len(state["counts"]) != len(self._parents):
      raise ValueError(f"mixture state has {len(state['counts'])} sources, this "
                       f"mixture has {len(self._parents)}: restore with the same "
                       "sources and weights the state was saved with")
    self._counts = list(state["counts"])
    for p, s in zip(self._parents, state["parents"]):
      p.set_state(_tuple_slices(s))


class WeightedMix(grain.IterDataset):
  """Mixes endless row streams ``{name: IterDataset}`` by ``{name: weight}``."""

  def __init__(self, streams: Mapping[str, grain.IterDataset],
               weights: Mapping[str, float]):
    names = list(streams)
    super().__init__([streams[n] for n in names])
    total = float(sum(weights[n] for n in names))
    self.names = names
    self.weights = [weights[n] / total for n in names]

  def __iter__(self):
    return _MixIterator([p.__iter__() for p in self.parents], self.weights)

  def __str__(self):
    return f"WeightedMix({dict(zip(self.names, self.weights))})"
