"""Compile the GPU kernels through Triton to cubin without a GPU (A100 and H100).

    pip install triton                          # here, or into a separate venv, then
    python -m phijax.kernels.triton_compile_check [--triton-python=VENV/bin/python]

Interpret mode checks the kernels' numerics on CPU but not what only the real
toolchain sees: Triton's verifier, layouts, register and shared-memory use. This
lowers the forward, dK/dV and dQ kernels of phi-like shapes (fp32/bf16/fp16;
D 64/80/96/128; GQA, segments, window) through JAX's Pallas Triton lowering on
CPU, writes each module as ``.ttir`` text, and compiles it with pip's ``triton``
for sm80 and sm90 with the kernel's own warps and stages, printing the shared
memory each needs against the per-block limit. Exit status 1 if any fails.

The pip Triton is not the one XLA bundles, so a pass here is strong evidence, not
proof. It reads the Triton module through a private JAX hook (checked with jax
0.10.2); a newer JAX may need that one line updated.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp

from phijax.kernels import gpu_triton

# Max dynamic shared memory per block (CUDA programming guide, compute capabilities).
SHARED_LIMIT = {80: 166912, 90: 232448}

CASES = [  # name, (B, T, H, K, D), dtype, causal, segmented, window
    ("d64_bf16_causal", (4, 2048, 16, 16, 64), jnp.bfloat16, True, False, None),
    ("d80_bf16_gqa_segments_window", (2, 2048, 32, 8, 80), jnp.bfloat16, True, True, 512),
    ("d96_f16_window", (2, 4096, 32, 32, 96), jnp.float16, True, False, 2047),
    ("d128_bf16_gqa", (2, 4096, 40, 10, 128), jnp.bfloat16, True, False, None),
    ("d128_f32_not_causal", (1, 1024, 8, 8, 128), jnp.float32, False, False, None),
]

_COMPILE = r"""
import json, sys
import triton
from triton.backends.compiler import GPUTarget
for job in json.load(open(sys.argv[1])):
  for cc in (80, 90):
    try:
      k = triton.compile(job["path"], target=GPUTarget("cuda", cc, 32),
                         options={"num_warps": job["num_warps"],
                                  "num_stages": job["num_stages"]})
      print(json.dumps(dict(job, cc=cc, shared=k.metadata.shared)), flush=True)
    except Exception as e:
      print(json.dumps(dict(job, cc=cc, error=f"{type(e).__name__}: {e}"[:500])),
            flush=True)
"""


def dump_modules(out_dir):
  """Lowers every case for CUDA on this (CPU) machine; returns the compile jobs."""
  from jax._src.pallas.triton import pallas_call_registration as registration
  captured = []
  lower = registration.lowering.lower_jaxpr_to_triton_module

  def capturing(*args, **kwargs):
    result = lower(*args, **kwargs)
    captured.append(result.module.operation.get_asm())
    return result

  registration.lowering.lower_jaxpr_to_triton_module = capturing
  jobs = []
  try:
    for name, (B, T, H, K, D), dtype, causal, segmented, window in CASES:
      q = jax.ShapeDtypeStruct((B, T, H, D), dtype)
      kv = jax.ShapeDtypeStruct((B, T, K, D), dtype)
      seg = jax.ShapeDtypeStruct((B, T), jnp.int32) if segmented else None

      def loss(q, k, v, seg):
        out, lse = gpu_triton.flash_attention(q, k, v, causal=causal, segment_ids=seg,
                                              window=window, return_lse=True)
        return out.astype(jnp.float32).sum() + lse.sum()

      captured.clear()
      jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(q, kv, kv, seg).lower(
          lowering_platforms=("cuda",))
      blocks = gpu_triton._resolve_blocks(None, T, T, D, jnp.dtype(dtype))
      warps = (blocks.num_warps, blocks.num_warps_bwd, blocks.num_warps_bwd)
      for kernel, text, num_warps in zip(("fwd", "dkv", "dq"), captured, warps):
        path = os.path.join(out_dir, f"{name}_{kernel}.ttir")
        with open(path, "w") as f:
          f.write(text)
        jobs.append(dict(path=path, num_warps=num_warps, num_stages=blocks.num_stages))
  finally:
    registration.lowering.lower_jaxpr_to_triton_module = lower
  return jobs


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--triton-python", default=sys.executable,
                      help="a Python that can `import triton` (default: this one)")
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as out_dir:
    jobs = dump_modules(out_dir)
    jobs_file = os.path.join(out_dir, "jobs.json")
    with open(jobs_file, "w") as f:
      json.dump(jobs, f)
    proc = subprocess.run([args.triton_python, "-c", _COMPILE, jobs_file],
                          capture_output=True, text=True)
    if proc.returncode:
      print(proc.stderr[-2000:])
      print("could not run triton: `pip install triton` or pass --triton-python")
      return 1
    failed = 0
    for line in proc.stdout.splitlines():
      r = json.loads(line)
      name = os.path.basename(r["path"])[:-len(".ttir")]
      if "error" in r or r["shared"] > SHARED_LIMIT[r["cc"]]:
        failed += 1
      status = r.get("error") or (f"shared {r['shared']} B of {SHARED_LIMIT[r['cc']]}")
      print(f"sm{r['cc']} {name:<38} warps {r['num_warps']} stages {r['num_stages']}: "
            f"{status}")
  print("all compiled" if not failed else f"{failed} failed")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
