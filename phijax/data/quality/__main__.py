"""``python -m phijax.data.quality``: see ``phijax.data.quality.command``."""

from phijax.data.quality.command import run

if __name__ == "__main__":
  run()
