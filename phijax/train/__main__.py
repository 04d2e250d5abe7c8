"""``python -m phijax.train``: see ``phijax.train.command``."""

from phijax.train.command import run

if __name__ == "__main__":
  run()
