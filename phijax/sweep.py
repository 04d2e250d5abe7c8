"""``python -m phijax.sweep`` (console script ``phijax-sweep``): the sweep command, which lives
in ``phijax.sweeps.command``. This module only keeps the command's name."""

from phijax.sweeps.command import run

if __name__ == "__main__":
  run()
