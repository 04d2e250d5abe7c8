"""CPU: the LM head and its cross entropy, forward + backward, as autodiff of the whole
logits (the plain path) against phijax.model.head_loss's chunked, fused version, at the tiny
config's shape (or --B/--T/--D/--V). Ratio from one run; also the gradients' largest
relative difference.

    python benchmarks/head_loss.py
    taskset -c 1 python benchmarks/head_loss.py    # one core, as benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from phijax.model import head_loss  # noqa: E402
from phijax.train import losses  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402  (benchmarks/timing.py)


def best_ms(fn, args, iters):
  return 1e3 * min(timing.call_seconds(fn, args, iters))


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  for name, default in (("B", 16), ("T", 256), ("D", 192), ("V", 8192), ("iters", 10)):
    p.add_argument(f"--{name}", type=int, default=default)
  p.add_argument("--dtype", default="float32", help="of x, w and b (the logits are float32)")
  a = p.parse_args()
  dt = jnp.dtype(a.dtype)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((a.B, a.T, a.D)), dt)
  w = jnp.asarray(0.05 * rng.standard_normal((a.D, a.V)), dt)
  b = jnp.zeros((a.V,), dt)
  targets = jnp.asarray(rng.integers(0, a.V, (a.B, a.T)), jnp.int32)
  mask = jnp.ones((a.B, a.T), jnp.float32)

  def plain(x, w, b):
    logits = jnp.einsum("btd,dv->btv", x, w, preferred_element_type=jnp.float32) + b
    return losses.masked_sum(losses.token_losses(logits, targets)[1], mask)

  def fused(x, w, b):
    return head_loss.head_loss_sums(x, w, b, targets, mask)[0]

  grads = {}
  times = {}
  for name, f in (("plain (whole logits)", plain), ("fused (head_loss)", fused)):
    g = jax.jit(jax.grad(f, argnums=(0, 1, 2)))
    times[name] = best_ms(g, (x, w, b), a.iters)
    grads[name] = g(x, w, b)
    print(f"{name:22s} {times[name]:8.1f} ms fwd+bwd")
  err = max(float(jnp.max(jnp.abs(u.astype(jnp.float32) - v)) / jnp.max(jnp.abs(v.astype(jnp.float32))))
            for u, v in zip(*grads.values()))
  print(f"B {a.B} T {a.T} D {a.D} V {a.V}: {head_loss.chunk_positions(a.B, a.T, a.V)} "
        f"positions a chunk on {jax.devices()[0].platform}, {a.dtype}; fused / plain speed {times['plain (whole logits)'] / times['fused (head_loss)']:.2f}x; "
        f"gradients' largest relative difference {err:.1e}")


if __name__ == "__main__":
  main()
