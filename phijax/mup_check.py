"""muP coordinate check (Yang et al. 2021, "Tensor Programs V"): ``python -m phijax.mup_check``.

For hidden sizes 64 to 512 (head_dim fixed, so heads grow with the width; MLP 4x
hidden), with ``model.mup`` off (standard parametrisation) and on (MiniCPM's muP, see
``ModelConfig``), it prints the RMS of the embedding output, of each block's output
and of the logits: at init and after a few AdamW steps (``phijax.train.optim``, with the
model's ``width_mult``) on one batch of random tokens. The steps are the real test:
at one learning rate, the standard model's logits and activations grow with the
width, muP's stay flat (the max/min column), which is what lets a learning rate
tuned at a small width carry over to a wide one. ``tests/test_mup.py`` asserts it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from phijax.train import optim
from phijax.model import Block, Transformer, init_params
from phijax.model.config import ModelConfig

WIDTHS = (64, 128, 256, 512)


@dataclasses.dataclass(frozen=True)
class Setup:
  arch: str = "phi3"  # Llama-like like MiniCPM: pre-norm RMSNorm, SwiGLU, no biases
  num_layers: int = 2
  head_dim: int = 16
  # Few tokens, small vocab: with more (vocab 256, batch 4x16) the readout's update is
  # less aligned with each hidden state at width 64 and muP's logits spread 2x, not 1.4x.
  vocab_size: int = 64
  batch_size: int = 2
  seq_len: int = 8
  lr: float = 1e-2  # MiniCPM's tuned muP learning rate
  steps: int = 3
  seed: int = 0


def model_config(setup: Setup, width: int, mup: bool, **overrides) -> ModelConfig:
  """The model at ``width``; ``overrides`` (e.g. ``mup_scale_depth``) for experiments."""
  return ModelConfig(arch=setup.arch, vocab_size=setup.vocab_size, hidden_size=width,
                     num_layers=setup.num_layers, num_heads=width // setup.head_dim,
                     head_dim=setup.head_dim, intermediate_size=4 * width,
                     max_position_embeddings=setup.seq_len, mup=mup, **overrides)


def forward(cfg: ModelConfig, params, tokens):
  """``(logits, {activation: rms})``: the RMS of the embedding output (``x * scale_emb``
  under muP), of each block's output and of the logits, in that order."""
  logits, aux = Transformer(cfg).apply(
      {"params": params}, tokens, mutable=["intermediates"],
      capture_intermediates=lambda module, method: isinstance(module, Block))
  found = aux["intermediates"]
  acts = {"embedding": found["embedding"][0]}
  for i in range(cfg.num_layers):
    acts[f"layers_{i}"] = found[f"layers_{i}"]["__call__"][0]
  acts["logits"] = logits
  return logits, {name: jnp.sqrt(jnp.mean(jnp.square(a.astype(jnp.float32))))
                  for name, a in acts.items()}


def adamw(lr: float) -> ConfigDict:
  """``config.optim`` for plain AdamW: no clipping or weight decay to blur the check."""
  return ConfigDict(dict(name="adamw", lr=lr, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0,
                         clip=0.0, mu_dtype="", freeze=""))


def compile_fast(fn, *args):
  """``jax.jit(fn)`` compiled for ``args``; on CPU without LLVM's optimisations: about
  half the compile time, for programs that run for milliseconds either way."""
  options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
  return jax.jit(fn).lower(*args).compile(options)


def measure(configs: dict, setup: Setup) -> dict:
  """``{name: {"init": {activation: rms}, "trained": {...}}}`` for ``{name: config}``:
  before and after ``setup.steps`` AdamW steps at ``setup.lr`` on one batch of random
  tokens (next-token loss). The configs (one width, mup off and on) run in one program:
  their inits share the random numbers, a third less compile time than two."""
  txs = {name: optim.make_direction(adamw(setup.lr), width_mult=cfg.width_mult)
         for name, cfg in configs.items()}
  vocab = {cfg.vocab_size for cfg in configs.values()}.pop()
  tokens = np.random.default_rng(setup.seed).integers(
      0, vocab, (setup.batch_size, setup.seq_len + 1), dtype=np.int32)

  def init(key):
    params = {name: init_params(cfg, key) for name, cfg in configs.items()}
    return params, {name: txs[name].init(p) for name, p in params.items()}

  def loss(params, cfg):
    logits, rms = forward(cfg, params, tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean(), rms

  def step(params, opt_states):  # the activations are those of the params passed in
    rms = {}
    params, opt_states = dict(params), dict(opt_states)
    for name, cfg in configs.items():
      grads, rms[name] = jax.grad(loss, has_aux=True)(params[name], cfg)
      direction, opt_states[name] = txs[name].update(grads, opt_states[name], params[name])
      params[name] = jax.tree_util.tree_map(lambda p, d: p + setup.lr * d, params[name],
                                            direction)
    return params, opt_states, rms

  # unsafe_rbg: random bits, most of init's compile time, in 2/3 of threefry's. Init is
  # compiled optimised: unoptimised, the 512-wide one runs for 5 s.
  key = jax.random.key(setup.seed, impl="unsafe_rbg")
  params, opt_states = jax.jit(init)(key)
  step = compile_fast(step, params, opt_states)
  seen = []
  for _ in range(setup.steps + 1):  # the last update is not measured: it costs nothing
    params, opt_states, rms = step(params, opt_states)
    seen.append(jax.device_get(rms))
  return {name: {"init": {k: float(v) for k, v in seen[0][name].items()},
                 "trained": {k: float(v) for k, v in seen[-1][name].items()}}
          for name in configs}


def coordinate_check(setup: Setup = Setup(), widths=WIDTHS, **overrides):
  """``{(mup, width): {"init": ..., "trained": ...}}`` for mup off and on at every width;
  ``overrides`` go to both models' configs."""
  results = {}
  for w in widths:
    results.update(measure({(mup, w): model_config(setup, w, mup, **overrides)
                            for mup in (False, True)}, setup))
  return results


def spread(results, mup: bool, when: str, name: str, widths=WIDTHS) -> float:
  """max/min over the widths of one activation's RMS: 1.0 is perfectly flat."""
  values = [results[(mup, w)][when][name] for w in widths]
  return max(values) / min(values)


def table(results, setup: Setup, widths=WIDTHS) -> str:
  names = list(results[(False, widths[0])]["init"])
  head = f"{'RMS':<22}" + "".join(f"{w:>9}" for w in widths) + f"{'max/min':>9}"
  lines = [f"muP coordinate check: {setup.arch}, {setup.num_layers} layers, head_dim "
           f"{setup.head_dim}, MLP 4x, vocab {setup.vocab_size}, batch {setup.batch_size}x"
           f"{setup.seq_len}, AdamW lr {setup.lr:g}, {setup.steps} steps", head]
  for mup in (False, True):
    for when in ("init", "trained"):
      label = "muP" if mup else "standard"
      lines.append(f"{label}, {'at init' if when == 'init' else f'after {setup.steps} steps'}")
      for name in names:
        row = "".join(f"{results[(mup, w)][when][name]:>9.3g}" for w in widths)
        lines.append(f"  {name:<20}{row}{spread(results, mup, when, name, widths):>9.2f}")
  return "\n".join(lines)


def run(argv=None):
  """``python -m phijax.mup_check``: prints the table."""
  from phijax import cli

  parser = cli.ArgumentParser(prog="python -m phijax.mup_check", description=__doc__)
  defaults = Setup()
  parser.add_argument("--arch", default=defaults.arch, choices=("phi", "phi3"))
  parser.add_argument("--num_layers", type=int, default=defaults.num_layers)
  parser.add_argument("--lr", type=float, default=defaults.lr)
  parser.add_argument("--steps", type=int, default=defaults.steps)
  parser.add_argument("--seed", type=int, default=defaults.seed)
  parser.add_argument("--widths", default=",".join(map(str, WIDTHS)),
                      help="comma-separated hidden sizes, multiples of head_dim 16")

  def main(args):
    try:
      widths = tuple(int(w) for w in args.widths.split(","))
    except ValueError:
      raise cli.UsageError(f"--widths={args.widths!r}: give integers like 64,128") from None
    if any(w <= 0 or w % defaults.head_dim for w in widths):
      raise cli.UsageError(f"--widths={args.widths!r}: every width must be a positive "
                           f"multiple of head_dim {defaults.head_dim}")
    setup = dataclasses.replace(defaults, arch=args.arch, num_layers=args.num_layers,
                                lr=args.lr, steps=args.steps, seed=args.seed)
    print(table(coordinate_check(setup, widths), setup, widths))

  cli.main(parser, main, argv)


if __name__ == "__main__":
  run()
