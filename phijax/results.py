"""``python -m phijax.results`` (console script ``phijax-results``): the results table and figures of a sweep, which lives in
``phijax.sweeps.results``. This module only keeps the command's name."""

from phijax.sweeps.results import run

if __name__ == "__main__":
  run()
