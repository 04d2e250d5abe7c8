"""Train-step throughput of a config's model: phijax vs the same architecture in
Hugging Face transformers + torch (when the ``hf`` extra is installed).

    python benchmarks/train_throughput.py                      # configs/tiny.py
    python benchmarks/train_throughput.py --config=configs/tiny.py --steps=20

Both sides train the same shapes (batch, length) with AdamW (whatever the config's
optimizer: this compares the frameworks, not optimizers) on random tokens, after
warm-up steps; reported: tokens/s, MFU (phijax's FLOP counting, against the same
peak) and the ratio from this one run. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from phijax import metrics, optim, sharding  # noqa: E402
from phijax.model_config import ModelConfig  # noqa: E402
from phijax.train_step import build, device_batch  # noqa: E402


def load_config(spec):
  """A config by name or path, ``:arg`` included (phijax.config_files)."""
  from phijax import config_files
  return config_files.load(spec)


def phijax_step_inputs(config):
  """``(fns, state, batch)``: the config's model with AdamW, a random device batch."""
  model_cfg = ModelConfig.from_dict(config.model)
  mesh = sharding.make_mesh(config.mesh)
  adamw = config.optim.to_dict()
  adamw["name"] = "adamw"
  fns = build(model_cfg, optim.make_direction(ml_collections.ConfigDict(adamw)), mesh,
              sharding.DEFAULT_RULES)
  B, L = config.train.batch_size, config.data.seq_len
  rng = np.random.default_rng(0)
  batch = {"inputs": rng.integers(0, model_cfg.vocab_size, (B, L)).astype(np.int32),
           "targets": rng.integers(0, model_cfg.vocab_size, (B, L)).astype(np.int32),
           "positions": np.tile(np.arange(L, dtype=np.int32), (B, 1)),
           "segment_ids": np.ones((B, L), np.int32),
           "loss_mask": np.ones((B, L), np.float32)}
  return fns, fns.init(jax.random.key(0)), device_batch(batch, fns.batch_sharding)


def bench_phijax(config, steps, warmup):
  fns, state, dev = phijax_step_inputs(config)
  B, L = config.train.batch_size, config.data.seq_len
  for _ in range(warmup):
    state, m = fns.train_step(state, dev, jnp.float32(1e-3))
  jax.block_until_ready(m)
  t = time.perf_counter()
  for _ in range(steps):
    state, m = fns.train_step(state, dev, jnp.float32(1e-3))
  jax.block_until_ready(m)
  return B * L * steps / (time.perf_counter() - t)


def bench_torch(config, steps, warmup):
  try:
    import torch
    import transformers
  except ImportError:
    return None
  from phijax.convert.hf_config import model_config_to_hf
  model_cfg = ModelConfig.from_dict(config.model)
  hf = model_config_to_hf(model_cfg)
  cls = transformers.PhiConfig if model_cfg.arch == "phi" else transformers.Phi3Config
  model = (transformers.PhiForCausalLM if model_cfg.arch == "phi" else
           transformers.Phi3ForCausalLM)(cls(**{k: v for k, v in hf.items()
                                                 if k not in ("architectures", "model_type")}))
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
  B, L = config.train.batch_size, config.data.seq_len
  x = torch.randint(0, model_cfg.vocab_size, (B, L))

  def step():
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)

  for _ in range(warmup):
    step()
  t = time.perf_counter()
  for _ in range(steps):
    step()
  return (B * L * steps / (time.perf_counter() - t), torch.__version__, torch.get_num_threads(),
          model.config._attn_implementation)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/tiny.py")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=3)
  args = p.parse_args()
  config = load_config(args.config)
  model_cfg = ModelConfig.from_dict(config.model)
  L = config.data.seq_len
  peak, src = metrics.device_peak_flops()
  fpt = metrics.flops_per_token(model_cfg, L)
  ours = bench_phijax(config, args.steps, args.warmup)
  print(f"config {args.config}: batch {config.train.batch_size} x {L}, "
        f"{fpt / 1e6:.1f} MFLOP/token, peak {peak / 1e9:.1f} GFLOP/s ({src})")
  print(f"phijax  : {ours:10.0f} tokens/s  MFU {ours * fpt / peak:.3f}  (jax {jax.__version__})")
  theirs = bench_torch(config, args.steps, args.warmup)
  if theirs is None:
    print("HF torch: skipped (pip install 'phijax[hf]' to compare)")
    return
  tps, tv, threads, attn = theirs
  print(f"HF torch: {tps:10.0f} tokens/s  MFU {tps * fpt / peak:.3f}  (torch {tv}, "
        f"{threads} threads, {attn} attention)")
  print(f"ratio phijax / HF torch: {ours / tps:.2f}x")


if __name__ == "__main__":
  main()
