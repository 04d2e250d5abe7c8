"""Joining and leaving JAX's multi-controller runtime (multi-host runs).

launch/local.py, launch/slurm.py and launch/tpu.py start the processes; each joins
here with ``jax.distributed.initialize`` (never a home-made runtime).
"""

from __future__ import annotations

import logging
import os
import socket

import jax


# What launch/local.py sets for each process (JAX itself reads the first and
# JAX_LOCAL_DEVICE_IDS; the count and the index it takes only as arguments).
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def maybe_initialize_distributed(cfg_mesh) -> bool:
  """Multi-host: joins JAX's own multi-controller runtime; True if it did.

  Runs when ``mesh.distributed`` is true or ``JAX_NUM_PROCESSES`` is set. The
  coordinator, process count and index come from ``JAX_COORDINATOR_ADDRESS``,
  ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` when set (launch/local.py), else from
  JAX's cluster detection (SLURM, Cloud TPU, MPI). Timeouts come from the config:
  a dead peer makes the others abort after ``mesh.heartbeat_timeout_s``.
  """
  env = os.environ
  if not (cfg_mesh.get("distributed", False) or env.get(ENV_NUM_PROCESSES)):
    return False
  if jax.distributed.is_initialized():
    return True
  kwargs = {}
  if env.get(ENV_NUM_PROCESSES):
    try:
      kwargs["num_processes"] = int(env[ENV_NUM_PROCESSES])
      kwargs["process_id"] = int(env.get(ENV_PROCESS_ID, ""))
    except ValueError:
      raise ValueError(f"{ENV_NUM_PROCESSES}={env.get(ENV_NUM_PROCESSES)!r} and "
                       f"{ENV_PROCESS_ID}={env.get(ENV_PROCESS_ID)!r} must both be "
                       "integers") from None
    if not 0 <= kwargs["process_id"] < kwargs["num_processes"]:
      raise ValueError(f"{ENV_PROCESS_ID}={kwargs['process_id']} is not in "
                       f"[0, {ENV_NUM_PROCESSES}={kwargs['num_processes']})")
    if not env.get(ENV_COORDINATOR):
      raise ValueError(f"{ENV_NUM_PROCESSES} is set but {ENV_COORDINATOR} (host:port "
                       "of process 0) is not")
    if kwargs["process_id"] == 0:
      check_port_free(env[ENV_COORDINATOR])
  for name in ("heartbeat_timeout_s", "initialization_timeout_s", "shutdown_timeout_s"):
    if int(cfg_mesh.get(name, 1)) <= 0:
      raise ValueError(f"mesh.{name} must be a positive number of seconds")
  jax.distributed.initialize(
      heartbeat_timeout_seconds=int(cfg_mesh.get("heartbeat_timeout_s", 100)),
      initialization_timeout=int(cfg_mesh.get("initialization_timeout_s", 300)),
      shutdown_timeout_seconds=int(cfg_mesh.get("shutdown_timeout_s", 300)),
      **kwargs)
  logging.getLogger("phijax").info(
      "process %d of %d joined; %d local and %d global devices", jax.process_index(),
      jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def exit_after_error(code: int, wait_s: float = 10.0) -> None:
  """Called by a failing multi-host process before it exits with ``code``.

  Python's exit runs ``jax.distributed.shutdown``, which waits for every process;
  the others may be blocked in a collective that waits for this one, so all would
  hang. If every process reaches this point within ``wait_s`` (bad input that each
  found) the normal exit is quick; otherwise this process exits at once, its
  heartbeats stop, and JAX aborts the others after ``mesh.heartbeat_timeout_s``.
  """
  if code == 0 or not jax.distributed.is_initialized():
    return
  from jax._src import distributed  # the coordination client: no public handle
  client = distributed.global_state.client
  try:
    client.wait_at_barrier("phijax_error_exit", int(wait_s * 1000))
    return
  except Exception:  # noqa: BLE001 - timed out: some process is still busy
    pass
  import sys
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


def check_port_free(address: str) -> None:
  """Raises a one-line ValueError if ``host:port`` cannot be bound here (in use)."""
  host, _, port = address.rpartition(":")
  try:
    port_num = int(port)
  except ValueError:
    raise ValueError(f"coordinator address {address!r} is not host:port") from None
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    try:
      s.bind(("", port_num))
    except OSError as e:
      raise ValueError(f"coordinator port {port_num} ({address}) is not free: "
                       f"{e.strerror}; pick another port (launch/local.py picks a free "
                       "one when --port is not given)") from None
