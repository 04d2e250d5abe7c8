"""Attention throughput on a GPU: TFLOP/s of forward and forward+backward.

    python benchmarks/attention.py                        # T 1k-8k, D 64/80/128, causal bf16
    python benchmarks/attention.py --seq=2048 --head-dim=128 --impls=pallas_gpu,cudnn
    python benchmarks/attention.py --gpu-blocks=block_q=128,block_k=128,num_warps=8
    python benchmarks/attention.py --smoke                # CPU: tiny shapes, interpret mode

Implementations: ``xla`` (phijax reference), ``pallas_gpu`` (phijax Triton kernel),
``cudnn`` (jax.nn.dot_product_attention) and ``jax_mha`` (JAX's shipped
jax.experimental.pallas.ops.gpu.attention.mha, called with sm_scale=1/sqrt(D) since
its default is 1.0). Shapes follow the FlashAttention-2 paper: batch = tokens / T
(16k tokens), heads = hidden / D (hidden 2048). FLOPs are FA2's: forward
4*B*T^2*H*D, halved when causal; backward 2.5x forward. ``err(xla)``: max |out - xla's
out|; ``grad err``: max |dq, dk, dv - xla's| over xla's largest gradient entry. A failing or OOM case
prints its error and the table goes on. Not a test: on a machine without a GPU it
says so and exits 0 (``--smoke`` runs the code path on CPU instead).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from phijax.model import attention  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402  (benchmarks/timing.py)
from phijax.kernels import gpu_triton  # noqa: E402

IMPLS = ("xla", "pallas_gpu", "cudnn", "jax_mha")


def attention_fn(impl, *, causal, scale, blocks, interpret):
  """``f(q, k, v) -> out`` for one implementation."""
  if impl == "xla":
    return lambda q, k, v: attention.xla_attention(q, k, v, causal=causal, scale=scale)
  if impl == "pallas_gpu":
    return lambda q, k, v: gpu_triton.flash_attention(
        q, k, v, causal=causal, scale=scale, block_sizes=blocks, interpret=interpret)
  if impl == "cudnn":
    return lambda q, k, v: attention.dot_product_attention(
        q, k, v, causal=causal, scale=scale, impl="cudnn")
  if impl == "jax_mha":
    from jax.experimental.pallas.ops.gpu import attention as shipped
    return lambda q, k, v: shipped.mha(q, k, v, None, sm_scale=scale, causal=causal,
                                       interpret=interpret)
  raise ValueError(f"unknown impl {impl!r}; choose from {IMPLS}")


def median_seconds(fn, args, iters, warmup):
  compiled = jax.jit(fn).lower(*args).compile()
  return statistics.median(timing.call_seconds(compiled, args, iters, warmup))


def fa2_forward_flops(B, T, H, D, causal):
  flops = 4.0 * B * T * T * H * D
  return flops / 2 if causal else flops


def _error_line(e):
  text = f"{type(e).__name__}: {e}".splitlines()[0]
  return text[:160]


def bench_case(impl, B, T, H, D, *, causal, dtype, blocks, iters, warmup, interpret,
               reference=None):
  rng = np.random.default_rng(0)
  q, k, v, dout = (jnp.asarray(rng.standard_normal((B, T, H, D)), dtype) for _ in range(4))
  scale = 1.0 / math.sqrt(D)
  f = attention_fn(impl, causal=causal, scale=scale, blocks=blocks, interpret=interpret)
  fwd_flops = fa2_forward_flops(B, T, H, D, causal)
  row = dict(impl=impl, T=T, D=D, B=B, H=H)
  try:
    out = jax.jit(f)(q, k, v)
    if reference is not None:
      row["max_abs_err_vs_xla"] = float(jnp.max(jnp.abs(
          out.astype(jnp.float32) - reference[0].astype(jnp.float32))))
    seconds = median_seconds(f, (q, k, v), iters, warmup)
    row.update(fwd_ms=seconds * 1e3, fwd_tflops=fwd_flops / seconds / 1e12)
  except Exception as e:  # noqa: BLE001 - one failing impl must not end the table
    row["fwd_error"] = _error_line(e)
    return row, None

  def fwd_bwd(q, k, v, dout):
    out, vjp = jax.vjp(f, q, k, v)
    return vjp(dout)

  grads = None
  try:
    grads = jax.jit(fwd_bwd)(q, k, v, dout)
    if reference is not None:
      # max |dq, dk, dv - xla's| relative to xla's largest gradient entry
      ref_grads = reference[1]
      scale_ = max(float(jnp.max(jnp.abs(g.astype(jnp.float32)))) for g in ref_grads)
      row["max_grad_err_vs_xla"] = max(float(jnp.max(jnp.abs(
          a.astype(jnp.float32) - b.astype(jnp.float32)))) for a, b in zip(grads, ref_grads)
      ) / scale_
    seconds = median_seconds(fwd_bwd, (q, k, v, dout), iters, warmup)
    row.update(fwd_bwd_ms=seconds * 1e3, fwd_bwd_tflops=3.5 * fwd_flops / seconds / 1e12)
  except Exception as e:  # noqa: BLE001
    row["fwd_bwd_error"] = _error_line(e)
  return row, (out, grads)


def format_row(row):
  def cell(key, err_key):
    if err_key in row:
      return f"error: {row[err_key]}"
    return f"{row[key]:.3g}" if key in row else "-"
  err = row.get("max_abs_err_vs_xla")
  gerr = row.get("max_grad_err_vs_xla")
  return (f"| {row['T']:>5} | {row['D']:>3} | {row['B']:>2} | {row['H']:>2} | "
          f"{row['impl']:<10} | {cell('fwd_tflops', 'fwd_error'):>8} | "
          f"{cell('fwd_bwd_tflops', 'fwd_bwd_error'):>8} | "
          f"{'-' if err is None else f'{err:.1e}':>8} | "
          f"{'-' if gerr is None else f'{gerr:.1e}':>8} |")


def parse_blocks(text):
  if not text:
    return None
  fields = {f.name for f in dataclasses.fields(gpu_triton.BlockSizes)}
  values = {}
  for item in text.split(","):
    key, _, value = item.partition("=")
    if key not in fields:
      raise SystemExit(f"--gpu-blocks: unknown field {key!r}; fields are {sorted(fields)}")
    values[key] = int(value)
  return gpu_triton.BlockSizes(**values)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seq", default="1024,2048,4096,8192")
  parser.add_argument("--head-dim", default="64,80,128")
  parser.add_argument("--impls", default=",".join(IMPLS))
  parser.add_argument("--tokens", type=int, default=16384, help="batch * seq per case")
  parser.add_argument("--hidden", type=int, default=2048, help="heads * head_dim")
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--no-causal", action="store_true")
  parser.add_argument("--iters", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--gpu-blocks", default="", help="BlockSizes fields for pallas_gpu")
  parser.add_argument("--json", default="", help="also write the rows to this file")
  parser.add_argument("--smoke", action="store_true",
                      help="CPU check of this script: tiny shapes, Pallas interpret mode")
  args = parser.parse_args(argv)

  interpret = False
  if args.smoke:
    args.seq, args.head_dim, args.tokens, args.hidden = "128", "64", 256, 128
    args.iters, args.warmup, interpret = 1, 0, True
    impls = [i for i in args.impls.split(",") if i != "cudnn"]
  else:
    impls = args.impls.split(",")
    if jax.default_backend() != "gpu":
      print(f"benchmarks/attention.py: no GPU (default backend: {jax.default_backend()}); "
            "skipping. Run it on an A100/H100, or pass --smoke for a CPU check.")
      return 0
  for impl in impls:
    if impl not in IMPLS:
      raise SystemExit(f"--impls: unknown {impl!r}; choose from {IMPLS}")
  blocks = parse_blocks(args.gpu_blocks)
  causal = not args.no_causal
  dtype = jnp.dtype(args.dtype)
  print(f"device: {jax.devices()[0].device_kind}; jax {jax.__version__}; {dtype.name}; "
        f"{'causal' if causal else 'not causal'}; TFLOP/s with FA2 counting")
  print("|     T |   D |  B |  H | impl       |      fwd |  fwd+bwd | err(xla) | grad err |")
  print("|------:|----:|---:|---:|:-----------|---------:|---------:|---------:|---------:|")
  rows = []
  for T in (int(t) for t in args.seq.split(",")):
    for D in (int(d) for d in args.head_dim.split(",")):
      B, H = max(1, args.tokens // T), max(1, args.hidden // D)
      reference = None
      for impl in (["xla"] if "xla" in impls else []) + [i for i in impls if i != "xla"]:
        row, out = bench_case(impl, B, T, H, D, causal=causal, dtype=dtype, blocks=blocks,
                              iters=args.iters, warmup=args.warmup, interpret=interpret,
                              reference=reference)
        if impl == "xla" and out is not None and out[1] is not None:
          reference = out
        rows.append(row)
        print(format_row(row), flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
