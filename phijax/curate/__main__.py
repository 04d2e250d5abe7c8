"""``python -m phijax.curate score|synth ...``: each tool's own command (``--help``)."""

import sys

TOOLS = {"score": "phijax.curate.score_command", "synth": "phijax.curate.synth_command"}


def run(argv=None):
  import importlib
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] not in TOOLS:
    print(f"usage: python -m phijax.curate {{{','.join(TOOLS)}}} [--help] ...\n"
          "  score: annotate a sample, embed documents with a model, train a classifier, "
          "score every document\n  synth: generate synthetic textbooks from a teacher",
          file=sys.stderr if argv[:1] not in (["-h"], ["--help"]) else sys.stdout)
    return 0 if argv[:1] in (["-h"], ["--help"]) else 2
  return importlib.import_module(TOOLS[argv[0]]).run(argv[1:])


if __name__ == "__main__":
  sys.exit(run())
