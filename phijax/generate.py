"""``python -m phijax.generate`` (console script ``phijax-generate``): the generation command,
which lives in ``phijax.evals.generate``. This module only keeps the command's name."""

from phijax.evals.generate import run

if __name__ == "__main__":
  run()
