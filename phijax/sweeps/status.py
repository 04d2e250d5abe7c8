"""Where each arm stands: its ``sweep_status.json`` (done, running, failed,
interrupted or pending; the command, wall time and one-line error), which the runner
writes and the status table and the results read.
"""

from __future__ import annotations

import json
import os

STATUS_FILE = "sweep_status.json"  # per arm directory


def read_status(arm_dir: str) -> dict | None:
  try:
    with open(os.path.join(arm_dir, STATUS_FILE)) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):  # none yet, or not an arm directory
    return None


def write_status(arm_dir: str, record: dict) -> None:
  """Atomically (a killed runner leaves the old file or the new one, never half)."""
  path = os.path.join(arm_dir, STATUS_FILE)
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    json.dump(record, f, indent=1)
  os.replace(tmp, path)


def _alive(pid: int | None) -> bool:
  if not pid:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  try:  # a zombie child of a killed runner is not running
    with open(f"/proc/{pid}/stat") as f:
      return f.read().split(")")[-1].split()[0] != "Z"
  except OSError:
    return True


def arm_state(arm_dir: str) -> tuple[str, dict]:
  """(done | running | failed | interrupted | pending, the status record)."""
  record = read_status(arm_dir) or {}
  state = record.get("state", "pending")
  if state == "running" and not _alive(record.get("pid")):
    state = "interrupted"
  return state, record


def has_final_row(arm_dir: str) -> bool:
  try:
    with open(os.path.join(arm_dir, "metrics.jsonl")) as f:
      return any('"final": true' in line for line in f)
  except FileNotFoundError:
    return False


def error_line(log_path: str) -> str:
  """The arm's one-line error: the last ``error:`` line of its log, else its last line."""
  try:
    with open(log_path, errors="replace") as f:
      lines = [l.strip() for l in f.readlines()[-200:] if l.strip()]
  except FileNotFoundError:
    return "no log"
  for line in reversed(lines):
    if "error:" in line.lower() or line.startswith(("stopping:", "Error", "RuntimeError")):
      return line
  return lines[-1] if lines else "no output"


def status_table(arms: list) -> str:
  """One line per arm (``phijax.sweeps.arms.Arm``): name, state, wall time, error."""
  rows = []
  for arm in arms:
    state, record = arm_state(arm.workdir)
    rows.append((arm.name, state, f"{record.get('wall_s', 0):.0f}s" if record else "-",
                 record.get("error") or "" if state in ("failed", "interrupted") else ""))
  width = max(len(r[0]) for r in rows)
  lines = [f"{'arm':<{width}}  {'state':<11}  {'wall':>6}  error"]
  lines += [f"{n:<{width}}  {s:<11}  {w:>6}  {e}".rstrip() for n, s, w, e in rows]
  counts = {}
  for _, s, _, _ in rows:
    counts[s] = counts.get(s, 0) + 1
  lines.append(", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
  return "\n".join(lines)
