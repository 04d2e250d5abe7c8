"""One timer for the benchmark scripts: per-call wall seconds, each call waited for."""

from __future__ import annotations

import time

import jax


def call_seconds(fn, args, iters: int, warmup: int = 1) -> list[float]:
  """Seconds of each of ``iters`` calls ``fn(*args)``, after ``warmup`` untimed calls
  (the first compiles a jitted ``fn``); every call is waited for (``block_until_ready``)."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return times
