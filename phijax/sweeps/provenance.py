"""The provenance block of results.md: what produced a sweep's arms (each arm's
``provenance.json``, ``phijax.train.pieces.provenance``), what they disagree on, and
whether their corpus is the one this machine would read now."""

from __future__ import annotations

import json
import os

from phijax.sweeps.runs import finite

FIELDS = ("commit", "dirty", "corpus", "tokenizer", "versions", "device")


def _records(run_dir: str) -> list[dict]:
  try:
    with open(os.path.join(run_dir, "provenance.json")) as f:
      records = json.load(f)
    return records if isinstance(records, list) else []
  except (OSError, ValueError):
    return []


def _shown(field: str, value) -> str:
  if field == "commit":
    return str(value)[:12] if value else "not a git checkout"
  if field == "dirty":
    return {True: "uncommitted changes", False: "clean"}.get(value, "-")
  if isinstance(value, dict):
    return ", ".join(f"{k} {v}" for k, v in value.items())
  return str(value)


def current_corpus(run_dir: str) -> dict | None:
  """The corpus fingerprints the arm's config would give on this machine now."""
  try:
    from ml_collections import ConfigDict

    from phijax.train.pieces.provenance import corpus_fingerprints
    with open(os.path.join(run_dir, "config.json")) as f:
      cfg = ConfigDict(json.load(f)["data"])
    return corpus_fingerprints(cfg)
  except Exception:  # a source that is gone, a config of another version
    return None


def _relative_command(command: str, arm_dir: str) -> str:
  """The command with paths relative to the directory results are written from: a
  committed results.md names no path of the machine it was made on. The arms may have
  run in another checkout (a clean worktree): its root is the recorded --workdir
  less the arm's path relative to here."""
  rel = os.path.relpath(arm_dir)
  roots = [os.getcwd() + os.sep]
  for word in command.split():
    if word.startswith("--workdir="):
      workdir = word.split("=", 1)[1]
      if not rel.startswith("..") and workdir.endswith(os.sep + rel):
        roots.insert(0, workdir[:-len(rel)])
  for root in roots:
    command = command.replace(root, "")
  return command


def section(rows: list[dict], sweep_dir: str) -> tuple[str, list[str]]:
  """(markdown, warnings): the values every arm shares, and per field what differs
  (every start of every arm counts: a resume under another commit shows)."""
  by_arm = {r["arm"]: _records(os.path.join(sweep_dir, r["arm"])) for r in rows}
  missing = sorted(a for a, recs in by_arm.items() if not recs)
  lines = ["## Provenance", "", "| | |", "|---|---|"]
  warnings = []
  for field in FIELDS:
    values = {}
    for arm, recs in by_arm.items():
      for rec in recs:
        shown = _shown(field, rec.get(field))
        if field == "dirty" and rec.get("dirty") and rec.get("changed"):
          shown += f" in {', '.join(rec['changed'])}"  # which files, to judge them by
        values.setdefault(shown, set()).add(arm)
    if not values:
      continue
    if len(values) == 1:
      lines.append(f"| {field} | {next(iter(values))} |")
    else:
      parts = "; ".join(f"{v} ({', '.join(sorted(a))})" for v, a in sorted(values.items()))
      lines.append(f"| {field} | **differs between arms**: {parts} |")
      warnings.append(f"arms differ in {field}: {parts}")
  first_arm = next((a for a, recs in by_arm.items() if recs), None)
  if first_arm:
    first = by_arm[first_arm][0]
    command = _relative_command(first.get("command", "-"),
                                os.path.join(sweep_dir, first_arm))
    lines.append(f"| command (first arm) | `{command}` |")
    now = current_corpus(os.path.join(sweep_dir, next(a for a, r in by_arm.items() if r)))
    if now is not None:
      same = now == first.get("corpus")
      lines.append("| corpus as this machine reads it now | "
                   + ("the same" if same else f"**different** ({_shown('corpus', now)})")
                   + " |")
      if not same:
        warnings.append("the corpus on this machine differs from the one the arms read "
                        f"({_shown('corpus', now)} now)")
  walls = [float(r["wall_s"]) for r in rows if finite(r.get("wall_s"))]
  if walls:
    total = sum(walls)
    lines.append(f"| total wall time (the runner's, over {len(walls)} arms) | "
                 f"{total / 3600:.2f} h ({total:,.0f} s) |")
  if missing:
    lines.append(f"| arms without provenance.json | {', '.join(missing)} |")
  return "\n".join(lines), warnings
