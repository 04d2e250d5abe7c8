"""``python -m phijax.train``: see ``phijax.train.loop``."""

from phijax.train.loop import run

if __name__ == "__main__":
  run()
