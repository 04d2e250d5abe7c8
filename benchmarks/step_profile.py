"""Where a train step's time goes: a jax.profiler trace of a few steps of a config's
model, per-op times grouped by model part (from each op's name scope) and pass.

    python benchmarks/step_profile.py                       # configs/tiny.py
    python benchmarks/step_profile.py --config=configs/tiny.py --steps=3

Per-op times come from XLA:CPU's thunk trace events (ops run one after another,
each using all cores), so the parts add up to about the step time. Not a test.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import train_throughput as tt  # noqa: E402  (same config loading and random batch)

PARTS = ("attn", "mlp", "btd,dv", "norm", "embed")  # name scopes, in match order
LABELS = {"btd,dv": "lm_head", "attn": "attention (incl. q/k/v/o, rope)"}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/tiny.py")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--top", type=int, default=0,
                 help="also list the N slowest HLO instructions with their name scope")
  args = p.parse_args()
  config = tt.load_config(args.config)
  fns, state, batch = tt.phijax_step_inputs(config)
  lr = jnp.float32(1e-3)
  for _ in range(3):
    state, m = fns.train_step(state, batch, lr)
  jax.block_until_ready(m)
  op_names = {}  # HLO instruction -> op_name metadata (its name scope)
  hlo = fns.compile_train_step(config.train.batch_size, config.data.seq_len).as_text()
  for line in hlo.splitlines():
    hit = re.match(r'\s*(?:ROOT )?%?([\w.\-]+) = .*op_name="([^"]+)"', line)
    if hit:
      op_names[hit.group(1)] = hit.group(2)
  with tempfile.TemporaryDirectory() as d:
    t = time.perf_counter()
    with jax.profiler.trace(d, create_perfetto_trace=True):
      for _ in range(args.steps):
        state, m = fns.train_step(state, batch, lr)
      jax.block_until_ready(m)
    wall = (time.perf_counter() - t) / args.steps
    trace = json.load(gzip.open(glob.glob(f"{d}/**/*.trace.json.gz", recursive=True)[0]))
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  total, per_op = collections.Counter(), collections.Counter()
  for e in events:
    name = op_names.get(e.get("name"))
    if e.get("ph") != "X" or name is None:
      continue  # runtime frames, Python frames, thread-pool waits
    per_op[(e["name"], name)] += e["dur"] / 1e3 / args.steps
    part = next((LABELS.get(x, x) for x in PARTS if x in name), "other (loss, optimizer, ...)")
    total[(part, "bwd" if "transpose(" in name else "fwd")] += e["dur"] / 1e3 / args.steps
  ops = sum(total.values())
  print(f"{args.config}: {wall * 1e3:.0f} ms/step wall (profiled), {ops:.0f} ms in ops")
  for (part, pas), ms in total.most_common():
    print(f"  {part:34s} {pas}  {ms:7.1f} ms  {100 * ms / ops:5.1f}%")
  if args.top:
    print(f"slowest {args.top} HLO instructions (ms/step, name scope):")
    for (inst, name), ms in per_op.most_common(args.top):
      print(f"  {ms:7.2f}  {inst:28s} {name[-90:]}")


if __name__ == "__main__":
  main()
