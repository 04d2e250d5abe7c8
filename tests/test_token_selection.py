"""``train.token_selection`` (Rho-1, Lin et al. 2024): the step's loss and gradients
against a brute-force numpy selection of the tokens whose loss most exceeds the
reference model's (per micro-batch too); ratio 1 is plain language modelling; off
compiles the plain step; the random-selection control (``token_selection_by="random"``:
the same count, seeded, drawn anew each step); the settings' errors; and a real run
against a reference directory, resumed from a checkpoint bit for bit."""

import functools
import json
import math
import os
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from ml_collections import ConfigDict

from phijax import config as base, data, train
from phijax.train import objectives, optim
from phijax.model import params_io, sharding
from phijax.config_files import ConfigError
from phijax.model import Transformer, abstract_params
from phijax.model.config import ModelConfig
from phijax.train.step import (build, device_batch, random_batch, random_selection,
                               select_top)

CFG = ModelConfig(arch="phi", vocab_size=300, hidden_size=32, num_layers=1, num_heads=4,
                  intermediate_size=64, max_position_embeddings=64)
B, L = 4, 16


@functools.cache
def _fns(ratio=0.0, microbatches=1, by="excess", seed=0):
  # SGD without momentum, decay or clipping at lr 1: the update is minus the gradient.
  opt = ConfigDict(base.default().optim.to_dict())
  opt.update(name="sgd", b1=0.0, weight_decay=0.0, clip=0.0)
  mesh = sharding.make_mesh(ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])
  return build(CFG, optim.make_direction(opt), mesh, sharding.DEFAULT_RULES,
               microbatches=microbatches, token_selection=ratio, token_selection_by=by,
               seed=seed)


def _random_params(seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype),
                      nn.unbox(abstract_params(CFG)))


@pytest.fixture(scope="module")
def models():
  """A model and an unrelated reference: their per-token losses differ every way."""
  return _random_params(0), _random_params(1)


def _batch(loss_mask=None):
  mask = (np.random.default_rng(1).random((B, L)) < 0.7).astype(np.float32)
  mask[3] = 0.0  # a row with nothing to learn: its tokens are never selected
  return {**random_batch(B, L, 300), "loss_mask": mask if loss_mask is None else loss_mask}


@jax.jit
def _token_nll(params, batch):
  """Per-token -log p(target) of a plain forward."""
  logits = Transformer(CFG).apply({"params": params}, batch["inputs"], batch["positions"],
                                  batch["segment_ids"].astype(jnp.int32))
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]


def _brute_force_selection(excess, mask, ratio):
  """The ceil(ratio * n) valid tokens with the largest excess (ties: the earlier)."""
  valid = [(b, t) for b in range(excess.shape[0]) for t in range(excess.shape[1])
           if mask[b, t] > 0]
  ranked = sorted(valid, key=lambda bt: (-excess[bt], bt))
  chosen = np.zeros_like(mask)
  for bt in ranked[:max(1, math.ceil(ratio * len(valid)))]:
    chosen[bt] = 1.0
  return chosen


def _step(fns, params, batch, *ref, step=0):
  """The step's gradients (SGD at lr 1: the old minus the new parameters) and metrics,
  from a state at ``step`` (fns.init's key: PRNGKey(seed))."""
  zero = lambda: jnp.zeros((), jnp.int32)  # one buffer each: the step donates them
  state = fns.init(jax.random.key(0)).replace(
      step=jnp.asarray(step, jnp.int32), params=jax.device_put(params),
      opt_state=fns.tx.init(params), nonfinite_streak=zero(), skipped=zero())
  new, m = fns.train_step(state, device_batch(batch, fns.batch_sharding), jnp.float32(1.0),
                          *ref)
  return jax.tree.map(np.subtract, params, jax.device_get(new.params)), jax.device_get(m)


def _assert_close(got_grads, want_grads, got, want):
  for k, v in want.items():
    assert float(got[k]) == pytest.approx(v, abs=1e-5), k
  for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(g, w, atol=2e-6, rtol=1e-4)


@pytest.mark.parametrize("ratio,microbatches", [(0.6, 1), (0.3, 2)])
def test_step_trains_on_the_top_excess_tokens_as_numpy_selects_them(models, ratio,
                                                                     microbatches):
  params, ref = models
  batch = _batch()
  mask = batch["loss_mask"]
  nll = np.asarray(_token_nll(params, batch), np.float64)
  excess = nll - np.asarray(_token_nll(ref, batch), np.float64)
  rows = B // microbatches  # each micro-batch selects its own top fraction
  chosen = np.concatenate([_brute_force_selection(excess[i:i + rows], mask[i:i + rows],
                                                  ratio) for i in range(0, B, rows)])
  assert 0 < chosen.sum() < (mask > 0).sum() and not (chosen * (mask == 0)).any()
  got_grads, got = _step(_fns(ratio, microbatches), params, batch, ref)
  # The gradient of the mean loss over the chosen tokens: plain language modelling
  # with the numpy selection as its loss mask.
  want_grads, _ = _step(_fns(), params, _batch(loss_mask=chosen))
  assert float(got["loss_tokens"]) == chosen.sum()
  _assert_close(got_grads, want_grads, got, {
      "loss": (nll * chosen).sum() / chosen.sum(),
      "lm_loss": (nll * mask).sum() / mask.sum(),  # every valid token: comparable runs
      "selected_fraction": chosen.sum() / (mask > 0).sum(),
      "excess_loss": (excess * chosen).sum() / chosen.sum()})


def test_ratio_one_is_plain_language_modelling(models):
  params, ref = models
  batch = _batch()
  lm_grads, lm = _step(_fns(), params, batch)
  got_grads, got = _step(_fns(1.0), params, batch, ref)
  assert float(got["selected_fraction"]) == 1.0
  assert float(got["loss_tokens"]) == float(lm["loss_tokens"]) == batch["loss_mask"].sum()
  _assert_close(got_grads, lm_grads, got, {"loss": float(lm["loss"]),
                                           "lm_loss": float(lm["loss"])})


# Micro-batches (each its own key) cover the single-batch case's path too; one case
# keeps the suite short.
@pytest.mark.parametrize("ratio,microbatches", [(0.3, 2)])
def test_random_selection_trains_on_a_seeded_draw_of_the_same_count_new_each_step(
    models, ratio, microbatches):
  """The control: the step trains on exactly ``random_selection``'s tokens for its key
  (``fold_in(PRNGKey(train.seed), step)``, and per micro-batch ``fold_in(key, i)``),
  as many as the excess selection keeps; another step or seed draws other tokens."""
  params, _ = models
  batch = _batch()
  mask = batch["loss_mask"]
  valid = jnp.asarray(mask > 0)
  rows = B // microbatches
  nll = np.asarray(_token_nll(params, batch), np.float64)
  want_count = sum(_brute_force_selection(nll[i:i + rows], mask[i:i + rows], ratio).sum()
                   for i in range(0, B, rows))
  drawn = []
  for seed, step in ((0, 0), (0, 1), (1, 0)):
    fns = _fns(ratio, microbatches, "random", seed)
    assert not fns.takes_reference  # no reference forward, no reference argument
    key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
    keys = [key] if microbatches == 1 else [jax.random.fold_in(key, i)
                                            for i in range(microbatches)]
    chosen = np.concatenate([np.asarray(random_selection(k, valid[i * rows:(i + 1) * rows],
                                                         ratio))
                             for i, k in enumerate(keys)])
    assert chosen.sum() == want_count and not (chosen * (mask == 0)).any()
    got_grads, got = _step(fns, params, batch, step=step)
    want_grads, _ = _step(_fns(), params, _batch(loss_mask=chosen))
    assert float(got["loss_tokens"]) == want_count and "excess_loss" not in got
    _assert_close(got_grads, want_grads, got, {
        "loss": (nll * chosen).sum() / chosen.sum(),
        "lm_loss": (nll * mask).sum() / mask.sum(),
        "selected_fraction": chosen.sum() / (mask > 0).sum()})
    drawn.append(chosen)
  # Seeded: the same key draws the same tokens; another step or seed, other tokens.
  assert not any(np.array_equal(a, b) for i, a in enumerate(drawn) for b in drawn[i + 1:])


def test_random_selection_is_exact_and_uniform():
  valid = jnp.asarray(np.random.default_rng(0).random((4, 50)) < 0.8)
  n = int(valid.sum())
  picks = np.stack([np.asarray(random_selection(jax.random.PRNGKey(i), valid, 0.6))
                    for i in range(400)])
  assert (picks.sum(axis=(1, 2)) == math.ceil(0.6 * n)).all()  # the count, every draw
  assert not (picks * ~np.asarray(valid)).any()
  np.testing.assert_array_equal(picks[0], random_selection(jax.random.PRNGKey(0), valid, 0.6))
  # Every valid token is kept about 60% of the time (400 draws: std 2.4 points).
  freq = picks.mean(axis=0)[np.asarray(valid)]
  assert abs(freq.mean() - 0.6) < 0.01 and np.abs(freq - 0.6).max() < 0.15


def test_select_top_counts_exactly_breaks_ties_early_and_skips_masked_tokens():
  valid = jnp.ones((2, 5), bool)
  pick = lambda s, v, r: np.asarray(select_top(jnp.asarray(s, jnp.float32), v, r))
  # 0.7 * 10 is 7.000000000000001 in floats: still 7 tokens.
  assert pick(np.arange(10).reshape(2, 5), valid, 0.7).sum() == 7
  assert pick(np.arange(10).reshape(2, 5), valid, 0.61).sum() == 7
  assert pick(np.arange(10).reshape(2, 5), valid, 0.01).sum() == 1  # at least one
  # Equal scores: the earliest tokens in row-major order.
  np.testing.assert_array_equal(pick(np.zeros((2, 5)), valid, 0.3),
                                [[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]])
  # Masked tokens are never selected, however high their score; none valid: none.
  v = jnp.asarray([[True, False, True, False, True]] * 2)
  chosen = pick(np.asarray([[0, 99, 1, 98, 2]] * 2), v, 1.0)
  np.testing.assert_array_equal(chosen, np.asarray(v, np.float32))
  assert pick(np.ones((2, 5)), jnp.zeros((2, 5), bool), 0.5).sum() == 0


def test_off_compiles_the_plain_step():
  """token_selection=0 lowers to the program of a build without it; the selection's
  sort only appears when the switch is on."""
  def text(ratio, microbatches=1):
    return _fns.__wrapped__(ratio, microbatches).lower_train_step(B, L).as_text()

  def default(microbatches=1):  # no token_selection argument at all
    fns = _fns.__wrapped__(0.0, microbatches)
    fns = build(CFG, fns.tx, fns.mesh, sharding.DEFAULT_RULES, microbatches=microbatches)
    return fns.lower_train_step(B, L).as_text()

  plain = default()
  assert text(0.0) == plain and "stablehlo.sort" not in plain
  assert "stablehlo.sort" in text(0.5)
  assert text(0.0, microbatches=2) == default(microbatches=2)


# ------------------------------------------------------------------- settings


def _config(**train_fields):
  c = base.default()
  c.model.vocab_size = CFG.vocab_size
  c.train.update(**train_fields)
  return c


@pytest.mark.parametrize("ratio", [1.5, -0.1])
def test_ratio_outside_the_unit_interval_is_named(ratio):
  with pytest.raises(ConfigError, match=rf"train.token_selection={ratio} is the fraction "
                                        r"of tokens kept: 0 \(off\) or a value in \(0, 1\]"):
    objectives.check(_config(token_selection=ratio, reference="/ref"))
  with pytest.raises(ValueError, match=rf"train.token_selection={ratio}"):
    _fns.__wrapped__(ratio)


def test_selection_needs_a_reference_and_the_lm_objective():
  with pytest.raises(ConfigError, match="train.token_selection needs a reference model: "
                                        "set train.reference"):
    objectives.check(_config(token_selection=0.5))
  objectives.check(_config(token_selection=0.5, token_selection_by="random"))  # none read
  with pytest.raises(ConfigError, match="train.token_selection_by='top'; choose one of"):
    objectives.check(_config(token_selection=0.5, token_selection_by="top"))
  with pytest.raises(ValueError, match="train.token_selection_by='top'"):
    _fns.__wrapped__(0.5, 1, "top")
  with pytest.raises(ConfigError, match="it does not take train.objective='dpo'"):
    objectives.check(_config(token_selection=0.5, objective="dpo", reference="/ref"))
  objectives.check(_config())  # off: nothing to check


def _tok(proto=b"the run's tokenizer"):
  return types.SimpleNamespace(model_proto=proto, name="/runs/slm/tokenizer.model")


def test_a_reference_with_another_vocabulary_is_named(tmp_path):
  other = ModelConfig(**{**CFG.to_dict(), "vocab_size": 320})
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), nn.unbox(abstract_params(other)))
  params_io.save_params(str(tmp_path / "ref"), other, params)
  with pytest.raises(ConfigError, match=r"has a vocabulary of 320 tokens but this run's "
                                        r"model has 300"):
    objectives.make(_config(token_selection=0.6, reference=str(tmp_path / "ref")), _tok(),
                    _fns(0.6))


def test_a_reference_with_another_tokenizer_is_named(tmp_path):
  (tmp_path / "ref").mkdir()
  (tmp_path / "ref" / "tokenizer.model").write_bytes(b"another tokenizer")
  with pytest.raises(ConfigError, match=rf"its tokenizer {tmp_path}/ref/tokenizer.model "
                                        r"differs from this run's \(/runs/slm/tokenizer"):
    objectives.make(_config(token_selection=0.6, reference=str(tmp_path / "ref")), _tok(),
                    _fns(0.6))


# ------------------------------------------------------------------- a real run


def _run_config():
  from phijax.configs import tiny
  c = tiny.get_config("runlocal")
  c.model.num_layers = 1
  c.train.update(batch_size=4, steps=4, log_every=1, eval_every=0, save_every=2,
                 samples=0, final_eval_batches=1, progress=False, peak_flops=1e11,
                 token_selection=0.6)
  c.curriculum.lr.warmup_steps = 0
  return c


def _rows(workdir):
  return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def test_run_against_a_reference_and_resume(tmp_path):
  # The reference: a parameter directory (python -m phijax.convert's layout) with the
  # run's tokenizer beside it, as a run directory or an export keeps it.
  config = _run_config()
  model_cfg = ModelConfig.from_dict(config.model)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.02 * rng.standard_normal(s.shape)).astype(s.dtype),
                        nn.unbox(abstract_params(model_cfg)))
  params_io.save_params(str(tmp_path / "ref"), model_cfg, params)
  data.load_tokenizer(config.data).save(tmp_path / "ref" / "tokenizer.model")
  config.train.reference = str(tmp_path / "ref")

  train.train(config, str(tmp_path / "slm"))
  rows = _rows(tmp_path / "slm")
  steps = {r["step"]: r for r in rows if "loss" in r}
  assert sorted(steps) == [1, 2, 3, 4]
  for r in steps.values():
    # Packed rows learn every token: ceil(0.6 * 256) = 154 of 256.
    assert r["selected_fraction"] == pytest.approx(154 / 256)
    assert r["loss"] > r["lm_loss"]  # the selected tokens are the hard ones
    assert np.isfinite(r["excess_loss"])
  final = [r for r in rows if r.get("final")][-1]
  assert final["eval_bpb"] > 0  # held-out evaluation: plain language modelling

  # Resume from the step-2 checkpoint: the reference is loaded again (the selection
  # keeps no state), and steps 3 and 4 repeat bit for bit.
  cut = tmp_path / "cut"
  shutil.copytree(tmp_path / "slm", cut)
  shutil.rmtree(cut / "checkpoints" / "4")
  resume = _run_config()
  resume.train.reference = str(tmp_path / "ref")
  train.train(resume, str(cut))
  resumed = {r["step"]: r for r in _rows(cut)[len(rows):] if "loss" in r}
  assert sorted(resumed) == [3, 4]
  for s in (3, 4):
    for k in ("loss", "grad_norm", "lm_loss", "selected_fraction", "excess_loss"):
      assert resumed[s][k] == steps[s][k], (s, k)


def test_random_selection_run_needs_no_reference_and_resumes_bit_for_bit(tmp_path):
  config = _run_config()
  config.train.token_selection_by = "random"
  train.train(config, str(tmp_path / "rand"))
  rows = _rows(tmp_path / "rand")
  steps = {r["step"]: r for r in rows if "loss" in r}
  assert sorted(steps) == [1, 2, 3, 4]
  for r in steps.values():
    assert r["selected_fraction"] == pytest.approx(154 / 256) and "excess_loss" not in r
  # The draw is the state's (train.seed, step): a resumed run repeats steps 3 and 4.
  cut = tmp_path / "cut"
  shutil.copytree(tmp_path / "rand", cut)
  shutil.rmtree(cut / "checkpoints" / "4")
  resume = _run_config()
  resume.train.token_selection_by = "random"
  train.train(resume, str(cut))
  resumed = {r["step"]: r for r in _rows(cut)[len(rows):] if "loss" in r}
  assert sorted(resumed) == [3, 4]
  for s in (3, 4):
    for k in ("loss", "grad_norm", "lm_loss"):
      assert resumed[s][k] == steps[s][k], (s, k)
