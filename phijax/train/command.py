"""Train a model.

    python -m phijax.train --config=configs/tiny.py --workdir=runs/tiny [--config.a.b=v]

Re-running the same command on the same work directory resumes from the newest
valid checkpoint; a finished run says so and exits 0. The work directory gets
``config.json``, ``metrics.jsonl``, TensorBoard events (``tb/``), ``checkpoints/``
and ``samples.txt``.
"""

from __future__ import annotations

import sys

# The flags and the config are checked before JAX and the loop are imported
# (phijax.train.loop, in main below): bad input is answered in a fraction of a second.


def _parser():
  from phijax import cli
  parser = cli.ArgumentParser(prog=cli.prog("phijax.train", "phijax-train"),
                              description=__doc__)
  cli.add_config(parser)
  parser.add_argument("--workdir", required=True, type=cli.new_dir,
                      help="run directory; rerunning on it resumes (a finished run exits 0)")
  return parser


def run(argv=None):
  """Console entry point (``phijax-train``, ``python -m phijax.train``)."""
  from phijax import cli

  parser = _parser()

  def main(args):
    from phijax.train import loop
    cli.setup_logging(args.verbose)  # again, now that JAX is imported (cli.setup_logging)
    try:
      loop.train(args.config, args.workdir)
    except loop.NonFiniteError as e:  # not bad input: the run itself failed
      cli.fail(parser.prog, str(e), code=1)

  try:
    cli.main(parser, main, argv)
  except SystemExit as e:
    if "jax" in sys.modules:  # a run had started: with several processes, failing
      from phijax.train import distributed  # alone must not hang the rest
      distributed.exit_after_error(e.code if isinstance(e.code, int) else 1)
    raise


if __name__ == "__main__":
  run()
