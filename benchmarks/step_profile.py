"""Where a train step's time goes: a jax.profiler trace of a few steps of a config's
model, per-op times grouped by model part (from each op's name scope) and pass.

    python benchmarks/step_profile.py                       # configs/tiny.py
    python benchmarks/step_profile.py --config=configs/tiny.py --steps=3

    python benchmarks/step_profile.py --config=configs/phi1_5.py --batch=8 --impl=cudnn --top=25

On CPU, per-op times come from XLA:CPU's thunk trace events. Independent ops run at
the same time there (the head's ``dx`` and ``dw`` products of one chunk each take a
core), so the parts can add up to more than the step: the first line gives both the
sum of the ops' times and the time during which at least one op ran. On an accelerator
they come from the device's kernel events (each names its HLO op in ``hlo_op``), and
every kernel is also put in a kind (matmul, attention, other) by its kernel name.
Not a test.
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

# name scopes, in match order; the head's einsums are phijax.model.head_loss's per-chunk ones
PARTS = ("attn", "mlp", "bcd,dv", "bcv,dv", "bcd,bcv", "norm", "embed")
HEAD = "lm_head + loss"
LABELS = {"bcd,dv": HEAD, "bcv,dv": HEAD, "bcd,bcv": HEAD,
          "attn": "attention (incl. q/k/v/o, rope)"}


def kernel_kind(kernel: str, op_name: str) -> str:
  """A device kernel's kind, from its kernel name (cuBLAS/CUTLASS gemms, cuDNN or
  Pallas attention) or else its op's name scope."""
  k = kernel.lower()
  if any(t in k for t in ("gemm", "cublas", "cutlass", "nvjet", "xmma", "wgmma", "matmul")):
    return "matmul"
  if any(t in k for t in ("cudnn", "fmha", "flash", "attention", "mha")) or "pallas" in op_name:
    return "attention kernels"
  return "other (elementwise, reductions, copies)"


def _covered_ms(events) -> float:
  """Milliseconds covered by the union of the events' ``[ts, ts + dur)`` intervals."""
  covered, end = 0.0, None
  for start, stop in sorted((e["ts"], e["ts"] + e["dur"]) for e in events):
    if end is None or start > end:
      covered, end = covered + (stop - start), stop
    elif stop > end:
      covered, end = covered + (stop - end), stop
  return covered / 1e3


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/tiny.py")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--top", type=int, default=0,
                 help="also list the N slowest HLO instructions with their name scope")
  p.add_argument("--batch", type=int, default=0, help="rows per step (default: the config's)")
  p.add_argument("--impl", default="", help="attention impl (default: the config's)")
  p.add_argument("--shape", default="tiny", choices=("tiny", "wide"),
                 help="train_throughput.py's shapes: the config as it is, or its wide model")
  args = p.parse_args()
  config = tt.shaped(tt.load_config(args.config), args.shape)
  if args.batch:
    config.train.batch_size = args.batch
  if args.impl:
    config.model.attention_impl = args.impl
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
  on_device = jax.devices()[0].platform != "cpu"
  device_pids = {e["pid"] for e in events if e.get("ph") == "M"
                 and "/device:" in str(e.get("args", {}).get("name", ""))}
  total, per_op, kinds = collections.Counter(), collections.Counter(), collections.Counter()
  counted = []  # the events per_op adds up
  for e in events:
    if on_device and e.get("pid") not in device_pids:
      continue  # host threads: launches, not the kernels' time
    inst = e.get("name")
    if on_device:  # kernels are named after their fusion ("fusion_12" for fusion.12)
      inst = next((c for c in (e.get("args", {}).get("hlo_op"), inst,
                               re.sub(r"_(\d+)$", r".\1", str(inst))) if c in op_names), inst)
    name = op_names.get(inst)
    if e.get("ph") != "X" or name is None:
      continue  # runtime frames, Python frames, thread-pool waits
    per_op[(inst, name)] += e["dur"] / 1e3 / args.steps
    counted.append(e)
    if on_device:
      kinds[kernel_kind(e["name"], name)] += e["dur"] / 1e3 / args.steps
    part = next((LABELS.get(x, x) for x in PARTS if x in name), "other (loss, optimizer, ...)")
    total[(part, "bwd" if "transpose(" in name else "fwd")] += e["dur"] / 1e3 / args.steps
  ops = sum(total.values())
  busy = _covered_ms(counted) / args.steps
  print(f"{args.config}: {wall * 1e3:.0f} ms/step wall (profiled), {ops:.0f} ms in ops, "
        f"{busy:.0f} ms with at least one op running")
  for (part, pas), ms in total.most_common():
    print(f"  {part:34s} {pas}  {ms:7.1f} ms  {100 * ms / ops:5.1f}%")
  for kind, ms in kinds.most_common():
    print(f"  kernels: {kind:26s} {ms:7.1f} ms  {100 * ms / ops:5.1f}%")
  if args.top:
    print(f"slowest {args.top} HLO instructions (ms/step, name scope):")
    for (inst, name), ms in per_op.most_common(args.top):
      print(f"  {ms:7.2f}  {inst:28s} {name[-90:]}")


if __name__ == "__main__":
  main()
