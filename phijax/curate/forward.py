"""Batched forward passes over many documents with one model: mean-pooled hidden states
(phi-1's classifier features) and next-token logits after a prompt (a model annotator).

    fwd = Forward(loaded.cfg, loaded.params)
    X_NxD = fwd.embed(token_lists, max_tokens=256, batch_size=32, progress=cb)
    logits_NxV = fwd.next_logits(token_lists, batch_size=32)

Rows are sorted by length and padded to a power of two (at most ``max_tokens``), so a
corpus compiles a handful of shapes; padding sits at the end of a row, where a causal
model's earlier positions never see it, and is left out of the mean. The parameters
take the training sharding on this process's devices and rows are split over ``data``
(as ``phijax.model.decode.Generator`` places them), so a row's result does not depend
on its batch-mates or on the device count.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from phijax.model import decode, sharding
from phijax.model import transformer as model_lib
from phijax.model.config import as_model_config


class Forward:

  def __init__(self, model_cfg, params, *, mesh=None, rules=None):
    self.cfg = as_model_config(model_cfg)
    self.mesh = decode.default_mesh() if mesh is None else mesh
    self.rules = list(sharding.DEFAULT_RULES if rules is None else rules)
    self.model = model_lib.Transformer(self.cfg)
    shapes = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                    params)
    self.params = jax.device_put(params, sharding.logical_sharding(
        self.mesh, self.rules, model_lib.param_axes(self.cfg), shapes))
    self.divisor = sharding.batch_divisor(self.mesh, self.rules)
    self._rows = sharding.batch_sharding(self.mesh, self.rules)  # [batch, length]
    self._lengths = jax.sharding.NamedSharding(
        self.mesh, nn.logical_to_mesh_axes(("batch",), self.rules))
    self._pool = jax.jit(self._pool_fn)
    self._last = jax.jit(self._last_fn)

  def _pool_fn(self, params, tokens_BxT, lengths_B):
    x_BxTxD, _, _ = self.model.apply({"params": params}, tokens_BxT, head_inputs=True)
    mask_BxT = jnp.arange(tokens_BxT.shape[1])[None, :] < lengths_B[:, None]
    total_BxD = jnp.einsum("btd,bt->bd", x_BxTxD.astype(jnp.float32),
                           mask_BxT.astype(jnp.float32))
    return total_BxD / jnp.maximum(lengths_B, 1)[:, None].astype(jnp.float32)

  def _last_fn(self, params, tokens_BxT, lengths_B):
    logits = self.model.apply({"params": params}, tokens_BxT,
                              logits_at_B=jnp.maximum(lengths_B, 1) - 1)
    return logits[:, 0].astype(jnp.float32)

  def _map(self, fn, token_lists, *, max_tokens, batch_size, progress):
    """``fn`` over the rows' first ``max_tokens`` tokens, results in the order given."""
    cap = min(int(max_tokens), self.cfg.max_position_embeddings)
    rows = [list(t[:cap]) for t in token_lists]
    if any(not r for r in rows):
      raise ValueError(f"document {next(i for i, r in enumerate(rows) if not r)} has no "
                       "tokens")
    batch = max(self.divisor, -(-int(batch_size) // self.divisor) * self.divisor)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    out, done = None, 0
    with sharding.mesh_context(self.mesh), nn.logical_axis_rules(self.rules):
      for b in range(0, len(order), batch):
        idx = order[b:b + batch]
        T = decode.bucket(len(rows[idx[0]]), cap)
        tokens = np.zeros((batch, T), np.int32)
        lengths = np.zeros((batch,), np.int32)
        for j, i in enumerate(idx):
          tokens[j, :len(rows[i])] = rows[i]
          lengths[j] = len(rows[i])
        res = np.asarray(fn(self.params, jax.device_put(tokens, self._rows),
                            jax.device_put(lengths, self._lengths)))[:len(idx)]
        if out is None:
          out = np.zeros((len(rows),) + res.shape[1:], np.float32)
        out[idx] = res
        done += len(idx)
        if progress:
          progress(done, len(rows))
    return out if out is not None else np.zeros((0, self.cfg.hidden_size), np.float32)

  def embed(self, token_lists, *, max_tokens: int = 256, batch_size: int = 32,
            progress=None) -> np.ndarray:
    """``[N, hidden]`` float32: each document's final hidden states (after the final
    norm) averaged over its first ``max_tokens`` tokens."""
    return self._map(self._pool, token_lists, max_tokens=max_tokens,
                     batch_size=batch_size, progress=progress)

  def next_logits(self, token_lists, *, batch_size: int = 32,
                  progress=None) -> np.ndarray:
    """``[N, vocab]`` float32: the logits after each row's last token (a row must fit
    the model's positions: the caller truncates, keeping what matters)."""
    too_long = [i for i, t in enumerate(token_lists)
                if len(t) > self.cfg.max_position_embeddings]
    if too_long:
      raise ValueError(f"row {too_long[0]} has {len(token_lists[too_long[0]])} tokens; "
                       f"the model takes {self.cfg.max_position_embeddings}")
    return self._map(self._last, token_lists, max_tokens=self.cfg.max_position_embeddings,
                     batch_size=batch_size, progress=progress)
