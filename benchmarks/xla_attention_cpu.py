"""CPU: the dense XLA reference attention against the blocked causal path, forward +
backward, at the tiny config's shape (or --B/--T/--H/--D), and torch's SDPA beside
them when torch is installed (the ``hf`` extra; same shape, its own threads). Best
of ``--iters`` calls each, ratios from one run.

    python benchmarks/xla_attention_cpu.py                  # tiny: 16 x 256, 6 heads
    python benchmarks/xla_attention_cpu.py --B=8 --H=8      # train_throughput's wide
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

from phijax.model import attention  # noqa: E402
from phijax.kernels import xla_blocked  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402  (benchmarks/timing.py)


def torch_seconds(q, k, v, iters):
  """Best seconds of torch's causal SDPA forward + backward of ``sum(out ** 2)``, or
  None without torch."""
  try:
    import torch
  except ImportError:
    return None
  q, k, v = (torch.tensor(np.asarray(x)).transpose(1, 2).contiguous().requires_grad_()
             for x in (q, k, v))  # [B, H, T, D]

  def call():
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    return torch.autograd.grad((out ** 2).sum(), (q, k, v))

  call()
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return min(times)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  for name, default in (("B", 16), ("T", 256), ("H", 6), ("D", 32), ("iters", 20)):
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
    times[name] = min(timing.call_seconds(g, (q, k, v), a.iters))
    print(f"{name:24s} {1e3 * times[name]:8.1f} ms")
  dense, blocked = times.values()
  print(f"blocked / dense speed: {dense / blocked:.2f}x")
  theirs = torch_seconds(q, k, v, a.iters)
  if theirs is not None:
    import torch
    print(f"{'torch SDPA':24s} {1e3 * theirs:8.1f} ms (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads); blocked / torch speed: {theirs / blocked:.2f}x")


if __name__ == "__main__":
  main()
