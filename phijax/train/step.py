"""Train state, the jitted train step and the eval step (pure functions).

    state, metrics = train_step(state, batch, lr)

``batch`` holds ``[B, L]`` arrays ``inputs``, ``targets``, ``positions``,
``segment_ids``, ``loss_mask``; ``lr`` is the host curriculum's learning rate. The
loss is the masked mean over the whole batch; with ``microbatches > 1`` gradients of
the summed loss are accumulated over micro-batches and divided once by the total
mask, so accumulation equals one big batch. A step whose loss or gradient is not
finite leaves the state unchanged and is counted.

``token_selection`` in (0, 1] (Rho-1's selective language modelling, Lin et al. 2024):
``train_step(state, batch, lr, ref_params)`` scores every token by how much its loss
exceeds a frozen reference model's and trains on the top fraction only (``slm_sums``;
with micro-batches, each micro-batch keeps its own top fraction). 0 compiles the plain
step, the same program as before the switch existed. ``token_selection_by="random"``
is its control: the same fraction of the valid tokens, drawn uniformly at random each
step (``random_selection``, keyed by the step's ``fold_in(rng, step)``, so seeded by
``train.seed`` and different every step), with no reference model.
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec as P

from phijax.model import head_loss
from phijax.train import losses, optim
from phijax.model import sharding, Transformer

BATCH_DTYPES = {"inputs": jnp.int32, "targets": jnp.int32, "positions": jnp.int32,
                "segment_ids": jnp.int32, "loss_mask": jnp.float32}
BATCH_KEYS = tuple(BATCH_DTYPES)
# DPO batches (phijax.data.preferences) also mark their real pairs: [2B, 1].
PAIR_KEYS = BATCH_KEYS + ("pair_mask",)
OBJECTIVES = ("lm", "dpo")
SELECTIONS = ("excess", "random")  # token_selection_by: Rho-1's score, or its control


def select_top(scores_BxT, valid_BxT, ratio: float):
  """1.0 on the ``ceil(ratio * n)`` of the ``n`` valid tokens with the highest scores
  (at least one), 0.0 elsewhere; invalid tokens are never selected.

  Over the whole ``[B, T]`` array, whatever its sharding (GSPMD gathers it for the
  sort). Ties go to the earlier token in row-major order, so the choice is
  deterministic.
  """
  valid = valid_BxT.reshape(-1)
  # Invalid tokens sort last: their key is +inf (a valid token's is -score, finite).
  key = jnp.where(valid, -scores_BxT.reshape(-1).astype(jnp.float32), jnp.inf)
  order = jnp.argsort(key, stable=True)  # stable: ties keep the row-major order
  rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.size, dtype=order.dtype))
  k = selected_count(jnp.sum(valid.astype(jnp.int32)), ratio)
  return ((rank < k) & valid).astype(jnp.float32).reshape(scores_BxT.shape)


def random_selection(rng, valid_BxT, ratio: float):
  """``select_top`` of uniform random scores: exactly as many valid tokens as Rho-1
  would keep, drawn uniformly without replacement, from ``rng`` (the train step's key
  for this step and micro-batch; folded with 1 so the draw is not dropout's)."""
  scores = jax.random.uniform(jax.random.fold_in(rng, 1), valid_BxT.shape)
  return select_top(scores, valid_BxT, ratio)


def selected_count(n, ratio: float):
  """``max(ceil(ratio * n), 1)`` for an int32 token count ``n``, exactly: ``ratio`` is
  read as the nearest fraction p/q with q <= 10,000 and the count computed in int32
  without overflow (in floats ``0.7 * 10`` is 7.000000000000001, and ceil gives 8)."""
  frac = fractions.Fraction(ratio).limit_denominator(10_000)
  p, q = frac.numerator, frac.denominator
  return jnp.maximum((n // q) * p + ((n % q) * p + q - 1) // q, 1)


def metric_mean(value, denom):
  """An objective's metric from its summed value: divided by the step's ``count``
  (``denom``), or a ``(sum, denominator)`` pair for one with a denominator of its own
  (Rho-1's loss over all tokens, while ``count`` is the selected tokens)."""
  if isinstance(value, tuple):
    total, own = value
    return total / jnp.maximum(own, 1.0)
  return value / denom


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
  lower_train_step: Any  # (rows, cols) -> the train step lowered for that shape (HLO)
  mesh: Any
  rules: Any
  # DPO and Rho-1: train_step takes the frozen reference's parameters, sharded as params
  takes_reference: bool = False


def build(model_cfg, tx, mesh, rules, *, microbatches: int = 1, z_loss: float = 0.0,
          seed: int = 0, objective: str = "lm", dpo_beta: float = 0.1,
          token_selection: float = 0.0, token_selection_by: str = "excess",
          trainable=None) -> StepFns:
  """The step functions. ``trainable`` (``optim.trainable``): ``params -> tree of
  bools``; only the trained parameters' gradients are computed (frozen ones, e.g. a
  LoRA model's base, are constants of the differentiated loss), the logged
  ``grad_norm`` (and the non-finite check) covers them only, and frozen parameters are
  passed through the update untouched (their bytes stay as they were).
  ``objective="dpo"``: batches of preference pairs (``phijax.data.preferences``), and
  ``train_step(state, batch, lr, ref_params)`` takes the frozen reference model's
  parameters (sharded like ``params``).
  ``token_selection`` > 0 (``lm`` only): the step takes the reference's parameters
  the same way and trains on that fraction of the tokens (``slm_sums``);
  ``token_selection_by="random"`` draws that fraction at random and takes no reference."""
  if objective not in OBJECTIVES:
    raise ValueError(f"train.objective={objective!r}; choose one of {OBJECTIVES}")
  if objective == "dpo" and microbatches > 1:
    raise ValueError("train.objective='dpo' does not take train.microbatches > 1 yet "
                     "(a micro-batch would split chosen rows from their rejected ones)")
  if not 0.0 <= token_selection <= 1.0:
    raise ValueError(f"train.token_selection={token_selection} is the fraction of tokens "
                     "kept: 0 (off) or a value in (0, 1]")
  if token_selection and objective != "lm":
    raise ValueError(f"train.token_selection selects tokens of the language-modelling "
                     f"loss; it does not take train.objective={objective!r}")
  if token_selection_by not in SELECTIONS:
    raise ValueError(f"train.token_selection_by={token_selection_by!r}; choose one of "
                     f"{SELECTIONS}")
  by_excess = token_selection > 0 and token_selection_by == "excess"
  takes_reference = objective == "dpo" or by_excess
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
    # The head and its cross entropy a chunk of positions at a time, gradients made
    # in the same pass (phijax.model.head_loss): no [B, T, V] logits in memory.
    x, w, b = model.apply({"params": params}, batch["inputs"], batch["positions"],
                          batch["segment_ids"], deterministic=False, rngs={"dropout": rng},
                          head_inputs=True)
    mask = batch["loss_mask"]
    objective, nll_sum = head_loss.head_loss_sums(x, w, b, batch["targets"], mask, z_loss)
    return objective, {"nll_sum": nll_sum, "count": jnp.sum(mask.astype(jnp.float32))}

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

  def slm_sums(params, batch, rng, ref_params):
    """Rho-1: the summed loss over the selected tokens, those whose loss most exceeds
    the reference model's (``select_top``), and its metrics' sums. The excess reads the
    same (dropout) forward the loss does; the reference runs without dropout. Token
    scores come from the head's forward by chunks (``head_loss.token_nll``), and the
    loss from ``head_loss_sums`` with the selection as its weights: no ``[B, T, V]``
    logits, for either model. ``token_selection_by="random"``: a random selection of
    the same size (``random_selection``) and no reference forward."""
    x, w, b = model.apply({"params": params}, batch["inputs"], batch["positions"],
                          batch["segment_ids"], deterministic=False, rngs={"dropout": rng},
                          head_inputs=True)
    nll = head_loss.token_nll(x, w, b, batch["targets"])
    mask = batch["loss_mask"].astype(jnp.float32)
    valid = mask > 0
    excess = None
    if by_excess:
      ref_nll = head_loss.token_nll(
          *model.apply({"params": ref_params}, batch["inputs"], batch["positions"],
                       batch["segment_ids"], deterministic=True, head_inputs=True),
          batch["targets"])
      # The model's head forward runs twice (scores here, the loss with its gradients
      # below): selection needs every token's score before any loss, and the recompute
      # costs one head matmul where keeping the logits would cost [B, T, V] floats.
      excess = nll - ref_nll
      selected = select_top(excess, valid, token_selection)
    else:
      selected = random_selection(rng, valid, token_selection)
    weight = mask * selected  # the loss mask's weights, on the selected tokens only
    objective, nll_sum = head_loss.head_loss_sums(x, w, b, batch["targets"], weight, z_loss)
    sums = {
        "nll_sum": nll_sum, "count": jnp.sum(weight),
        # Own denominators (metric_mean): comparable with a plain LM run's loss.
        "lm_loss": (losses.masked_sum(nll, mask), jnp.sum(mask)),
        "selected_fraction": (jnp.sum(selected), jnp.sum(valid.astype(jnp.float32)))}
    if excess is not None:
      sums["excess_loss"] = losses.masked_sum(excess, weight)
    return objective, sums

  if objective == "dpo":
    loss_sums = dpo_sums
  else:
    loss_sums = slm_sums if token_selection else lm_sums

  # Gradients of the trained leaves only (all of them without a trainable mask).
  grad_fn = optim.value_and_trained_grad(loss_sums, trainable)
  trained = functools.partial(optim.trained_leaves, trainable)

  def train_step(state: TrainState, batch, lr, ref_params=None):
    rng = jax.random.fold_in(state.rng, state.step)
    if microbatches == 1:
      (_, aux), grads = grad_fn(state.params, batch, rng, ref_params)
      aux = dict(aux)
      nll_sum, count = aux.pop("nll_sum"), aux.pop("count")
    else:
      micro = jax.tree_util.tree_map(
          lambda x: x.reshape(microbatches, x.shape[0] // microbatches, *x.shape[1:]), batch)

      def body(carry, xs):
        g_acc, nll_acc, n_acc, aux_acc = carry
        mb, i = xs
        (_, a), g = grad_fn(state.params, mb, jax.random.fold_in(rng, i), ref_params)
        a = dict(a)
        nll, n = a.pop("nll_sum"), a.pop("count")
        return (jax.tree_util.tree_map(jnp.add, g_acc, g), nll_acc + nll, n_acc + n,
                jax.tree_util.tree_map(jnp.add, aux_acc, a)), None

      # The objective's other sums add up over micro-batches too (the plain LM
      # objective has none: its carry, and program, stay as they were).
      first = jax.tree_util.tree_map(lambda x: x[0], micro)
      extra = dict(jax.eval_shape(loss_sums, state.params, first, rng, ref_params)[1])
      del extra["nll_sum"], extra["count"]
      zeros = jax.tree_util.tree_map(jnp.zeros_like, trained(state.params))
      (grads, nll_sum, count, aux), _ = jax.lax.scan(
          body, (zeros, jnp.zeros(()), jnp.zeros(()),
                 jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), extra)),
          (micro, jnp.arange(microbatches)))
    denom = jnp.maximum(count, 1.0)
    grads = jax.tree_util.tree_map(lambda g: g / denom, grads)
    loss = nll_sum / denom
    # Frozen parameters have no gradient: neither the logged norm nor the non-finite
    # check counts them (the direction's own clip does not see them either).
    grad_norm = optax.tree.norm(grads)
    direction, opt_state = tx.update(
        optim.with_frozen_zeros(trainable, state.params, grads), state.opt_state,
        state.params)
    params = optim.apply_direction(trainable, state.params, direction, lr)
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
               # the objective's own metrics (DPO's rewards, Rho-1's), as means
               **{k: metric_mean(v, denom) for k, v in aux.items()}}
    return new_state, metrics

  def eval_step(params, batch):
    x, w, b = model.apply({"params": params}, batch["inputs"], batch["positions"],
                          batch["segment_ids"], head_inputs=True)
    nll = head_loss.token_nll(x, w, b, batch["targets"])  # no [B, T, V] logits
    mask = batch["loss_mask"]
    return {"nll_sum": losses.masked_sum(nll, mask),
            "tokens": jnp.sum(mask.astype(jnp.float32)),
            "bytes": jnp.sum(batch["bytes"].astype(jnp.float32))}

  def dpo_eval_step(params, batch, ref_params):
    _, sums = dpo_sums(params, batch, None, ref_params, deterministic=True)
    return sums

  ref_shardings = (param_shardings,) if takes_reference else ()
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

  def lower_train_step(rows: int, cols: int):
    """The train step lowered for one batch shape, ready to compile."""
    state_abs = jax.tree_util.tree_map(
        lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
        jax.eval_shape(init, jax.random.key(0)), state_shardings)
    batch_abs = {k: jax.ShapeDtypeStruct((rows, cols), dt, sharding=batch_sharding)
                 for k, dt in BATCH_DTYPES.items()}
    if objective == "dpo":  # the pair mask
      batch_abs["pair_mask"] = jax.ShapeDtypeStruct((rows, 1), jnp.float32,
                                                    sharding=batch_sharding)
    extra = (state_abs.params,) if takes_reference else ()  # the reference's parameters
    with sharding.mesh_context(mesh), nn.logical_axis_rules(rules):
      return jit_train.lower(state_abs, batch_abs, jax.ShapeDtypeStruct((), jnp.float32),
                             *extra)

  def compile_train_step(rows: int, cols: int):
    """Ahead-of-time compile for one batch shape (one sequence-length bucket)."""
    with sharding.mesh_context(mesh), nn.logical_axis_rules(rules):
      return lower_train_step(rows, cols).compile()

  return StepFns(model=model, tx=tx, state_shardings=state_shardings,
                 batch_sharding=batch_sharding, init=in_context(jit_init),
                 compile_train_step=compile_train_step,
                 train_step=in_context(jit_train), eval_step=in_context(jit_eval),
                 lower_train_step=lower_train_step, mesh=mesh, rules=rules,
                 takes_reference=takes_reference)


def random_batch(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> dict:
  """A host batch of uniform random tokens, one document per row, every target
  counted: what benchmarks and tests feed a step when the data is not the point."""
  rng = np.random.default_rng(seed)
  shape = (batch_size, seq_len)
  return {"inputs": rng.integers(0, vocab_size, shape, dtype=np.int32),
          "targets": rng.integers(0, vocab_size, shape, dtype=np.int32),
          "positions": np.tile(np.arange(seq_len, dtype=np.int32), (batch_size, 1)),
          "segment_ids": np.ones(shape, np.int32), "loss_mask": np.ones(shape, np.float32)}


def device_batch(batch: dict, batch_sharding, keys=BATCH_KEYS, rows=None,
                 global_rows: int | None = None):
  """Host numpy batch -> global sharded jax arrays.

  Without ``rows`` the batch is the whole global batch (every process builds the rows
  one process alone would train on, in the same order) and each process puts on its
  own devices only the shards they hold. With ``rows`` (sorted global row indices)
  the batch holds only those rows of a ``global_rows``-row global batch (this host's
  share, ``phijax.data.hosts``): they must cover what this process's devices hold.
  Either way N processes train exactly as one does, whatever the mesh layout.
  """
  out = {}
  local = None if rows is None else {int(r): i for i, r in enumerate(rows)}
  for k in keys:
    if k in batch:
      x = np.asarray(batch[k], dtype=BATCH_DTYPES.get(k, None))
      if local is None:
        out[k] = jax.make_array_from_callback(x.shape, batch_sharding, x.__getitem__)
      else:
        out[k] = jax.make_array_from_callback(
            (global_rows, *x.shape[1:]), batch_sharding,
            functools.partial(_local_rows, x, local, global_rows))
  return out


def _local_rows(x, local: dict, global_rows: int, index):
  """The block ``index`` of the global batch from the rows this host holds."""
  try:
    picked = [local[r] for r in range(global_rows)[index[0]]]
  except KeyError as e:
    raise ValueError(f"device_batch: this process's devices hold global row {e.args[0]}, "
                     f"which its batch (rows {sorted(local)[:8]}...) does not have: the "
                     "rows were assigned for another mesh") from None
  return x[picked][(slice(None), *index[1:])]
