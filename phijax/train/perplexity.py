"""Held-out loss, perplexity and bits per byte: the training loop's evaluation, usable
on any model (``python -m phijax.evaluate --task=bpb``), and the same loss by position
bucket (``--task=positions``: where a model breaks past the length it was trained at).

Bits per byte divides the summed negative log-likelihood (in bits) by the UTF-8 bytes
of the target tokens, so models with different tokenizers compare; perplexity is per
token of this model's tokenizer. The gzip -9 bits per byte of exactly the bytes scored
(``scored_bytes``) is the baseline a model has to beat.
"""

from __future__ import annotations

import gzip
import math

import jax
import jax.numpy as jnp
import numpy as np

from phijax import data
from phijax.model import sharding
from phijax.train.step import device_batch

EVAL_KEYS = ("inputs", "targets", "positions", "segment_ids", "loss_mask", "bytes")


def gzip_bits_per_byte(raw: bytes) -> float:
  return 8.0 * len(gzip.compress(raw, 9)) / max(1, len(raw))


def scored_bytes(batches, tok) -> bytes:
  """The bytes an evaluation over ``batches`` scores, in order: each target token with
  ``loss_mask`` > 0 as ``tok.piece_bytes``, so ``len`` equals the bits-per-byte
  denominator (the batches' ``bytes`` summed). The gzip baseline compresses these,
  so model and gzip are measured on the same text at any number of batches."""
  pieces = tok.piece_bytes
  out = []
  for b in batches:
    targets, mask = np.asarray(b["targets"]), np.asarray(b["loss_mask"]) > 0
    out.extend(pieces[i] for i in targets[mask].tolist())
  return b"".join(out)


def evaluate(fns, params, batches) -> dict:
  """Sums ``fns.eval_step`` (``phijax.train.step.build``) over ``batches``."""
  sums = {"nll_sum": 0.0, "tokens": 0.0, "bytes": 0.0}
  n = 0
  for n, b in enumerate(batches, 1):
    out = fns.eval_step(params, device_batch(b, fns.batch_sharding, keys=EVAL_KEYS))
    for k in sums:
      sums[k] += float(out[k])
  loss = sums["nll_sum"] / max(sums["tokens"], 1.0)
  return {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50.0)),
          "eval_bpb": sums["nll_sum"] / math.log(2) / max(sums["bytes"], 1.0),
          "eval_tokens": int(sums["tokens"]), "eval_bytes": int(sums["bytes"]),
          "eval_batches": n}


def eval_fns(model_cfg, batch_size: int, mesh=None, rules=None):
  """The training loop's step functions (its eval step) on this process's devices:
  as many on the ``data`` axis as divide ``batch_size``."""
  import optax
  from phijax.train.step import build
  if mesh is None:
    n = len(jax.local_devices())
    ways = max(d for d in range(1, n + 1) if n % d == 0 and batch_size % d == 0)
    devices = np.asarray(jax.local_devices()[:ways]).reshape(ways, 1, 1)
    mesh = jax.sharding.Mesh(devices, sharding.MESH_AXES)
  rules = sharding.DEFAULT_RULES if rules is None else rules
  return build(model_cfg, optax.identity(), mesh, rules)


def evaluate_heldout(model_cfg, params, tok, cfg_data, *, batch_size: int,
                     num_batches: int | None = None, sources=None) -> dict:
  """Scores over the held-out split of ``cfg_data``'s sources (default: those with
  weight > 0, as training), plus each source alone when there are several, and the
  gzip baseline on the bytes scored. Returns the scores, ``sources`` and ``per_source``
  rows."""
  if tok.vocab_size > model_cfg.vocab_size:
    raise ValueError(f"the tokenizer has {tok.vocab_size} tokens, the model only "
                     f"{model_cfg.vocab_size}")
  names = list(sources) if sources else list(data.source_weights(cfg_data))
  unknown = [n for n in names if n not in cfg_data.sources]
  if unknown:
    raise ValueError(f"no data source {unknown[0]!r} in the config; sources there: "
                     f"{', '.join(cfg_data.sources)}")
  data.check_heldout(cfg_data, names)
  fns = eval_fns(model_cfg, batch_size)
  params = jax.device_put(params, fns.state_shardings.params)

  def score(which):
    batches = data.make_eval_batches(cfg_data, tok, batch_size=batch_size,
                                     num_batches=num_batches, process_index=0,
                                     process_count=1, sources=which)
    ev = evaluate(fns, params, batches)
    ev["gzip_bpb"] = gzip_bits_per_byte(scored_bytes(batches, tok))
    return ev

  total = score(names)
  per_source = [{"source": names[0], **total}] if len(names) == 1 else [
      {"source": n, **score([n])} for n in names]
  return {**total, "sources": names, "per_source": per_source}


def position_sums(model_cfg, width: int, num_buckets: int):
  """A jitted ``(params, batch) -> [3, num_buckets]``: the summed nll, target tokens
  and target bytes (``loss_mask`` > 0) by bucket ``position // width`` of the position
  the model sees each input at (the last bucket takes any position past its end)."""
  from phijax.model import Transformer, head_loss
  model = Transformer(model_cfg)

  def sums(params, batch):
    x, w, b = model.apply({"params": params}, batch["inputs"], batch["positions"],
                          batch["segment_ids"], head_inputs=True)
    nll = head_loss.token_nll(x, w, b, batch["targets"])  # no [B, T, V] logits
    mask = (batch["loss_mask"] > 0).astype(jnp.float32)
    bucket = jnp.minimum(batch["positions"] // width, num_buckets - 1).reshape(-1)
    by_bucket = lambda v: jax.ops.segment_sum(v.reshape(-1), bucket, num_buckets)
    return jnp.stack([by_bucket(nll * mask), by_bucket(mask),
                      by_bucket(batch["bytes"].astype(jnp.float32) * mask)])

  return jax.jit(sums)


def loss_by_position(model_cfg, params, batches, width: int) -> list[dict]:
  """One row per bucket of ``width`` positions, ``[0, width)``, ``[width, 2 width)``, ...
  up to the row length: ``start``, ``end``, ``tokens``, ``loss`` (nats per token) and
  ``bpb``, over ``batches`` (``make_eval_batches``; positions restart at each
  document, so a bucket holds the tokens that far into their document). Buckets
  without a scored token have ``loss`` and ``bpb`` None."""
  if not batches:
    raise ValueError("no held-out batches to score")
  seq_len = int(np.asarray(batches[0]["inputs"]).shape[1])
  k = -(-seq_len // width)
  fn = position_sums(model_cfg, width, k)
  params = jax.device_put(params)
  totals = np.zeros((3, k), np.float64)
  for b in batches:
    totals += np.asarray(fn(params, {key: jnp.asarray(b[key]) for key in EVAL_KEYS}))
  rows = []
  for i, (nll, n, nbytes) in enumerate(totals.T):
    rows.append({"start": i * width, "end": min((i + 1) * width, seq_len), "tokens": int(n),
                 "loss": nll / n if n else None,
                 "bpb": nll / math.log(2) / nbytes if nbytes else None})
  return rows
