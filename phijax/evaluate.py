"""``python -m phijax.evaluate`` (console script ``phijax-evaluate``): the evaluation command,
which lives in ``phijax.evals.evaluate``. This module only keeps the command's name."""

from phijax.evals.evaluate import run

if __name__ == "__main__":
  run()
