"""CPU: the dense XLA reference attention against the blocked causal path, forward +
backward, at the tiny config's shape (or --B/--T/--H/--D). Ratio from one run.

    python benchmarks/xla_attention_cpu.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from phijax import attention  # noqa: E402
from phijax.kernels import xla_blocked  # noqa: E402


def seconds(fn, args, iters):
  jax.block_until_ready(fn(*args))
  t = time.perf_counter()
  for _ in range(iters):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t) / iters


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  for name, default in (("B", 16), ("T", 256), ("H", 6), ("D", 32), ("iters", 5)):
    p.add_argument(f"--{name}", type=int, default=default)
  a = p.parse_args()
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((a.B, a.T, a.H, a.D)), jnp.float32)
             for _ in range(3))
  seg = jnp.ones((a.B, a.T), jnp.int32)  # packed rows pass segment ids, as training does
  impls = {"dense (xla_attention)": lambda q, k, v: attention.xla_attention(
               q, k, v, segment_ids=seg),
           "blocked (impl=xla)": lambda q, k, v: attention.dot_product_attention(
               q, k, v, segment_ids=seg, impl="xla")}
  print(f"B {a.B} T {a.T} H {a.H} D {a.D}, causal, fwd+bwd, blocks "
        f"{xla_blocked.causal_blocks(a.T)}, {xla_blocked.group_size(a.B, a.H, a.T)} "
        f"sequence(s) at a time")
  times = {}
  for name, f in impls.items():
    g = jax.jit(jax.grad(lambda q, k, v: jnp.sum(f(q, k, v) ** 2), argnums=(0, 1, 2)))
    times[name] = seconds(g, (q, k, v), a.iters)
    print(f"{name:24s} {1e3 * times[name]:8.1f} ms")
  dense, blocked = times.values()
  print(f"blocked / dense speed: {dense / blocked:.2f}x")


if __name__ == "__main__":
  main()
