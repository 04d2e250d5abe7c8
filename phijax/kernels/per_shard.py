"""Attention kernels under a device mesh: one kernel call per shard (``shard_map``).

GSPMD cannot partition a ``pallas_call``: to XLA it is an opaque custom call, so left
alone it gathers q, k and v onto every device and runs the whole attention on each.
Under a multi-device mesh (the ambient ``jax.set_mesh`` that the train step, the
evaluator and the generator enter) the kernels run per shard instead, laid out by the
logical-axis rules in force (``flax.linen.logical_axis_rules``): the batch split as
``batch`` is (data, fsdp), q heads as ``heads`` and kv heads as ``kv_heads`` are
(tensor). Every shard then holds whole sequences, whole head dims and whole GQA
groups (its q heads ``[i*H/t, (i+1)*H/t)`` use exactly its kv heads
``[i*K/t, (i+1)*K/t)``), so each computes its part alone, with no collective, and the
kernels' custom VJP runs per shard too. A batch the batch axes do not divide (one
prompt, init's dummy row) is left whole on every shard. A layout that breaks the
rest (the tensor axis not dividing the kv heads, rules that split the sequence or
head dim) is named by ``unsupported_reason``: an explicit impl then
raises it, ``auto`` falls back to XLA with one warning (``phijax.model.attention``).
"""

from __future__ import annotations

import functools
import math

import jax
from jax.sharding import PartitionSpec as P

Q_AXES = ("batch", "length", "heads", "head_dim")
KV_AXES = ("batch", "length", "kv_heads", "head_dim")


def _mesh():
  """The ambient mesh when it has more than one device and no manual axes yet."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return None
  manual = getattr(jax.sharding.AxisType, "Manual", None)
  if manual is not None and any(t == manual for t in mesh.axis_types):
    return None  # already inside a shard_map: the caller holds one shard
  return mesh


def _axes(entry, mesh) -> tuple:
  """A spec entry as a tuple of the mesh axes that really split (size > 1)."""
  names = (entry,) if isinstance(entry, str) else tuple(entry or ())
  return tuple(a for a in names if a in mesh.shape and mesh.shape[a] > 1)


def _ways(axes, mesh) -> int:
  return math.prod(mesh.shape[a] for a in axes)


def layout():
  """``(mesh, q_spec, kv_spec)``: the ambient mesh and, per dimension of q and of k/v,
  the mesh axes the rules in force split it over; None when no multi-device mesh is
  in force (the kernel then runs as one call)."""
  mesh = _mesh()
  if mesh is None:
    return None
  from flax import linen as nn  # the rules in force are flax's context
  rules = nn.get_logical_axis_rules()
  q_spec = [_axes(e, mesh) for e in nn.logical_to_mesh_axes(Q_AXES, rules)]
  kv_spec = [_axes(e, mesh) for e in nn.logical_to_mesh_axes(KV_AXES, rules)]
  return mesh, q_spec, kv_spec


def batch_ways(found) -> int:
  """How many ways the rules in force split the batch, from a ``layout()`` (1 for None)."""
  if found is None:
    return 1
  mesh, q_spec, _ = found
  return _ways(q_spec[0], mesh)


def unsupported_reason(q, k) -> str | None:
  """Why the kernel cannot run per shard under the ambient mesh (one line), or None."""
  found = layout()
  if found is None:
    return None
  mesh, q_spec, kv_spec = found
  for i, name in ((1, "length"), (3, "head_dim")):
    if q_spec[i] or kv_spec[i]:
      return (f"the sharding rules split '{name}' over mesh axes "
              f"{q_spec[i] or kv_spec[i]}; the kernels need whole sequences and head dims")
  batch, heads, kv_heads = q_spec[0], q_spec[2], kv_spec[2]
  if kv_spec[0] != batch:
    return f"q and k/v batch shardings differ ({batch} vs {kv_spec[0]})"
  if heads != kv_heads:
    return (f"q heads split over {heads} but kv heads over {kv_heads}: GQA groups would "
            "straddle shards")
  H, K = q.shape[2], k.shape[2]
  t = _ways(heads, mesh)
  if H % t or K % t:
    return (f"the mesh axes {heads} ({t} ways) do not divide the {H} q heads and "
            f"{K} kv heads")
  return None


def call(kernel_fn, q, k, v, segment_ids=None, *, return_lse=False):
  """``kernel_fn(q, k, v, segment_ids)`` once per shard of the ambient mesh (or once,
  whole, where there is no multi-device mesh). ``unsupported_reason`` must be None."""
  found = layout()
  if found is None:
    return kernel_fn(q, k, v, segment_ids)
  mesh, q_spec, _ = found  # unsupported_reason checked that k/v split like q
  batch, heads = q_spec[0] or None, q_spec[2] or None
  if batch and q.shape[0] % _ways(batch, mesh):
    batch = None  # e.g. one prompt, or init's dummy row: every shard takes all rows
  qs, seg = P(batch, None, heads, None), P(batch, None)  # q, k and v alike
  pair = isinstance(segment_ids, (tuple, list))
  args, specs = [q, k, v], [qs, qs, qs]
  if segment_ids is not None:
    segs = list(segment_ids) if pair else [segment_ids]
    args += segs
    specs += [seg] * len(segs)

  def body(q, k, v, *segs):
    ids = None if not segs else (tuple(segs) if pair else segs[0])
    return kernel_fn(q, k, v, ids)

  out_specs = (qs, P(batch, heads, None)) if return_lse else qs
  # check_vma=False: a pallas_call has no varying-axes rule; every output is per shard
  return jax.shard_map(body, mesh=mesh, in_specs=tuple(specs), out_specs=out_specs,
                       check_vma=False)(*args)


def kernel_call(module, *, causal, window, scale, interpret, return_lse=False):
  """``kernel_fn`` for ``call``: a Pallas module's ``flash_attention`` with its options."""
  return functools.partial(_flash, module, causal=causal, window=window, scale=scale,
                           interpret=interpret, return_lse=return_lse)


def _flash(module, q, k, v, segment_ids, **options):
  return module.flash_attention(q, k, v, segment_ids=segment_ids, **options)
