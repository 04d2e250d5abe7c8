"""Train-step throughput of a config's model: phijax vs the same architecture in
Hugging Face transformers + torch (when the ``hf`` extra is installed).

    python benchmarks/train_throughput.py                      # configs/tiny.py
    python benchmarks/train_throughput.py --config=configs/tiny.py --steps=20

Two shapes by default: the config as it is (``tiny``) and a wider, deeper model
(``wide``: hidden 256, 6 layers, batch 8, the config's length). Both sides train the
same shapes (batch, length) with AdamW (whatever the config's optimizer: this
compares the frameworks, not optimizers) on random tokens, after warm-up steps, each
side in a fresh process, alternating ``--repeats`` times; reported: tokens/s per run,
the ratio of each pair and their median. Not a test: numbers depend on the machine.
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

from phijax.train import metrics  # noqa: E402
from phijax.train import optim  # noqa: E402
from phijax.model import sharding  # noqa: E402
from phijax.model.config import ModelConfig  # noqa: E402
from phijax.train.step import build, device_batch, random_batch  # noqa: E402


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
  batch = random_batch(B, L, model_cfg.vocab_size)
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


# The second shape: wider and deeper than tiny, a smaller batch.
WIDE = dict(hidden_size=256, num_layers=6, num_heads=8, intermediate_size=1024)
WIDE_BATCH = 8


def shaped(config, shape):
  """The config as benchmarked: ``tiny`` as it is, ``wide`` with WIDE's model."""
  if shape == "wide":
    config = config.copy_and_resolve_references()
    config.model.update(WIDE)
    config.train.batch_size = WIDE_BATCH
  return config


def one_side(args):
  """Runs one side in this process and prints its tokens/s (the parent reads it)."""
  config = shaped(load_config(args.config), args.shape)
  if args.side == "jax":
    print(f"tokens/s {bench_phijax(config, args.steps, args.warmup):.1f}")
    return
  got = bench_torch(config, args.steps, args.warmup)
  if got is None:
    print("tokens/s none")
    return
  tps, tv, threads, attn = got
  print(f"tokens/s {tps:.1f} torch {tv} threads {threads} attention {attn}")


def run_side(args, side, shape):
  """Tokens/s of one side in a fresh process (its own thread pools: JAX's and torch's
  would otherwise share the cores for the rest of the run), or None."""
  import subprocess
  out = subprocess.run([sys.executable, os.path.abspath(__file__), f"--config={args.config}",
                        f"--steps={args.steps}", f"--warmup={args.warmup}",
                        f"--side={side}", f"--shape={shape}"],
                       capture_output=True, text=True, check=True).stdout
  line = [x for x in out.splitlines() if x.startswith("tokens/s")][-1].split()
  return None if line[1] == "none" else (float(line[1]), " ".join(line[2:]))


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/tiny.py")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--shapes", default="tiny,wide",
                 help="comma-separated: tiny (the config as it is), wide (WIDE's model, "
                      f"batch {WIDE_BATCH})")
  p.add_argument("--repeats", type=int, default=3,
                 help="alternating phijax / torch runs per shape (the machine is noisy)")
  p.add_argument("--side", choices=("jax", "torch"), help=argparse.SUPPRESS)
  p.add_argument("--shape", default="tiny", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.side:
    return one_side(args)
  peak, src = metrics.device_peak_flops()
  for shape in args.shapes.split(","):
    config = shaped(load_config(args.config), shape)
    model_cfg = ModelConfig.from_dict(config.model)
    B, L = config.train.batch_size, config.data.seq_len
    fpt = metrics.flops_per_token(model_cfg, L)
    print(f"{shape}: {args.config}, hidden {model_cfg.hidden_size}, {model_cfg.num_layers} "
          f"layers, batch {B} x {L}, {fpt / 1e6:.1f} MFLOP/token, peak "
          f"{peak / 1e9:.1f} GFLOP/s ({src})")
    ratios = []
    for r in range(args.repeats):
      ours = run_side(args, "jax", shape)[0]
      theirs = run_side(args, "torch", shape)
      if theirs is None:
        print(f"  run {r + 1}: phijax {ours:8.0f} tokens/s  MFU {ours * fpt / peak:.3f}; "
              "HF torch skipped (pip install 'phijax[hf]' to compare)")
        continue
      ratios.append(ours / theirs[0])
      print(f"  run {r + 1}: phijax {ours:8.0f} tokens/s  HF torch {theirs[0]:8.0f} tokens/s "
            f"({theirs[1]})  ratio {ratios[-1]:.2f}x")
    if ratios:
      print(f"  {shape}: phijax / HF torch median {np.median(ratios):.2f}x "
            f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x, jax {jax.__version__})")


if __name__ == "__main__":
  main()
