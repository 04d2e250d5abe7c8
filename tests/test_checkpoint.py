"""Checkpoints: restore onto another mesh, fall back past a corrupt one, warm start."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.devices import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import json, sys
import jax, numpy as np
from ml_collections import ConfigDict
from phijax.train import checkpoint, optim
from phijax.model import sharding
from phijax.model.config import ModelConfig
from phijax.train.step import build, device_batch

mode, directory, shape = sys.argv[1], sys.argv[2], tuple(json.loads(sys.argv[3]))
cfg = ModelConfig(arch="phi3", vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                  num_kv_heads=2, intermediate_size=64)
opt = ConfigDict(dict(name="adamw", lr=1e-3, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
                      clip=1.0))
mesh = sharding.make_mesh(ConfigDict(dict(data=shape[0], fsdp=shape[1], tensor=shape[2])),
                          jax.devices()[:int(np.prod(shape))])
fns = build(cfg, optim.make_direction(opt), mesh, sharding.DEFAULT_RULES)
ckpt = checkpoint.Checkpointer(directory, keep=3)
if mode == "save":
  state = fns.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = {"inputs": rng.integers(0, 64, (8, 8)).astype(np.int32),
           "targets": rng.integers(0, 64, (8, 8)).astype(np.int32),
           "positions": np.tile(np.arange(8, dtype=np.int32), (8, 1)),
           "segment_ids": np.ones((8, 8), np.int32), "loss_mask": np.ones((8, 8), np.float32)}
  for step in (1, 2):
    state, _ = fns.train_step(state, device_batch(batch, fns.batch_sharding), 1e-2)
    ckpt.save(step, state, {"step": step, "tokens": 64 * step, "stage": 0})
  ckpt.close()
  out = {"step": 2}
else:
  abstract = jax.eval_shape(fns.init.jitted, jax.random.key(0))
  step, state, meta = ckpt.restore_latest(checkpoint.abstract_like(abstract, fns.state_shardings))
  out = {"step": step, "meta_step": meta["step"],
         "devices": len(jax.tree_util.tree_leaves(state.params)[0].sharding.device_set)}
leaves = jax.tree_util.tree_leaves(jax.device_get(state.params)) + \
         jax.tree_util.tree_leaves(jax.device_get(state.opt_state))
out["leaves"] = [np.asarray(x).ravel().tolist() for x in leaves]
print("RESULT" + json.dumps(out))
"""


def _run(mode, directory, shape):
  env = dict(os.environ, XLA_FLAGS=xla_flags(8),
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(directory), json.dumps(shape)],
                        env=env, capture_output=True, text=True, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
  return json.loads(line[len("RESULT"):]), proc.stderr


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  d = tmp_path_factory.mktemp("ckpt") / "checkpoints"
  out, _ = _run("save", d, [2, 2, 2])
  return d, out


@pytest.mark.parametrize("shape", [[1, 1, 1], [1, 4, 1]])
def test_restore_on_another_mesh(saved, shape):
  d, ref = saved
  got, _ = _run("restore", d, shape)
  assert got["step"] == 2 and got["meta_step"] == 2
  assert got["devices"] == int(np.prod(shape))
  for a, b in zip(got["leaves"], ref["leaves"]):
    np.testing.assert_array_equal(a, b)


def test_corrupt_newest_checkpoint_falls_back(saved, tmp_path):
  d, ref = saved
  copy = tmp_path / "checkpoints"
  shutil.copytree(d, copy)
  # Damage every array file of the newest checkpoint's state.
  damaged = 0
  for root, _, files in os.walk(copy / "2" / "state"):
    for f in files:
      if f not in ("_METADATA", "_CHECKPOINT_METADATA"):
        with open(os.path.join(root, f), "wb") as fh:
          fh.write(b"garbage")
        damaged += 1
  assert damaged
  got, stderr = _run("restore", copy, [1, 1, 1])
  assert got["step"] == 1
  assert "unreadable" in stderr
