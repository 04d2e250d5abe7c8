"""Quality scores as a run directory: the step of a sweep that scores a corpus between
the arm that trains the embedding model and the arms that train on the filtered corpus.

    python -m phijax.curate.score_run --config=EXPERIMENT:ARG --workdir=DIR \\
        --config.curate.embedder=RUN

It computes what ``python -m phijax.curate score`` does, from ``config.curate`` (fields
below) and the config's data sources, and keeps the run-directory contract the sweep
runner relies on: ``DIR/scores.json`` (the scores file a source's ``quality_scores``
names), ``DIR/rubric_scores.json`` (the rubric's own points for every document, ties
broken by a hash of the key: the annotator applied to everything, the ceiling of what
the classifier can learn from it), ``config.json``, ``provenance.json`` and
``metrics.jsonl`` whose final row holds the classifier's held-out accuracies. A rerun
of a finished directory says so and exits 0. In an experiment::

    {"config": "scores", "program": "phijax.curate.score_run",
     "curate.embedder": "{arm:config=all,seed=0}"}
"""

from __future__ import annotations

import json
import os
import time

from ml_collections import ConfigDict

from phijax import cli

METRICS = ("forest_accuracy", "logistic_accuracy", "majority", "forest_balanced_accuracy",
           "logistic_balanced_accuracy", "labelled", "good", "heldout")


def defaults() -> ConfigDict:
  """``config.curate``: an experiment's get_config adds it for its scoring step."""
  return ConfigDict(dict(
      embedder="",  # the run directory whose model embeds the documents
      source="",  # the source scored ("": the one with weight > 0)
      annotator="rubric",  # rubric | labels:FILE | run:DIR | params:DIR | hf:DIR
      sample=400, label_share=0.5, classifier="forest", seed=0, max_tokens=256,
      batch_size=32))


def _parser():
  parser = cli.ArgumentParser(prog="python -m phijax.curate.score_run",
                              description=__doc__)
  cli.add_config(parser)
  parser.add_argument("--workdir", required=True, metavar="DIR")
  return parser


def _rubric_scores(cfg_data, name: str) -> dict:
  from phijax.curate import score
  from phijax.data.quality import rubric, scores
  src = score.build_source(cfg_data, name)
  keys = [src.key(i) for i in range(src.num_documents)]
  jitter = scores.random_scores(keys, 0)
  points = [rubric.score(src.text(i)) for i in range(src.num_documents)]
  return dict(keys=keys, scores=[(p + j) / (len(rubric.POINTS) + 1)
                                 for p, j in zip(points, jitter)],
              annotator=dict(kind="rubric", points=list(rubric.POINTS)),
              report=dict(documents=len(keys), points=points))


def main(args):
  from phijax.curate import annotate, score, score_command
  from phijax.data.quality import scores
  from phijax.evals import model_source
  from phijax.train.pieces import provenance
  cfg, workdir = args.config, os.path.abspath(args.workdir)
  metrics = os.path.join(workdir, "metrics.jsonl")
  if os.path.isfile(metrics) and '"final": true' in open(metrics).read():
    print(f"{workdir}: already finished (scores.json)")
    return 0
  if "curate" not in cfg or not cfg.curate.embedder:
    raise cli.UsageError("config.curate.embedder is not set: the run directory whose "
                         "model embeds the documents (see python -m "
                         "phijax.curate.score_run --help)")
  c = cfg.curate
  name = score_command.source_name(cfg, c.source)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(cfg.to_dict(), f, indent=1, default=str)
  start = time.time()
  loaded = model_source.load_run(c.embedder)
  record = provenance.describe(cfg, loaded.tokenizer)
  s = score.Settings(annotate.parse(c.annotator, "config.curate.annotator"),
                     sample=c.sample, label_share=c.label_share, classifier=c.classifier,
                     seed=c.seed, max_tokens=c.max_tokens, batch_size=c.batch_size)
  doc, path, _ = score.compute(cfg.data, name, loaded, s,
                               progress=lambda stage: cli.Progress(f"{stage} {name}"))
  scores.write(os.path.join(workdir, "scores.json"), doc)
  scores.write(os.path.join(workdir, "rubric_scores.json"), _rubric_scores(cfg.data, name))
  print(score_command.summary(doc, os.path.join(workdir, "scores.json"), 5), flush=True)
  record.update(ended=time.strftime("%Y-%m-%dT%H:%M:%S"), outcome="finished", steps=0)
  with open(os.path.join(workdir, provenance.FILE), "w") as f:
    json.dump([record], f, indent=1)
  row = {"step": 0, "tokens": 0, "final": True, "wall_s": round(time.time() - start, 1),
         **{m: doc["report"][m] for m in METRICS}}
  with open(metrics, "a") as f:
    f.write(json.dumps(row) + "\n")
  return 0


def run(argv=None):
  cli.main(_parser(), main, argv)


if __name__ == "__main__":
  run()
