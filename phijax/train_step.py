"""Train state, the jitted train step and the eval step (pure functions).

    state, metrics = train_step(state, batch, lr)

``batch`` holds ``[B, L]`` arrays ``inputs``, ``targets``, ``positions``,
``segment_ids``, ``loss_mask``; ``lr`` is the host curriculum's learning rate. The
loss is the masked mean over the whole batch; with ``microbatches > 1`` gradients of
the summed loss are accumulated over micro-batches and divided once by the total
mask, so accumulation equals one big batch. A step whose loss or gradient is not
finite leaves the state unchanged and is counted.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec as P

from phijax import losses, sharding
from phijax.model import Transformer

BATCH_DTYPES = {"inputs": jnp.int32, "targets": jnp.int32, "positions": jnp.int32,
                "segment_ids": jnp.int32, "loss_mask": jnp.float32}
BATCH_KEYS = tuple(BATCH_DTYPES)
# DPO batches (phijax.data.preferences) also mark their real pairs: [2B, 1].
PAIR_KEYS = BATCH_KEYS + ("pair_mask",)
OBJECTIVES = ("lm", "dpo")


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer updates applied
  params: Any
  opt_state: Any
  rng: jax.Array  # raw uint32 PRNG key (checkpointable)
  nonfinite_streak: jax.Array  # consecutive skipped (non-finite) steps
  skipped: jax.Array  # skipped steps in total


def _opt_state_shardings(opt_shapes, param_shapes, param_shardings, mesh):
  """Optimizer-state leaves that mirror a parameter (Adam moments) take its sharding;
  counters and scalars are replicated. Matched by tree-path suffix and shape."""
  by_path = {}
  flat_p = jax.tree_util.tree_flatten_with_path(param_shapes)[0]
  flat_s = jax.tree_util.tree_leaves(param_shardings)
  for (path, shape), shard in zip(flat_p, flat_s):
    by_path[sharding.path_names(path)] = (shape.shape, shard)

  def pick(path, leaf):
    key = sharding.path_names(path)
    for n in range(len(key)):
      hit = by_path.get(key[n:])
      if hit is not None and hit[0] == leaf.shape:
        return hit[1]
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(pick, opt_shapes)


@dataclasses.dataclass
class StepFns:
  """Everything compiled for one (config, mesh)."""
  model: Transformer
  tx: optax.GradientTransformation
  state_shardings: TrainState
  batch_sharding: NamedSharding
  init: Any  # rng -> TrainState (sharded)
  compile_train_step: Any  # (rows, cols) -> AOT-compiled train_step for that shape
  train_step: Any  # (state, batch, lr) -> (state, metrics)
  eval_step: Any  # (params, batch) -> sums
  mesh: Any
  rules: Any


def build(model_cfg, tx, mesh, rules, *, microbatches: int = 1, z_loss: float = 0.0,
          seed: int = 0, objective: str = "lm", dpo_beta: float = 0.1) -> StepFns:
  """The step functions. ``objective="dpo"``: batches of preference pairs
  (``phijax.data.preferences``), and ``train_step(state, batch, lr, ref_params)``
  takes the frozen reference model's parameters (sharded like ``params``)."""
  if objective not in OBJECTIVES:
    raise ValueError(f"train.objective={objective!r}; choose one of {OBJECTIVES}")
  if objective == "dpo" and microbatches > 1:
    raise ValueError("train.objective='dpo' does not take train.microbatches > 1 yet "
                     "(a micro-batch would split chosen rows from their rejected ones)")
  model = Transformer(model_cfg)
  rules = list(rules)
  dummy = jnp.zeros((1, 8), jnp.int32)

  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), dummy))["params"]
  param_specs = nn.get_partition_spec(boxed)
  param_shapes = nn.unbox(boxed)
  param_shardings = sharding.logical_sharding(mesh, rules, param_specs, param_shapes)
  opt_shapes = jax.eval_shape(tx.init, param_shapes)
  rep = NamedSharding(mesh, P())
  state_shardings = TrainState(
      step=rep, params=param_shardings,
      opt_state=_opt_state_shardings(opt_shapes, param_shapes, param_shardings, mesh),
      rng=rep, nonfinite_streak=rep, skipped=rep)
  batch_sharding = sharding.batch_sharding(mesh, rules)

  def init(rng):
    params = nn.unbox(model.init(rng, dummy)["params"])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params),
                      rng=jax.random.PRNGKey(seed),
                      nonfinite_streak=jnp.zeros((), jnp.int32),
                      skipped=jnp.zeros((), jnp.int32))

  def lm_sums(params, batch, rng, ref_params):
    del ref_params
    logits = model.apply({"params": params}, batch["inputs"], batch["positions"],
                         batch["segment_ids"], deterministic=False, rngs={"dropout": rng})
    nll, objective = losses.token_losses(logits, batch["targets"], z_loss)
    mask = batch["loss_mask"]
    return losses.masked_sum(objective, mask), {
        "nll_sum": losses.masked_sum(nll, mask), "count": jnp.sum(mask.astype(jnp.float32))}

  def dpo_sums(params, batch, rng, ref_params, deterministic=False):
    """Summed DPO loss over the real pairs, and its metrics' sums ("nll_sum" is the
    loss: the step reports it as ``loss``)."""
    def logprobs(p, det, rngs=None):
      logits = model.apply({"params": p}, batch["inputs"], batch["positions"],
                           batch["segment_ids"], deterministic=det, rngs=rngs)
      return losses.sequence_logprobs(logits, batch["targets"], batch["loss_mask"])

    logp = logprobs(params, deterministic, None if deterministic else {"dropout": rng})
    ref = jax.lax.stop_gradient(logprobs(ref_params, True))
    B = logp.shape[0] // 2
    w = batch["pair_mask"][:B, 0]
    per_pair, m = losses.dpo_loss(logp[:B], logp[B:], ref[:B], ref[B:], dpo_beta)
    total = jnp.sum(per_pair * w)
    return total, {"nll_sum": total, "count": jnp.sum(w),
                   "reward_margin": jnp.sum(m["reward_margin"] * w),
                   "reward_accuracy": jnp.sum(m["reward_accuracy"] * w)}

  loss_sums = dpo_sums if objective == "dpo" else lm_sums

  grad_fn = jax.value_and_grad(loss_sums, has_aux=True)

  def train_step(state: TrainState, batch, lr, ref_params=None):
    rng = jax.random.fold_in(state.rng, state.step)
    if microbatches == 1:
      (_, aux), grads = grad_fn(state.params, batch, rng, ref_params)
      nll_sum, count = aux["nll_sum"], aux["count"]
    else:
      aux = {}
      micro = jax.tree_util.tree_map(
          lambda x: x.reshape(microbatches, x.shape[0] // microbatches, *x.shape[1:]), batch)

      def body(carry, xs):
        g_acc, nll_acc, n_acc = carry
        mb, i = xs
        (_, a), g = grad_fn(state.params, mb, jax.random.fold_in(rng, i), ref_params)
        nll, n = a["nll_sum"], a["count"]
        return (jax.tree_util.tree_map(jnp.add, g_acc, g), nll_acc + nll, n_acc + n), None

      zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
      (grads, nll_sum, count), _ = jax.lax.scan(
          body, (zeros, jnp.zeros(()), jnp.zeros(())), (micro, jnp.arange(microbatches)))
    denom = jnp.maximum(count, 1.0)
    grads = jax.tree_util.tree_map(lambda g: g / denom, grads)
    loss = nll_sum / denom
    grad_norm = optax.tree.norm(grads)
    direction, opt_state = tx.update(grads, state.opt_state, state.params)
    params = jax.tree_util.tree_map(lambda p, d: p + lr * d.astype(p.dtype),
                                    state.params, direction)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree_util.tree_map(
        lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = state.replace(
        step=state.step + finite.astype(jnp.int32),
        params=keep(params, state.params), opt_state=keep(opt_state, state.opt_state),
        nonfinite_streak=jnp.where(finite, 0, state.nonfinite_streak + 1),
        skipped=state.skipped + (~finite).astype(jnp.int32))
    metrics = {"loss": loss, "grad_norm": grad_norm, "loss_tokens": count,
               "nonfinite": (~finite).astype(jnp.int32),
               "nonfinite_streak": new_state.nonfinite_streak,
               # the objective's own metrics (DPO's rewards), as means
               **{k: v / denom for k, v in aux.items() if k not in ("nll_sum", "count")}}
    return new_state, metrics

  def eval_step(params, batch):
    logits = model.apply({"params": params}, batch["inputs"], batch["positions"],
                         batch["segment_ids"])
    nll, _ = losses.token_losses(logits, batch["targets"])
    mask = batch["loss_mask"]
    return {"nll_sum": losses.masked_sum(nll, mask),
            "tokens": jnp.sum(mask.astype(jnp.float32)),
            "bytes": jnp.sum(batch["bytes"].astype(jnp.float32))}

  def dpo_eval_step(params, batch, ref_params):
    _, sums = dpo_sums(params, batch, None, ref_params, deterministic=True)
    return sums

  ref_shardings = (param_shardings,) if objective == "dpo" else ()
  jit_init = jax.jit(init, out_shardings=state_shardings)
  jit_train = jax.jit(train_step,
                      in_shardings=(state_shardings, batch_sharding, None, *ref_shardings),
                      out_shardings=(state_shardings, None), donate_argnums=(0,))
  eval_batch_sharding = batch_sharding
  if objective == "dpo":
    jit_eval = jax.jit(dpo_eval_step, in_shardings=(param_shardings, eval_batch_sharding,
                                                    param_shardings), out_shardings=None)
  else:
    jit_eval = jax.jit(eval_step, in_shardings=(param_shardings, eval_batch_sharding),
                       out_shardings=None)

  def in_context(f):
    def wrapped(*a, **k):
      with sharding.mesh_context(mesh), nn.logical_axis_rules(rules):
        return f(*a, **k)
    wrapped.jitted = f
    return wrapped

  def compile_train_step(rows: int, cols: int):
    """Ahead-of-time compile for one batch shape (one sequence-length bucket)."""
    state_abs = jax.tree_util.tree_map(
        lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
        jax.eval_shape(init, jax.random.key(0)), state_shardings)
    batch_abs = {k: jax.ShapeDtypeStruct((rows, cols), dt, sharding=batch_sharding)
                 for k, dt in BATCH_DTYPES.items()}
    extra = ()
    if objective == "dpo":  # the pair mask, and the reference model's parameters
      batch_abs["pair_mask"] = jax.ShapeDtypeStruct((rows, 1), jnp.float32,
                                                    sharding=batch_sharding)
      extra = (state_abs.params,)
    with sharding.mesh_context(mesh), nn.logical_axis_rules(rules):
      return jit_train.lower(state_abs, batch_abs, jax.ShapeDtypeStruct((), jnp.float32),
                             *extra).compile()

  return StepFns(model=model, tx=tx, state_shardings=state_shardings,
                 batch_sharding=batch_sharding, init=in_context(jit_init),
                 compile_train_step=compile_train_step,
                 train_step=in_context(jit_train), eval_step=in_context(jit_eval),
                 mesh=mesh, rules=rules)


def device_batch(batch: dict, batch_sharding, keys=BATCH_KEYS):
  """Host numpy global batch -> global sharded jax arrays.

  Every process holds the same global batch (the rows one process alone would
  train on, in the same order) and puts on its own devices only the shards they
  hold, whatever the mesh layout: N processes then train exactly as one does.
  """
  out = {}
  for k in keys:
    if k in batch:
      x = np.asarray(batch[k], dtype=BATCH_DTYPES.get(k, None))
      out[k] = jax.make_array_from_callback(x.shape, batch_sharding, x.__getitem__)
  return out
