"""One run on a Cloud TPU VM slice with ``gcloud compute tpus tpu-vm``.

    python launch/tpu.py --name=phi2-run --zone=us-central2-b --accelerator_type=v4-32 \\
        --version=tpu-ubuntu2204-base -- python -m phijax.train --config=configs/phi2.py \\
        --config.mesh.distributed=true --workdir=gs://bucket/runs/phi2

Steps, in order (``--steps`` picks some): ``create`` the slice (``--queued``: through
queued resources, waiting until it is ACTIVE; ``--spot`` for spot capacity), ``copy``
this checkout to every worker (its code: not ``.git``, ``runs/``, sweep arms' run
directories under ``experiments/results/`` or a virtual environment), ``install`` it
(``pip install -e .[tpu]``), ``run`` the command on ``--worker=all`` (one process per
host; their output streams here), ``delete`` the slice. ``--dry-run`` prints every
command and runs none.

``--commands=FILE`` (what ``python -m phijax.sweep ... --launcher=tpu -- --name=...
--zone=...`` passes: the sweep's ``launch_arms.json``) creates, copies and installs
once, then runs the arms one after another on the slice, each arm's output appended
to its log; an arm that fails does not stop the others, and the slice is deleted at
the end. The sweep directory must be storage both this machine and the TPU hosts
mount (NFS, a gcsfuse mount): the runner reads each arm's metrics from it.

On a TPU slice ``jax.distributed.initialize()`` finds the other hosts by itself
(``--config.mesh.distributed=true`` turns it on, and with it JAX's preemption
notices); ``--workdir`` must be storage every host shares (a GCS bucket or NFS).
Rerunning the same launch with ``--steps=run`` resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from _common import cli  # noqa: E402

PROG = "python launch/tpu.py"
STEPS = ("create", "copy", "install", "run", "delete")


def parser():
  p = cli.ArgumentParser(prog=PROG, description=__doc__,
                         usage=f"{PROG} --name=NAME --zone=ZONE [options] -- COMMAND...")
  p.add_argument("--name", required=True, help="TPU VM (and queued resource) name")
  p.add_argument("--zone", required=True)
  p.add_argument("--project", default="")
  p.add_argument("--accelerator_type", default="v4-8", help="e.g. v4-32, v5litepod-16")
  p.add_argument("--version", default="tpu-ubuntu2204-base", help="TPU software version")
  p.add_argument("--queued", action="store_true", help="create through queued resources")
  p.add_argument("--spot", action="store_true", help="spot (preemptible) capacity")
  p.add_argument("--remote_dir", default="phijax", help="checkout dir on each worker ($HOME-relative)")
  p.add_argument("--extras", default="tpu", help="pip extras to install")
  p.add_argument("--steps", default=",".join(STEPS),
                 help=f"comma-separated subset of {','.join(STEPS)}")
  p.add_argument("--commands", default="", metavar="FILE",
                 help="run these commands (a sweep's launch_arms.json) one after another "
                      "on one slice instead of -- COMMAND")
  p.add_argument("--dry-run", dest="dry_run", action="store_true",
                 help="print every command; run none")
  return p


def _flags(args):
  return [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])


def commands(args, command, archive=None) -> list[list[str]]:
  """Every command the launch runs, in order (the dry-run prints exactly these)."""
  archive = archive or os.path.join(tempfile.gettempdir(), "phijax-launch.tgz")
  steps = [s for s in args.steps.split(",") if s]
  unknown = [s for s in steps if s not in STEPS]
  if unknown:
    raise cli.UsageError(f"--steps: unknown step(s) {unknown}; pick from {list(STEPS)}")
  vm = ["gcloud", "compute", "tpus", "tpu-vm"]
  qr = ["gcloud", "compute", "tpus", "queued-resources"]
  f = _flags(args)
  out = []
  if "create" in steps:
    if args.queued:
      out.append([*qr, "create", args.name, f"--node-id={args.name}", *f,
                  f"--accelerator-type={args.accelerator_type}",
                  f"--runtime-version={args.version}", *(["--spot"] if args.spot else [])])
      state = shlex.join([*qr, "describe", args.name, *f, "--format=value(state.state)"])
      out.append(["bash", "-c", f"until [ \"$({state})\" = ACTIVE ]; do sleep 30; done"])
    else:
      out.append([*vm, "create", args.name, *f,
                  f"--accelerator-type={args.accelerator_type}", f"--version={args.version}",
                  *(["--spot"] if args.spot else [])])
  remote = args.remote_dir
  if "copy" in steps:
    # The code, not what runs left in the checkout: run directories, sweep arms (their
    # names hold "=": checkpoints, hundreds of MB), virtual environments.
    out.append(["tar", "czf", archive, "--exclude=.git", "--exclude=runs",
                "--exclude=__pycache__", "--exclude=experiments/results/*/*=*",
                "--exclude=.venv", "--exclude=venv", "-C", _common.ROOT, "."])
    out.append([*vm, "scp", archive, f"{args.name}:{os.path.basename(archive)}", *f,
                "--worker=all"])
    out.append([*vm, "ssh", args.name, *f, "--worker=all",
                f"--command=mkdir -p {remote} && tar xzf {os.path.basename(archive)} -C {remote}"])
  if "install" in steps:
    out.append([*vm, "ssh", args.name, *f, "--worker=all",
                f"--command=cd {remote} && pip install -q -e '.[{args.extras}]'"])
  if "run" in steps:
    out.append([*vm, "ssh", args.name, *f, "--worker=all",
                f"--command=cd {remote} && {_common.quote(command)}"])
  if "delete" in steps:
    if args.queued:
      out.append([*qr, "delete", args.name, *f, "--force", "--quiet"])
    else:
      out.append([*vm, "delete", args.name, *f, "--quiet"])
  return out


def launch_many(args, entries) -> int:
  """The arms of a sweep on one slice: set up once, each arm's run step with its output
  in its log (the others go on when one fails), then delete. Exit 1 if any failed."""
  steps = args.steps.split(",")
  only = lambda *keep: argparse.Namespace(**{**vars(args), "steps": ",".join(
      s for s in steps if s in keep)})
  setup = commands(only("create", "copy", "install"), None)
  runs = [commands(only("run"), e["command"])[0] for e in entries] if "run" in steps else []
  teardown = commands(only("delete"), None)
  if args.dry_run:
    return _print(setup + runs + teardown)
  rc = _run_in_turn(setup, "stopping before the arms (rerun with --steps=delete to "
                           "remove the slice)")
  if rc:
    return rc
  failed = 0
  for c, entry in zip(runs, entries):
    log = entry.get("log")
    print(f"launch: {entry.get('name', 'arm')}: {shlex.join(c)}" +
          (f" (output: {log})" if log else ""), flush=True)
    if log:
      with open(log, "a") as f:
        rc = subprocess.run(c, stdout=f, stderr=subprocess.STDOUT).returncode
    else:
      rc = subprocess.run(c).returncode
    if rc:
      failed += 1
      print(f"launch: {entry.get('name', 'arm')} failed (exit code {rc}); going on",
            file=sys.stderr, flush=True)
  _run_in_turn(teardown, "the slice may be left: rerun with --steps=delete")
  return 1 if failed else 0


def _print(cmds) -> int:
  for c in cmds:
    print(shlex.join(c))
  return 0


def _run_in_turn(cmds, stopping: str) -> int:
  """Runs ``cmds`` in order, echoing each; stops at the first failure (its exit code)
  and says ``stopping`` then."""
  for c in cmds:
    print(f"launch: {shlex.join(c)}", flush=True)
    rc = subprocess.run(c).returncode
    if rc:
      print(f"launch: exit code {rc}; {stopping}", file=sys.stderr, flush=True)
      return rc
  return 0


def launch(args, command) -> int:
  if args.commands:
    if command:
      raise cli.UsageError("give --commands=FILE or -- COMMAND, not both")
    return launch_many(args, _common.read_commands(args.commands, PROG))
  steps = args.steps.split(",")
  if "run" in steps:
    _common.check_command(command, PROG)
  cmds = commands(args, command)
  if args.dry_run:
    return _print(cmds)
  return _run_in_turn(cmds, "stopping (the slice is kept: rerun with --steps=delete to "
                            "remove it)")


def main(argv=None):
  head, command = _common.split_argv(argv)
  cli.main(parser(), lambda args: launch(args, command), head)


if __name__ == "__main__":
  main()
