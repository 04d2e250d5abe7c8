r"""Compile the attention kernels with the real GPU/TPU toolchains, without the hardware.

    # GPU: Triton to cubin for A100 (sm80) and H100 (sm90)
    pip install triton                      # here, or in a venv passed below
    python -m phijax.kernels.compile_check triton [--triton-python=VENV/bin/python]

    # TPU: Mosaic through libtpu's ahead-of-time compiler for a TPU topology.
    # Use a separate venv: with libtpu installed every JAX start probes for a TPU.
    python -m venv --system-site-packages /tmp/tpu && /tmp/tpu/bin/pip install \
        "libtpu==$(python -c 'import re,importlib.metadata as m; print(next(re.search(r"libtpu==([\d.*]+)", r).group(1) for r in m.requires("jax") if r.startswith("libtpu")))')"
    /tmp/tpu/bin/python -m phijax.kernels.compile_check tpu --topology=v5e:1x1

Interpret mode checks the kernels' numerics on CPU, not what only the real
toolchains see (Triton's verifier and shared memory; Mosaic's tiling, layouts and
alignment proofs). Both checks build forward + backward (dK/dV, dQ) for phi-like
shapes (fp32/bf16/fp16; D 64/80/96/128; GQA, segments, window) and exit 1 if any
kernel fails. The Triton check reads each module through a private JAX hook
(checked with jax 0.10.2) and compiles it with pip's Triton, which is not the one
XLA bundles: strong evidence, not proof. The TPU check is JAX's own AOT path.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

# Max dynamic shared memory per block (CUDA programming guide).
SHARED_LIMIT = {80: 166912, 90: 232448}

CASES = [  # name, (B, T, H, K, D), dtype, causal, segmented, window
    ("d64_bf16_causal", (4, 2048, 16, 16, 64), jnp.bfloat16, True, False, None),
    ("d80_bf16_gqa_segments_window", (2, 2048, 32, 8, 80), jnp.bfloat16, True, True, 512),
    ("d96_f16_window", (2, 4096, 32, 32, 96), jnp.float16, True, False, 2047),
    ("d128_bf16_gqa", (2, 4096, 40, 10, 128), jnp.bfloat16, True, False, None),
    ("d128_f32_not_causal_T1000", (1, 1000, 8, 8, 128), jnp.float32, False, False, None),
]


def _grad_fn(module, causal, window):
  def loss(q, k, v, seg):
    out, lse = module.flash_attention(q, k, v, causal=causal, segment_ids=seg,
                                      window=window, return_lse=True)
    return out.astype(jnp.float32).sum() + lse.sum()
  return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def _shapes(B, T, H, K, D, dtype, segmented, sharding=None):
  q = jax.ShapeDtypeStruct((B, T, H, D), dtype, sharding=sharding)
  kv = jax.ShapeDtypeStruct((B, T, K, D), dtype, sharding=sharding)
  seg = jax.ShapeDtypeStruct((B, T), jnp.int32, sharding=sharding) if segmented else None
  return q, kv, kv, seg


# ---------------------------------------------------------------------------- Triton

_TRITON_COMPILE = r"""
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


def _dump_triton_modules(out_dir):
  """Lowers every case for CUDA on this machine; returns the compile jobs."""
  from jax._src.pallas.triton import pallas_call_registration as registration

  from phijax.kernels import gpu_triton
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
      captured.clear()
      _grad_fn(gpu_triton, causal, window).trace(
          *_shapes(B, T, H, K, D, dtype, segmented)).lower(lowering_platforms=("cuda",))
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


def check_triton(triton_python):
  failed = 0
  with tempfile.TemporaryDirectory() as out_dir:
    jobs = _dump_triton_modules(out_dir)
    jobs_file = os.path.join(out_dir, "jobs.json")
    with open(jobs_file, "w") as f:
      json.dump(jobs, f)
    proc = subprocess.run([triton_python, "-c", _TRITON_COMPILE, jobs_file],
                          capture_output=True, text=True)
    if proc.returncode:
      print(proc.stderr[-2000:])
      print("could not run triton: `pip install triton` or pass --triton-python")
      return 1
    for line in proc.stdout.splitlines():
      r = json.loads(line)
      name = os.path.basename(r["path"])[:-len(".ttir")]
      bad = "error" in r or r["shared"] > SHARED_LIMIT[r["cc"]]
      failed += bad
      status = r.get("error") or f"shared {r['shared']} B of {SHARED_LIMIT[r['cc']]}"
      print(f"{'FAIL' if bad else 'ok  '} sm{r['cc']} {name:<40} warps {r['num_warps']} "
            f"stages {r['num_stages']}: {status}")
  return failed


# ------------------------------------------------------------------------------- TPU

def check_tpu(topology):
  from jax.experimental import topologies
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  from phijax.kernels import tpu_mosaic
  # One chip per host, so that single-chip topologies such as v5e:1x1 are accepted.
  devices = topologies.get_topology_desc(
      platform="tpu", topology_name=topology, chip_config_name="default",
      chips_per_host_bounds=(1, 1, 1), num_slices=1).devices
  replicated = NamedSharding(Mesh(np.array(devices[:1]), ("x",)), PartitionSpec())
  failed = 0
  for name, (B, T, H, K, D), dtype, causal, segmented, window in CASES:
    if dtype == jnp.float16:
      dtype = jnp.bfloat16  # the TPU kernel refuses float16
    start = time.time()
    try:
      _grad_fn(tpu_mosaic, causal, window).trace(
          *_shapes(B, T, H, K, D, dtype, segmented, replicated)).lower().compile()
      status = f"compiled in {time.time() - start:.1f}s"
    except Exception as e:  # noqa: BLE001 - report every case
      failed += 1
      status = f"{type(e).__name__}: {str(e)[:800]}"
    print(f"{'ok  ' if status.startswith('compiled') else 'FAIL'} {topology} {name:<40} "
          f"{jnp.dtype(dtype).name}: {status}", flush=True)
  return failed


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("backend", choices=("triton", "tpu"))
  parser.add_argument("--triton-python", default=sys.executable,
                      help="a Python that can `import triton` (default: this one)")
  parser.add_argument("--topology", default="v5e:1x1",
                      help="TPU topology name, e.g. v4:1x1x1, v5e:1x1, v5p:1x1x1, v6e:1x1")
  args = parser.parse_args(argv)
  if args.backend == "triton":
    failed = check_triton(args.triton_python)
  else:
    failed = check_tpu(args.topology)
  print("all compiled" if not failed else f"{failed} failed")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
