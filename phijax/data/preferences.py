"""Preference pairs for DPO (``train.objective="dpo"``): batches of chosen and rejected
responses to the same prompt.

A ``preferences`` source (``data_config.source("preferences", PATH)``) holds JSON Lines
of ``{"prompt", "chosen", "rejected"}``. Each response is rendered after the prompt
with the source's chat template (``phijax.data.sft``), loss mask on the response and
its end-of-turn, exactly as SFT renders it. A batch of B pairs is 2B rows: the chosen
responses first, then the rejected ones in the same order, one sequence per row
(unpacked: DPO compares whole-response log-probabilities), padded to ``seq_len``.
``pair_mask`` (``[2B, 1]``) marks real pairs (evaluation pads the last batch).

The iterator walks the train split in a fresh seeded order each epoch; its state is
``{"epoch", "position"}``, saved with every checkpoint, so a resume is exact.
"""

from __future__ import annotations

import numpy as np

from phijax.data import sft
from phijax.data.errors import DataError

KEYS = ("inputs", "targets", "loss_mask", "positions", "segment_ids", "pair_mask")


def preference_source(cfg_data):
  """The one source with weight > 0, which must be of kind ``preferences``."""
  from phijax.data import pipeline
  names = list(pipeline.source_weights(cfg_data))
  srcs = pipeline.build_sources(cfg_data, names)
  if len(srcs) != 1 or next(iter(srcs.values())).kind != "preferences":
    kinds = {n: s.kind for n, s in srcs.items()}
    raise DataError(f"train.objective='dpo' trains on one data source of kind "
                    f"'preferences' (JSONL of prompt/chosen/rejected); the config has "
                    f"{kinds}")
  return next(iter(srcs.values()))


def render_pair(pair: dict, tok, template: str, max_tokens: int):
  """``((chosen_ids, chosen_mask), (rejected_ids, rejected_mask))``, each cut to
  ``max_tokens``."""
  prompt = [("user", pair["prompt"])]
  out = []
  for key in ("chosen", "rejected"):
    ids, mask, _ = sft.render(prompt + [("assistant", pair[key])], tok, max_tokens,
                              template)
    out.append((ids, mask))
  return tuple(out)


def pair_rows(rendered, seq_len: int, pad_id: int, real: int | None = None) -> dict:
  """2B rows from B rendered pairs: chosen rows, then rejected rows. The first
  ``real`` pairs (default all) are real; the rest are padding."""
  B = len(rendered)
  real = B if real is None else real
  out = {k: np.zeros((2 * B, seq_len), np.int32) for k in
         ("inputs", "targets", "positions", "segment_ids")}
  out["inputs"][:] = pad_id
  out["targets"][:] = pad_id
  out["loss_mask"] = np.zeros((2 * B, seq_len), np.float32)
  for side in (0, 1):
    for b, pair in enumerate(rendered):
      ids, mask = pair[side]
      n = len(ids) - 1
      r = side * B + b
      out["inputs"][r, :n] = ids[:-1]
      out["targets"][r, :n] = ids[1:]
      out["loss_mask"][r, :n] = mask[1:]
      out["positions"][r, :n] = np.arange(n)
      out["segment_ids"][r, :n] = 1
  pair_mask = (np.arange(B) < real).astype(np.float32)
  out["pair_mask"] = np.concatenate([pair_mask, pair_mask])[:, None]  # [2B, 1]
  out["loss_mask"] *= out["pair_mask"]
  return out


class PairIterator:
  """Endless batches of ``batch_size`` train pairs (``2 * batch_size`` rows)."""

  def __init__(self, source, tok, *, batch_size: int, seq_len: int, seed: int):
    self.source, self.tok = source, tok
    self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
    self.max_tokens = min(source.max_tokens or seq_len + 1, seq_len + 1)
    self.indices = np.asarray(source.train_indices())
    if len(self.indices) == 0:
      raise DataError(f"data source {source.name!r} has no train pairs")
    self.epoch, self.position = 0, 0

  def _order(self, epoch):
    return np.random.default_rng([self.seed, epoch]).permutation(self.indices)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    chosen = []
    while len(chosen) < self.batch_size:
      order = self._order(self.epoch)
      take = order[self.position:self.position + self.batch_size - len(chosen)]
      chosen.extend(int(i) for i in take)
      self.position += len(take)
      if self.position >= len(order):
        self.epoch, self.position = self.epoch + 1, 0
    rendered = [render_pair(self.source.pair(i), self.tok, self.source.template,
                            self.max_tokens) for i in chosen]
    return pair_rows(rendered, self.seq_len, self.tok.pad_id)

  def get_state(self) -> dict:
    return {"epoch": self.epoch, "position": self.position}

  def set_state(self, state: dict) -> None:
    self.epoch, self.position = int(state["epoch"]), int(state["position"])


def eval_pair_batches(source, tok, *, batch_size: int, seq_len: int,
                      num_batches: int | None = None) -> list[dict]:
  """The held-out pairs in order, ``batch_size`` per batch (the last one padded)."""
  indices = [int(i) for i in source.heldout_indices()]
  if not indices:
    raise DataError(f"data source {source.name!r} holds no pairs out for evaluation; "
                    "give it more pairs or raise data.heldout_fraction")
  if num_batches:
    indices = indices[:num_batches * batch_size]
  max_tokens = min(source.max_tokens or seq_len + 1, seq_len + 1)
  batches = []
  for start in range(0, len(indices), batch_size):
    chunk = indices[start:start + batch_size]
    rendered = [render_pair(source.pair(i), tok, source.template, max_tokens)
                for i in chunk]
    real = len(rendered)
    rendered += [rendered[0]] * (batch_size - real)
    batches.append(pair_rows(rendered, seq_len, tok.pad_id, real))
  return batches
