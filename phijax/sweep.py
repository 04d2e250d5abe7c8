"""``python -m phijax.sweep`` (console script ``phijax-sweep``): the sweep runner, which lives in
``phijax.sweeps.runner``. This module only keeps the command's name."""

from phijax.sweeps.runner import run

if __name__ == "__main__":
  run()
