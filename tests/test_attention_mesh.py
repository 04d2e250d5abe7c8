"""Pallas attention inside the sharded train step: on 8 simulated CPU devices, the
kernels (interpret mode) run per shard through shard_map, give xla's loss and
gradients on every mesh layout, and the compiled step gathers no attention
activations; a layout the kernels cannot split is refused (explicit impl) or falls
back to xla (auto)."""

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.devices import xla_flags

HERE = os.path.dirname(os.path.abspath(__file__))
T, D = 32, 16  # sequence length and head dim: the HLO check looks for [*, 32, *, 16]

# Runs in a subprocess: the 8 simulated CPU devices must be set before JAX starts.
SCRIPT = r"""
import json, re, sys, warnings
import jax, jax.numpy as jnp, numpy as np, optax
from ml_collections import ConfigDict
from phijax.model import attention, sharding
from phijax.model.config import ModelConfig
from phijax.train.step import build, device_batch

arch, T, D = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# Tensor, data and mixed parallelism for phi3 (GQA, window); phi (MHA) on the mixed mesh.
CASES = {"phi3": [((2, 2, 2), "pallas_gpu"), ((1, 1, 8), "pallas_gpu"),
                  ((8, 1, 1), "pallas_gpu"), ((1, 1, 8), "pallas_tpu")],
         "phi": [((2, 2, 2), "pallas_gpu"), ((2, 2, 2), "pallas_tpu")]}
# phi: MHA, partial rotary, qk-layernorm; phi3: GQA (16 q / 8 kv heads), window 12.
heads, kv = (8, 8) if arch == "phi" else (16, 8)
base = dict(arch=arch, vocab_size=64, hidden_size=32, num_layers=1, num_heads=heads,
            num_kv_heads=kv, head_dim=D, intermediate_size=64)
if arch == "phi":
  base.update(partial_rotary_factor=0.5, qk_layernorm=True)
else:
  base.update(sliding_window=12)
rng = np.random.default_rng(0)
B = 8
# Two packed documents per row: segment ids and positions restart at the boundary.
cut = rng.integers(5, T - 5, B)
seg = np.where(np.arange(T)[None] < cut[:, None], 1, 2).astype(np.int32)
pos = np.where(seg == 1, np.arange(T)[None], np.arange(T)[None] - cut[:, None])
batch = {"inputs": rng.integers(0, 64, (B, T)), "targets": rng.integers(0, 64, (B, T)),
         "positions": pos, "segment_ids": seg,
         "loss_mask": (rng.random((B, T)) > 0.1).astype(np.float32)}

def run(shape, impl):
  cfg = ModelConfig(attention_impl=impl, **base)
  mesh = sharding.make_mesh(ConfigDict(dict(data=shape[0], fsdp=shape[1], tensor=shape[2])),
                            jax.devices()[:int(np.prod(shape))])
  # plain SGD at lr 1: the parameter change is minus the mean gradient
  fns = build(cfg, optax.scale(-1.0), mesh, sharding.DEFAULT_RULES)
  state = fns.init(jax.random.key(0))
  step = fns.compile_train_step(B, T)
  before = [np.asarray(p) for p in jax.tree_util.tree_leaves(state.params)]
  new, m = step(state, device_batch(batch, fns.batch_sharding), jnp.float32(1.0))  # donates
  grads = [(a - np.asarray(b)).ravel().tolist()
           for a, b in zip(before, jax.tree_util.tree_leaves(new.params))]
  # Every all-gather's result shape: an attention activation is [b, T, h, D].
  gathers = re.findall(r"= \w+\[([\d,]*)\][^=]*? all-gather(?:-start)?\(", step.as_text())
  return {"loss": float(m["loss"]), "grads": grads, "gathers": gathers}

out = {"ref": run((1, 1, 1), "xla")}
for shape, impl in CASES[arch]:
  out[f"{shape}/{impl}"] = run(shape, impl)

if arch != "phi3":
  # The HLO check's own check: the kernel left to GSPMD (no shard_map).
  from phijax.kernels import per_shard
  per_shard.layout = lambda: None
  out["gspmd"] = run((2, 2, 2), "pallas_gpu")
  print("RESULT" + json.dumps(out))
  sys.exit(0)
# A tensor axis that does not divide the kv heads: explicit impls refuse, auto falls back.
base.update(num_heads=8, num_kv_heads=4)
refusal = None
try:
  run((1, 1, 8), "pallas_gpu")
except ValueError as e:
  refusal = str(e)
attention._platform = lambda: "gpu"  # so auto picks pallas_gpu on this CPU
with warnings.catch_warnings(record=True) as caught:
  warnings.simplefilter("always")
  auto = run((1, 1, 8), "auto")
out["bad"] = {"refusal": refusal, "auto_loss": auto["loss"],
              "xla_loss": run((1, 1, 8), "xla")["loss"],
              "warnings": [str(w.message) for w in caught]}
print("RESULT" + json.dumps(out))
"""


@functools.lru_cache(maxsize=None)
def _results(arch):
  env = dict(os.environ, XLA_FLAGS=xla_flags(8),
             JAX_PLATFORMS="cpu", PHIJAX_PALLAS_INTERPRET="1")
  proc = subprocess.run([sys.executable, "-c", SCRIPT, arch, str(T), str(D)], env=env,
                        capture_output=True, text=True, cwd=os.path.dirname(HERE))
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
  return json.loads(line[len("RESULT"):])


CASES = [("phi3", "(2, 2, 2)", "pallas_gpu"), ("phi3", "(1, 1, 8)", "pallas_gpu"),
         ("phi3", "(8, 1, 1)", "pallas_gpu"), ("phi3", "(1, 1, 8)", "pallas_tpu"),
         ("phi", "(2, 2, 2)", "pallas_gpu"),
         ("phi", "(2, 2, 2)", "pallas_tpu")]


def _activation_gathers(gathers):
  """All-gathers whose result is a [batch, T, heads, D] attention activation."""
  dims = [[int(x) for x in g.split(",") if x] for g in gathers]
  return [d for d in dims if len(d) == 4 and d[1] == T and d[3] == D]


@pytest.mark.parametrize("arch,mesh,impl", CASES)
def test_kernels_per_shard_equal_xla(arch, mesh, impl):
  """Against xla on one device (tests/test_train_step.py: xla on every mesh equals it)."""
  results = _results(arch)
  ref, got = results["ref"], results[f"{mesh}/{impl}"]
  np.testing.assert_allclose(got["loss"], ref["loss"], atol=1e-5, rtol=0)
  for a, b in zip(got["grads"], ref["grads"]):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)
  assert max(abs(x) for g in got["grads"] for x in g) > 1e-3  # gradients are not all ~0
  # The kernel runs on each device's own rows and heads: q/k/v/out are never gathered.
  assert _activation_gathers(got["gathers"]) == []


def test_hlo_check_sees_gathers_without_shard_map():
  """Left to GSPMD (per_shard disabled), the kernel's inputs are gathered and the
  HLO check above sees it: the check can fail."""
  got = _results("phi")["gspmd"]
  assert _activation_gathers(got["gathers"])


def test_indivisible_heads_refused_or_fall_back():
  bad = _results("phi3")["bad"]
  assert bad["refusal"] and "kv heads" in bad["refusal"] and "per shard" in bad["refusal"]
  np.testing.assert_allclose(bad["auto_loss"], bad["xla_loss"], atol=1e-6, rtol=0)
  fallbacks = [w for w in bad["warnings"] if "using xla" in w]
  assert len(fallbacks) == 1 and "per shard" in fallbacks[0]
