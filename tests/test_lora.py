"""LoRA adapters (Hu et al. 2021, arXiv 2106.09685; ``model.lora``): step 0 is the base
model bit for bit; only the adapters train and hold optimizer state, with every
optimizer but galore; the frozen base keeps its bytes; a checkpoint resumes exactly;
``train.init_from`` loads a base (a LoRA source merged); the merged Hugging Face export
computes the adapter model's logits; a (2, 2, 2) mesh computes the one-device logits;
bad settings are one line naming the field.

Oracles: the base model's own logits and parameters, numpy's ``W + alpha / r * A B``,
transformers' forward of the export, the one-device forward."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from phijax import config as base
from phijax.model import Transformer, init_params, lora, params_io, sharding
from phijax.model.config import ModelConfig
from phijax.train import optim
from phijax.train.step import build, device_batch, random_batch
from tests.devices import xla_flags
from tests.test_freeze import _flat, resumed_step_is_exact

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHI = ModelConfig(arch="phi", vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                  intermediate_size=64)
PHI3 = ModelConfig(arch="phi3", vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                   num_kv_heads=2, intermediate_size=64)
EVERY = dict(rank=4, alpha=8.0, targets=".")  # every block matrix, o_proj's [H, E, D] too
TOKENS = np.random.default_rng(0).integers(0, 64, (2, 12)).astype(np.int32)


@functools.lru_cache(maxsize=None)
def _forward(cfg):  # one compile per model config, shared by the tests
  return jax.jit(lambda p, t: Transformer(cfg).apply({"params": p}, t))


def _logits(cfg, params, tokens=TOKENS):
  return np.asarray(_forward(cfg)(params, tokens))


def _random_params(cfg, seed=1):
  """Host parameters of ``cfg`` drawn by numpy, every adapter's B non-zero (the adapters
  then change the function); no compile."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
  return jax.tree_util.tree_map_with_path(
      lambda p, x: (0.3 if lora.path_names(p)[-1] == "b" else 0.1) * rng.standard_normal(
          x.shape).astype(np.float32), shapes)


def _opt(name="adamw", **kw):
  opt = ConfigDict(base.default().optim.to_dict())
  opt.update(name=name, **kw)
  return opt


def test_step_zero_is_the_base_model_bit_for_bit():
  cfg, lcfg = PHI, PHI.replace(lora=EVERY)
  plain, with_adapters = init_params(cfg, jax.random.key(0)), init_params(lcfg, jax.random.key(0))
  flat, flat_lora = _flat(plain), _flat(with_adapters)
  adapters = sorted(set(flat_lora) - set(flat))
  n = len(lora.block_matrix_paths(cfg.arch, cfg.num_layers))
  assert len(adapters) == 2 * n and all("/lora/" in k for k in adapters)
  for k in flat:  # the same seed draws the same base: adapters are created after it
    np.testing.assert_array_equal(flat_lora[k], flat[k])
  assert not any(flat_lora[k].any() for k in adapters if k.endswith("/b"))
  np.testing.assert_array_equal(_logits(lcfg, with_adapters), _logits(cfg, plain))
  # rank 0 compiles the standard model, whatever the other fields say.
  lowered = lambda c: jax.jit(Transformer(c).apply).lower({"params": plain}, TOKENS).as_text()
  assert lowered(cfg) == lowered(cfg.replace(lora=dict(rank=0, alpha=2.0, targets="fc1")))
  # Uniform in +-1/sqrt(fan_in) (PEFT's kaiming_uniform_(a=sqrt(5))).
  a = flat_lora["layers_0/attn/o_proj/lora/a"]
  assert a.shape == (4, 8, 4) and 0.5 < np.abs(a).max() * np.sqrt(32) <= 1.0


def test_adapters_add_alpha_over_rank_a_b():
  """With B non-zero the model equals the base model whose matrices are
  ``W + alpha / r * A B`` (numpy), and ``lora.merge`` writes exactly that base."""
  lcfg = PHI.replace(lora=dict(rank=2, alpha=6.0, targets="o_proj|fc1"))
  params = _random_params(lcfg)
  merged = jax.tree_util.tree_map(np.copy, params)
  for i in range(2):
    for block, name in (("attn", "o_proj"), ("mlp", "fc1")):
      m = merged[f"layers_{i}"][block][name]
      ab = m.pop("lora")
      delta = ab["a"].reshape(-1, 2).astype(np.float64) @ ab["b"].reshape(2, -1)
      m["kernel"] = m["kernel"] + (3.0 * delta).reshape(m["kernel"].shape).astype(np.float32)
  assert "lora" not in merged["layers_0"]["attn"]["q_proj"]  # not targeted
  got = _logits(lcfg, params)
  np.testing.assert_allclose(got, _logits(PHI, merged), atol=1e-5, rtol=0)
  assert np.abs(got - _logits(PHI, lora.merge(lcfg, params)[1])).max() < 1e-5
  without = jax.tree_util.tree_map_with_path(  # B = 0: the adapters changed the logits
      lambda p, x: 0 * x if lora.path_names(p)[-1] == "b" else x, params)
  assert np.abs(got - _logits(lcfg, without)).max() > 1e-3


def test_only_adapters_train_base_bytes_unchanged_and_resume_is_exact(tmp_path):
  lcfg = PHI.replace(lora=dict(EVERY, dropout=0.1))  # the adapters' dropout draws too
  opt = _opt("adamw")
  mesh = sharding.make_mesh(ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])
  fns = build(lcfg, optim.make_direction(opt, adapters_only=True), mesh,
              sharding.DEFAULT_RULES, trainable=optim.trainable(opt, adapters_only=True))
  state = fns.init(jax.random.key(0))
  before = _flat(jax.device_get(state.params))
  adapter_bytes = sum(v.nbytes for k, v in before.items() if "/lora/" in k)
  opt_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(state.opt_state))
  assert opt_bytes == 2 * adapter_bytes + 4  # Adam's two moments of the adapters, a count
  batch = device_batch(random_batch(4, 16, 64), fns.batch_sharding)
  for _ in range(2):
    state, m = fns.train_step(state, batch, jnp.float32(1e-2))
  after = _flat(state.params)
  for k in before:
    if "/lora/" in k:
      assert not np.array_equal(after[k], before[k]), k
    else:  # bit for bit: the frozen base passes through the update untouched
      assert after[k].tobytes() == before[k].tobytes(), k
  ma, mb = resumed_step_is_exact(fns, state, batch, tmp_path / "ckpt")
  assert float(ma["loss"]) == float(mb["loss"])


@pytest.mark.parametrize("name", ["muon", "sgd", "lion"])
def test_every_optimizer_moves_only_the_adapters(name):
  """Muon's block kernels are all frozen: the adapters take its Adam branch."""
  lcfg = PHI.replace(lora=EVERY)
  params = init_params(lcfg, jax.random.key(0))
  tx = optim.make_direction(_opt(name, b1=0.9), adapters_only=True)
  grads = jax.tree_util.tree_map(lambda x: jnp.ones_like(x) * 0.1, params)
  state = tx.init(params)
  adapter_size = sum(v.size for k, v in _flat(params).items() if "/lora/" in k)
  # At most two moments per adapter entry, plus step counts: nothing for the base.
  assert 0 < sum(x.size for x in jax.tree_util.tree_leaves(state)) <= 2 * adapter_size + 8
  updates = _flat(jax.jit(tx.update)(grads, state, params)[0])
  for k, u in updates.items():
    assert bool(np.any(u != 0)) == ("/lora/" in k), k


def test_galore_and_bad_settings_are_one_line_naming_the_field():
  with pytest.raises(ValueError, match="optim.name='galore' with model.lora"):
    optim.make_direction(_opt("galore"), adapters_only=True)
  for lora_cfg, field in [(dict(rank=-1), "lora.rank"), (dict(rank=4, alpha=0.0), "lora.alpha"),
                          (dict(rank=4, dropout=1.0), "lora.dropout"),
                          (dict(rank=4, targets="qkv_proj"), "lora.targets"),
                          (dict(rank=4, targets="("), "lora.targets"),
                          (dict(rank=4, ranks=2), "lora: unknown field")]:
    with pytest.raises(ValueError, match=f"model config: {field}") as e:
      PHI3.replace(lora=lora_cfg)
    assert "\n" not in str(e.value)
  # The config tree: model.lora.* overrides, type-checked, described.
  c = base.default()
  c.model.lora.rank, c.model.lora.targets = 8, "fc1"
  assert ModelConfig.from_dict(c.model).lora.rank == 8
  assert "alpha / rank" in base.field_meanings()["model.lora.alpha"]


def test_merged_hf_export_equals_the_adapter_model(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from phijax import convert
  lcfg = PHI.replace(lora=EVERY)
  params = _random_params(lcfg)
  convert.to_hf(lcfg, params, str(tmp_path))
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).float().eval()
  with torch.no_grad():
    hf = model(torch.tensor(TOKENS, dtype=torch.long)).logits.numpy()
  ours = _logits(lcfg, params)
  np.testing.assert_allclose(hf, ours, atol=1e-5, rtol=0)


def two_step_config():
  """tiny:runlocal cut to 2 steps of 2 x 32 tokens, one eval batch, no samples: an
  in-process warm-started run in a few seconds (test_qlora.py's too)."""
  from phijax import config_files
  return config_files.load("tiny:runlocal", [
      "--config.train.steps=2", "--config.train.batch_size=2", "--config.data.seq_len=32",
      "--config.train.samples=0", "--config.train.progress=false",
      "--config.train.eval_every=0", "--config.train.final_eval_batches=1",
      "--config.train.eval_batches=1", "--config.curriculum.lr.warmup_steps=0",
      "--config.curriculum.seq_warmup.enabled=false"])


def test_init_from_loads_the_base_and_a_lora_source_merged(tmp_path):
  """A LoRA run warm-started from a base model trains its adapters over that base, which
  stays bit for bit; a LoRA source is read as the model it computes."""
  from phijax.convert import weights
  from phijax.train import loop

  lcfg = PHI.replace(lora=EVERY)
  source = _random_params(lcfg, seed=3)
  params_io.save_params(str(tmp_path / "lora_src"), lcfg, source)
  abstract = jax.eval_shape(lambda: init_params(PHI, jax.random.key(0)))
  loaded = weights.load_init_params(str(tmp_path / "lora_src"), abstract)
  np.testing.assert_allclose(_logits(PHI, loaded), _logits(lcfg, source), atol=1e-5, rtol=0)

  config = two_step_config()
  pre_cfg = ModelConfig.from_dict(config.model)
  pretrained = _random_params(pre_cfg, seed=7)
  params_io.save_params(str(tmp_path / "pre"), pre_cfg, pretrained)
  config.model.lora.update(rank=2, targets="attn")
  config.train.init_from = str(tmp_path / "pre")
  loop.train(config, str(tmp_path / "run"))
  cfg, trained, step = weights.load_run_params(str(tmp_path / "run"))
  assert step == 2 and cfg.lora.rank == 2
  flat, pre = _flat(trained), _flat(pretrained)
  for k in pre:
    assert flat[k].tobytes() == pre[k].tobytes(), k
  adapters = [k for k in flat if "/lora/" in k]
  assert len(adapters) == 2 * 4 * pre_cfg.num_layers
  assert all(flat[k].any() for k in adapters if k.endswith("/b"))  # B moved off zero
  rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  assert rows[0]["step"] == 0 and "eval_loss" in rows[0]  # the warm start's loss


MESH_SCRIPT = r"""
import json, sys
import jax, numpy as np
from ml_collections import ConfigDict
from flax import linen as nn
from phijax.model import Transformer, init_params, lora, quant, sharding
from phijax.model.config import ModelConfig
cfg = ModelConfig(arch="phi3", vocab_size=64, hidden_size=32, num_layers=1, num_heads=8,
                  num_kv_heads=8, head_dim=8, intermediate_size=64,
                  lora=dict(rank=4, targets="."))
rng = np.random.default_rng(0)  # numpy parameters, B non-zero: no init to compile
params = jax.tree_util.tree_map(
    lambda x: 0.1 * rng.standard_normal(x.shape).astype(np.float32),
    jax.eval_shape(lambda: init_params(cfg, jax.random.key(0))))
tokens = np.random.default_rng(0).integers(0, 64, (8, 12)).astype(np.int32)
rules = list(sharding.DEFAULT_RULES)
# QLoRA: the same model over its base in NF4 (the codes shard by the kernel's names).
qcfg = cfg.replace(lora=dict(rank=4, targets=".", quantize="nf4"))
qparams = quant.quantize_like(params, jax.eval_shape(lambda: init_params(qcfg, jax.random.key(0))))
out = {}
for name, c, p in (("lora", cfg, params), ("qlora", qcfg, qparams)):
  for shape in ((1, 1, 1), (2, 2, 2)):
    mesh = sharding.make_mesh(ConfigDict(dict(data=shape[0], fsdp=shape[1], tensor=shape[2])),
                              jax.devices()[:int(np.prod(shape))])
    specs = nn.get_partition_spec(jax.eval_shape(
        lambda: Transformer(c).init(jax.random.key(0), tokens[:1, :8]))["params"])
    shardings = sharding.logical_sharding(mesh, rules, specs, p)
    placed = jax.device_put(p, shardings)
    with sharding.mesh_context(mesh), nn.logical_axis_rules(rules):
      logits = jax.jit(lambda p, t: Transformer(c).apply({"params": p}, t))(placed, tokens)
    q = dict(placed["layers_0"]["attn"]["q_proj"]["lora"])
    if name == "qlora":
      q["codes"] = placed["layers_0"]["attn"]["q_proj"]["kernel_nf4"]["codes"]
    out[name + str(shape)] = {"logits": np.asarray(logits).tolist(),
                              **{k: [list(x.sharding.spec), list(x.sharding.shard_shape(x.shape))]
                                 for k, x in q.items()}}
print("RESULT" + json.dumps(out))
"""


def test_sharded_mesh_forward_equals_one_device():
  """Adapters carry their matrix's logical names plus an unsharded ``lora`` axis: on a
  (2, 2, 2) mesh q_proj's A splits embed over fsdp, B splits heads over tensor; a
  QLoRA base's NF4 codes split as the kernel they hold."""
  env = dict(os.environ, XLA_FLAGS=xla_flags(8), JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", MESH_SCRIPT], env=env, capture_output=True,
                        text=True, cwd=ROOT, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))[6:])
  for name in ("lora", "qlora"):
    one, mesh = out[name + "(1, 1, 1)"], out[name + "(2, 2, 2)"]
    np.testing.assert_allclose(mesh["logits"], one["logits"], atol=1e-5, rtol=0)
    assert mesh["a"] == [["fsdp", None], [16, 4]]
    assert mesh["b"] == [[None, "tensor", None], [4, 4, 8]]
  # NF4 codes [D, H, E / 2]: embed over fsdp, heads over tensor, as the kernel.
  assert out["qlora(2, 2, 2)"]["codes"] == [["fsdp", "tensor", None], [16, 4, 4]]
  assert np.abs(np.subtract(out["qlora(1, 1, 1)"]["logits"],
                            out["lora(1, 1, 1)"]["logits"])).max() > 0  # the base did change
