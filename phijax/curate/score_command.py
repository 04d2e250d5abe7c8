"""Score every document of a data source for "textbook quality" (phi-1's filter).

    python -m phijax.curate score --config=tiny --workdir=runs/tiny --annotator=rubric \\
        --out=scores.json
    python -m phijax.train --config=tiny --workdir=runs/top_half \\
        --config.data.sources.stdlib.quality_scores=scores.json \\
        --config.data.sources.stdlib.quality_keep=0.5

1. Annotate a sample of --sample training documents (--annotator): ``rubric`` (a
   model-free rubric: docstrings, examples, comments, short functions, code rather than
   data), ``labels:FILE.jsonl`` ({"key", "label"} lines), or a model asked whether each
   document is educational (``run:DIR``, ``params:DIR``, ``hf:DIR``; the top
   --label_share of the sample by its yes/no log-odds is labelled good).
2. Embed every document with the model --workdir / --params_dir / --hf_dir names: final
   hidden states averaged over the first --max_tokens tokens, batched over this
   process's devices.
3. Fit a classifier on the labelled sample (random forest as phi-1, or logistic
   regression); held-out accuracy on a quarter of the sample is printed for both, next
   to the majority label's.
4. Score every document (the classifier's probability of "good") and write the scores
   file: cached under the quality cache keyed by corpus, model, annotator and settings
   (a rerun reads it), copied to --out. A data source's ``quality_scores`` /
   ``quality_keep`` / ``quality_min`` fields filter training on it.
"""

from __future__ import annotations

import shutil


def _parser():
  from phijax import cli
  from phijax.curate import classify
  from phijax.evals import model_source
  parser = cli.ArgumentParser(prog="python -m phijax.curate score", description=__doc__)
  cli.add_config(parser)
  model_source.add_args(parser)
  parser.add_argument("--source", default="", metavar="NAME",
                      help="the source to score (default: the one with weight > 0)")
  parser.add_argument("--annotator", default="rubric",
                      help="rubric (default), labels:FILE.jsonl, run:DIR, params:DIR, hf:DIR")
  parser.add_argument("--sample", type=cli.positive_int, default=400,
                      help="training documents annotated (default 400)")
  parser.add_argument("--label_share", type=float, default=0.5,
                      help="model annotators: share of the sample labelled good (0.5)")
  parser.add_argument("--classifier", choices=classify.KINDS, default="forest")
  parser.add_argument("--seed", type=int, default=0, help="the sample and the classifier")
  parser.add_argument("--max_tokens", type=cli.positive_int, default=256,
                      help="each document's first tokens embedded (default 256)")
  parser.add_argument("--batch_size", type=cli.positive_int, default=32)
  parser.add_argument("--out", default="", metavar="FILE.json",
                      help="also write the scores file here")
  parser.add_argument("--show", type=int, default=5,
                      help="best and worst documents listed (default 5)")
  parser.add_argument("--recompute", action="store_true",
                      help="ignore cached embeddings and scores (and replace them)")
  return parser


def source_name(cfg, spec: str) -> str:
  from phijax import cli
  if spec:
    if spec not in cfg.data.sources:
      raise cli.UsageError(f"--source={spec}: config.data.sources has no such source "
                           f"({sorted(cfg.data.sources)})")
    return spec
  used = [n for n, s in cfg.data.sources.items() if s.get("weight", 1.0) > 0]
  if len(used) != 1:
    raise cli.UsageError(f"the config trains on {len(used)} sources ({used}); name one "
                         "with --source")
  return used[0]


def summary(doc: dict, path, show: int) -> str:
  r, keys, p = doc["report"], doc["keys"], doc["scores"]
  a = doc["annotator"]
  who = a["kind"] + (f" {a['path']}" if a.get("path") else "")
  order = sorted(range(len(p)), key=lambda i: (-p[i], i))
  quart = [sorted(p)[int(q * (len(p) - 1))] for q in (0.25, 0.5, 0.75)]
  lines = [
      f"source {doc['source']['name']!r}: {r['documents']} documents "
      f"({r['training_documents']} training)",
      f"  annotator {who}: {r['labelled']} labelled, {r['good']} good "
      f"({r['good'] / r['labelled']:.0%})",
      f"  embeddings: {doc['model']['source']}, first {doc['settings']['max_tokens']} "
      "tokens, mean-pooled" + (" (cached)" if r.get("embeddings_cached") else ""),
      f"  held-out accuracy ({r['heldout']} labelled documents): forest "
      f"{r['forest_accuracy']:.3f}, logistic {r['logistic_accuracy']:.3f}, majority "
      f"label {r['majority']:.3f} (balanced: forest {r['forest_balanced_accuracy']:.3f}, "
      f"logistic {r['logistic_balanced_accuracy']:.3f})",
      f"  scores ({r['classifier']}, P(good)): quartiles "
      + ", ".join(f"{q:.3f}" for q in quart)]
  if show:
    lines.append("  best: " + ", ".join(f"{keys[i]} {p[i]:.2f}" for i in order[:show]))
    lines.append("  worst: " + ", ".join(f"{keys[i]} {p[i]:.2f}"
                                         for i in order[::-1][:show]))
  lines.append(f"  scores file: {path}")
  return "\n".join(lines)


def main(args):
  from phijax import cli
  from phijax.curate import annotate, score
  from phijax.evals import model_source
  if not 0 < args.label_share < 1:
    raise cli.UsageError(f"--label_share must be in (0, 1), got {args.label_share}")
  if args.show < 0:
    raise cli.UsageError(f"--show must be >= 0, got {args.show}")
  cfg = args.config
  name = source_name(cfg, args.source)
  if cfg.data.sources[name].kind == "array_record":
    raise cli.UsageError(f"source {name!r} is pre-tokenized (array_record): the annotator "
                         "reads text")
  s = score.Settings(annotate.parse(args.annotator), sample=args.sample,
                     label_share=args.label_share, classifier=args.classifier,
                     seed=args.seed, max_tokens=args.max_tokens, batch_size=args.batch_size)
  loaded = model_source.load(args)
  doc, path, hit = score.compute(
      cfg.data, name, loaded, s, progress=lambda stage: cli.Progress(f"{stage} {name}"),
      recompute=args.recompute)
  print(summary(doc, path, args.show))
  print("  from the cache" if hit else f"  computed in {doc['report']['seconds']:.1f} s")
  target = path
  if args.out:
    shutil.copyfile(path, args.out)
    target = args.out
    print(f"  written to {args.out}")
  print(f"train on the top half: --config.data.sources.{name}.quality_scores={target} "
        f"--config.data.sources.{name}.quality_keep=0.5", flush=True)
  return 0


def run(argv=None):
  from phijax import cli
  cli.main(_parser(), main, argv)


if __name__ == "__main__":
  run()
