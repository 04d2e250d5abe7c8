"""Device mesh ``(data, fsdp, tensor)`` and logical-axis rules.

Every parameter and activation names its axes (``batch``, ``length``, ``embed``,
``heads``, ``kv_heads``, ``head_dim``, ``mlp``, ``vocab``, LoRA's ``lora``); the rules
below map names to mesh axes. Flax applies the rules in order and never uses one mesh
axis twice in one array, so ``batch`` (activations) takes ``fsdp`` before ``embed``
can: the same rules give data parallelism, FSDP (parameters sharded over ``fsdp``) and
tensor parallelism (heads/mlp/vocab over ``tensor``) purely by the mesh sizes.
"""

from __future__ import annotations

import logging
import math
import re

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("embed", "fsdp"),
    ("length", None),
    ("head_dim", None),
    # LoRA's rank (phijax.model.lora): a few columns, replicated; an adapter's other
    # dims follow its matrix's names.
    ("lora", None),
)

PRESETS = {"default": DEFAULT_RULES}


def path_names(path) -> tuple:
  """A pytree key path as plain strings: ``("layers_0", "attn", "q_proj", "kernel")``."""
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
               for k in path)


def parse_rules(spec: str):
  """``"default"`` or ``"batch=data+fsdp,embed=fsdp,heads=tensor,..."``."""
  if spec in PRESETS:
    return PRESETS[spec]
  rules = []
  for item in filter(None, (s.strip() for s in spec.split(","))):
    m = re.fullmatch(r"(\w+)=([\w+]*)", item)
    if not m:
      raise ValueError(f"mesh.rules: cannot read {item!r}; write name=axis or "
                       f"name=axis+axis (axes {MESH_AXES}), or a preset {list(PRESETS)}")
    name, axes = m.groups()
    axes = tuple(a for a in axes.split("+") if a)
    for a in axes:
      if a not in MESH_AXES:
        raise ValueError(f"mesh.rules: {a!r} in {item!r} is not a mesh axis {MESH_AXES}")
    rules.append((name, axes[0] if len(axes) == 1 else (axes or None)))
  return tuple(rules)


def mesh_shape(cfg_mesh, num_devices: int) -> tuple[int, int, int]:
  """Sizes of (data, fsdp, tensor); one -1 takes the devices left over."""
  sizes = [int(cfg_mesh.data), int(cfg_mesh.fsdp), int(cfg_mesh.tensor)]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh: only one of data/fsdp/tensor may be -1, got {sizes}")
  fixed = math.prod(s for s in sizes if s != -1)
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh: sizes must be positive or -1, got {sizes}")
  if -1 in sizes:
    if num_devices % fixed:
      raise ValueError(f"mesh: {num_devices} devices cannot be split by the fixed sizes "
                       f"{sizes} (their product {fixed} must divide the device count)")
    sizes[sizes.index(-1)] = num_devices // fixed
  if math.prod(sizes) != num_devices:
    raise ValueError(f"mesh: data*fsdp*tensor = {'*'.join(map(str, sizes))} = "
                     f"{math.prod(sizes)} but there are {num_devices} devices; set "
                     "--config.mesh.data=-1 to take the rest")
  return tuple(sizes)


def make_mesh(cfg_mesh, devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(cfg_mesh, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def logical_sharding(mesh: Mesh, rules, logical_spec_tree, shapes=None):
  """PartitionSpecs of logical names -> NamedShardings on ``mesh``.

  With ``shapes`` (a matching tree of arrays / ShapeDtypeStructs), a dimension that
  the mesh axes do not divide evenly (e.g. 10 kv heads on 8-way tensor parallelism)
  is left whole (replicated) instead of failing, and said once in the log.
  """
  shardings = nn.logical_to_mesh_sharding(logical_spec_tree, mesh, list(rules))
  if shapes is None:
    return shardings

  def fit(sh, x):
    entries = list(sh.spec) + [None] * (len(x.shape) - len(sh.spec))
    for i, entry in enumerate(entries):
      axes = (entry,) if isinstance(entry, str) else (entry or ())
      ways = math.prod(mesh.shape[a] for a in axes)
      if ways > 1 and x.shape[i] % ways:
        _warn_once(f"dimension {i} of a {tuple(x.shape)} parameter is not divisible "
                   f"by mesh axes {axes} ({ways}); keeping it whole")
        entries[i] = None
    return NamedSharding(mesh, P(*entries))

  return jax.tree_util.tree_map(fit, shardings, shapes)


_WARNED = set()


def _warn_once(msg):
  if msg not in _WARNED:
    _WARNED.add(msg)
    logging.getLogger("phijax").warning(msg)


def batch_sharding(mesh: Mesh, rules) -> NamedSharding:
  spec = nn.logical_to_mesh_axes(("batch", "length"), list(rules))
  return NamedSharding(mesh, spec)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_divisor(mesh: Mesh, rules) -> int:
  """How many ways the batch axis is split: the batch size must be a multiple."""
  spec = nn.logical_to_mesh_axes(("batch",), list(rules))[0]
  if spec is None:
    return 1
  axes = (spec,) if isinstance(spec, str) else spec
  return math.prod(mesh.shape[a] for a in axes)


def mesh_context(mesh: Mesh):
  """Makes ``mesh`` the ambient mesh for sharding constraints inside jit.

  ``jax.set_mesh`` is the JAX 0.10+ spelling; older releases used the mesh itself
  as the context manager. Kept here so version differences live in one place.
  """
  if hasattr(jax, "set_mesh"):
    return jax.set_mesh(mesh)
  return mesh  # pragma: no cover - JAX < 0.7
