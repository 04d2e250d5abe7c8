"""Sharpness probe (``train.sharpness_every``): power iteration over Hessian-vector
products finds the top eigenvalue of a quadratic with a known spectrum, of a small
MLP and of a tiny phi model against numpy's ``eigh`` of the explicit Hessian (and the
Adam-preconditioned one); the training loop logs it beside 2/lr."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from ml_collections import ConfigDict

from phijax import config as base
from phijax import config_files
from phijax.train import loop, optim, probes
from phijax.model import sharding
from phijax.model.config import ModelConfig
from phijax.train.step import build, device_batch, random_batch


def _top_by_magnitude(h):
  w = np.linalg.eigvalsh(h)
  return w[np.argmax(np.abs(w))]


def test_quadratic_with_known_spectrum():
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
  spectrum = np.array([5.0, 2.0, 1.0, -0.5, 0.1])
  a = jnp.asarray(q @ np.diag(spectrum) @ q.T, jnp.float32)
  x0 = {"u": jnp.ones(3), "w": jnp.ones(2)}  # a pytree, as parameters are

  def loss(p):
    x, _ = ravel_pytree(p)
    return 0.5 * x @ a @ x

  eig, v = jax.jit(lambda: probes.top_eigenvalue(probes.hvp_of(loss, x0), x0,
                                                 jax.random.key(0), 200))()
  np.testing.assert_allclose(float(eig), 5.0, rtol=1e-4)
  vec, _ = ravel_pytree(v)
  assert abs(abs(float(vec @ q[:, 0])) - 1) < 1e-3  # and its eigenvector


def test_mlp_against_explicit_hessian():
  rng = np.random.default_rng(1)
  x, y = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in ((16, 3), (16, 1)))
  params = {"w1": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32),
            "b1": jnp.zeros(4), "w2": jnp.asarray(rng.standard_normal((4, 1)), jnp.float32)}

  def loss(p):
    return jnp.mean((jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] - y) ** 2)

  flat, unravel = ravel_pytree(params)
  h = np.asarray(jax.jit(jax.hessian(lambda f: loss(unravel(f))))(flat), np.float64)
  eig, _ = jax.jit(lambda: probes.top_eigenvalue(probes.hvp_of(loss, params), params,
                                                 jax.random.key(0), 300))()
  np.testing.assert_allclose(float(eig), _top_by_magnitude(h), rtol=1e-3)


def test_phi_probe_and_adam_preconditioning():
  # ~250 parameters: the explicit Hessian stays small
  cfg = ModelConfig(arch="phi", vocab_size=8, hidden_size=4, num_layers=1, num_heads=1,
                    intermediate_size=8)
  opt = ConfigDict(base.default().optim.to_dict())
  opt.update(name="adamw", b1=0.9, b2=0.95, eps=1e-3)
  mesh = sharding.make_mesh(ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])
  fns = build(cfg, optim.make_direction(opt), mesh, sharding.DEFAULT_RULES)
  batch = device_batch(random_batch(2, 8, 8), fns.batch_sharding)
  state = fns.init(jax.random.key(0))
  for _ in range(3):
    state, _ = fns.train_step(state, batch, jnp.float32(1e-2))
  probe = probes.Sharpness(cfg, opt, every=1, iters=300)
  got = probe.measure(state, batch, 1e-2)
  # The truth: numpy eigh of the explicit Hessian of the same loss.
  flat, unravel = ravel_pytree(state.params)

  def loss(f):
    logits = fns.model.apply({"params": unravel(f)}, batch["inputs"], batch["positions"],
                             batch["segment_ids"])
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    return -jnp.mean(jnp.take_along_axis(logp, batch["targets"][..., None], -1))

  h = np.asarray(jax.jit(jax.hessian(loss))(flat), np.float64)
  np.testing.assert_allclose(got["sharpness"], _top_by_magnitude(h), rtol=2e-3)
  # Adam's preconditioner, read from its state by hand: P = sqrt(nu / (1 - b2^t)) + eps.
  (adam,) = [s for s in jax.tree_util.tree_leaves(
      state.opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
      if isinstance(s, optax.ScaleByAdamState)]
  nu, _ = ravel_pytree(adam.nu)
  p = np.sqrt(np.asarray(nu, np.float64) / (1 - 0.95 ** int(adam.count))) + 1e-3
  scaled = h / np.sqrt(p)[:, None] / np.sqrt(p)[None, :]
  np.testing.assert_allclose(got["preconditioned_sharpness"], _top_by_magnitude(scaled),
                             rtol=2e-3)
  assert got["two_over_lr"] == 200.0
  np.testing.assert_allclose(got["adam_threshold"], 3.8 / 0.1 / 1e-2)


def test_training_logs_sharpness(tmp_path):
  # In this process, as python -m phijax.train runs it (loop.train), without a process's
  # start-up: only metrics.jsonl is read. A failed run raises.
  loop.train(config_files.load("tiny:runlocal", [
      "--config.train.steps=4", "--config.train.sharpness_every=2",
      "--config.train.sharpness_iters=3", "--config.optim.name=sgd", "--config.optim.b1=0.0",
      "--config.train.samples=0", "--config.train.eval_every=0",
      "--config.train.final_eval_batches=1", "--config.train.progress=false"]),
      str(tmp_path / "run"))
  rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  probed = [r for r in rows if "sharpness" in r]
  assert [r["step"] for r in probed] == [2, 4]
  assert all(r["sharpness"] > 0 and r["two_over_lr"] > 0 for r in probed)
  assert "preconditioned_sharpness" not in probed[0]  # SGD: no preconditioner
  final = [r for r in rows if r.get("final")]
  assert final[0]["opt_state_bytes_per_param"] == 0.0  # plain SGD keeps no state
