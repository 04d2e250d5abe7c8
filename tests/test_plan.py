"""phijax.plan: per-device bytes of parameters and optimizer state equal the bytes the
real, initialised train state holds on each device; the step's temporaries come from
the compiled step and grow with the batch; bad input is one line."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Its own process: phijax.plan starts JAX with the mesh's simulated CPU devices.
SCRIPT = r"""
import json
from phijax import config_files, plan
config = config_files.load("tiny:runlocal")
config.optim.name = "adamw"
out = {}
for mesh in ({"data": 1, "fsdp": 2, "tensor": 2}, {"data": 2, "fsdp": 1, "tensor": 1}):
  # Only the sharded mesh's temporaries are read: the replicated one's state bytes need no
  # compiled step (one pallas-interpret train-step compile fewer).
  p = plan.plan(config, mesh, activations=mesh["data"] == 1)
  # The truth: initialise the state for real and read each device's buffers.
  import jax, ml_collections
  from phijax.train import optim
  from phijax.model import sharding
  from phijax.model.config import ModelConfig
  from phijax.train.step import build
  m = sharding.make_mesh(ml_collections.ConfigDict(mesh), jax.devices()[:p["devices"]])
  fns = build(ModelConfig.from_dict(config.model), optim.make_direction(config.optim), m,
              sharding.DEFAULT_RULES)
  state = fns.init(jax.random.key(0))
  def held(tree, device):
    return sum(s.data.nbytes for x in jax.tree_util.tree_leaves(tree)
               for s in x.addressable_shards if s.device == device)
  p["true_params"] = max(held(state.params, d) for d in m.devices.flat)
  p["true_opt"] = max(held(state.opt_state, d) for d in m.devices.flat)
  p["report"] = plan.report(p)
  out[str(mesh["data"])] = p
config.train.token_selection = 0.6  # Rho-1: a frozen reference model beside it
out["reference"] = plan.plan(config, {"data": 1, "fsdp": 2, "tensor": 2})
out["reference"]["report"] = plan.report(out["reference"])
config.train.token_selection = 0.0
config.train.batch_size *= 2
out["double"] = plan.plan(config, {"data": 1, "fsdp": 2, "tensor": 2})
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def plans():
  proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                        cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
  return json.loads(line[len("RESULT"):])


@pytest.mark.parametrize("mesh", ["1", "2"])  # fsdp x tensor, and data parallel
def test_state_bytes_are_exact(plans, mesh):
  p = plans[mesh]
  assert p["params_bytes"] == p["true_params"]
  assert p["opt_bytes"] == p["true_opt"]
  assert p["grad_bytes"] == p["params_bytes"]


def test_sharding_splits_the_state_and_batch_grows_temporaries(plans):
  sharded, replicated = plans["1"], plans["2"]
  assert sharded["params_bytes"] < replicated["params_bytes"]  # fsdp x tensor split them
  assert sharded["temp_bytes"] > 0
  assert plans["double"]["temp_bytes"] > sharded["temp_bytes"]
  assert sharded["total_bytes"] == (sharded["params_bytes"] + sharded["opt_bytes"]
                                    + sharded["temp_bytes"] + sharded["batch_bytes"])
  assert all(sharded["fits"].values())  # a 5M-parameter model fits everything
  assert "fits: TPU v5e (16 GB)" in sharded["report"]


def test_a_reference_model_is_counted_once_beside_the_parameters(plans):
  """Rho-1 (and DPO) steps take the frozen reference's parameters, sharded as the
  parameters: counted on their own line, not mistaken for batch bytes."""
  lm, ref = plans["1"], plans["reference"]
  assert lm["ref_bytes"] == 0 and ref["ref_bytes"] == ref["params_bytes"] == lm["params_bytes"]
  assert ref["batch_bytes"] == lm["batch_bytes"]
  assert ref["total_bytes"] == (ref["params_bytes"] + ref["ref_bytes"] + ref["opt_bytes"]
                                + ref["temp_bytes"] + ref["batch_bytes"])
  assert "reference model" in ref["report"] and "reference model" not in lm["report"]


def test_bad_mesh_is_one_line():
  proc = subprocess.run([sys.executable, "-m", "phijax.plan", "--config=tiny",
                         "--mesh=fsdp=8,pipeline=2"], capture_output=True, text=True, cwd=ROOT)
  assert proc.returncode == 2
  assert proc.stderr.strip().count("\n") == 0
  assert "--mesh: cannot read 'pipeline=2'" in proc.stderr
