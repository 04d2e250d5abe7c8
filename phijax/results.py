"""``python -m phijax.results`` (console script ``phijax-results``): a sweep's
tables and figures, which live in ``phijax.sweeps.results``. This module only keeps the
command's name."""

from phijax.sweeps.results import run

if __name__ == "__main__":
  run()
