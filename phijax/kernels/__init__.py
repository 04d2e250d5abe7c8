"""Pallas flash-attention kernels behind ``phijax.model.attention.dot_product_attention``.

  geometry.py    which (query block, key block) tiles to visit or mask (shared)
  flash.py       checks, padding, custom_vjp wiring (shared by every backend)
  gpu_triton.py  GPU kernels, Pallas Triton lowering (A100/H100)
  tpu_mosaic.py  TPU kernels, Pallas Mosaic TPU
  compile_check.py  compiles both with the real Triton / Mosaic toolchains, no
                    hardware needed (``python -m phijax.kernels.compile_check``)

Each backend module exposes ``flash_attention(q, k, v, *, causal, segment_ids,
window, scale, block_sizes, interpret, return_lse)``, ``unsupported_reason(...)``
and its ``BlockSizes``. Backend modules are imported on use, not here.
"""
