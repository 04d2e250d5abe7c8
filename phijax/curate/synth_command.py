"""``python -m phijax.curate synth``: the command line of ``phijax.curate.synth``."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys

from phijax import cli

CLI_HELP = """Generate synthetic textbooks (phi-1.5 style) from a teacher model.

    python -m phijax.curate synth --workdir=runs/tiny --out=data/synth --count=200
    python -m phijax.curate synth --hf_dir=DIR --out=data/synth --count=10000 \\
        --topics=topics.txt --config=tiny          # also drop copies of the stdlib corpus

Document i's prompt is --template with a topic, an audience and a style picked by
(--seed, i) from the lists (--topics, --audiences, --styles: one item per line; small
Python/CS lists ship with phijax). The teacher continues it (KV-cache sampling, keyed by
(--seed, i): the documents do not depend on --batch_size). --count is the number of
documents attempted (indices 0..count-1), not kept: a document is dropped when its text
is shorter than --min_chars, or when it repeats an earlier kept document or (with
--config) a document of the config's sources: the same text once whitespace is
collapsed, or (--dedup=near) an estimated Jaccard similarity >= --dedup_threshold over
5-word shingles (MinHash-LSH, as python -m phijax.data.quality dedup).

--out=DIR gets documents.jsonl (the kept documents: text, prompt, topic, audience,
style, index, seed, teacher), dropped.jsonl (the others, with their reason) and
state.json. Re-running the same command continues where it stopped (after a kill too);
a larger --count generates more; another setting on the same DIR is an error. The last
lines print the command that trains on documents.jsonl.
"""


def _non_negative(value: str) -> int:
  try:
    n = int(value)
  except ValueError:
    n = -1
  if n < 0:
    raise argparse.ArgumentTypeError(f"{value!r} must be an integer >= 0")
  return n


def _parser():
  from phijax.curate import synth
  from phijax.data.quality import dedup
  from phijax.evals import model_source
  parser = cli.ArgumentParser(prog="python -m phijax.curate synth", description=CLI_HELP)
  model_source.add_args(parser)
  parser.add_argument("--out", type=cli.new_dir, required=True, metavar="DIR",
                      help="where documents.jsonl, dropped.jsonl and state.json go")
  parser.add_argument("--count", type=cli.positive_int, required=True,
                      help="documents to attempt (indices 0..count-1); kept ones are fewer")
  parser.add_argument("--batch_size", type=cli.positive_int, default=16,
                      help="documents decoded together (default 16; no effect on the text)")
  parser.add_argument("--seed", type=_non_negative, default=0,
                      help="picks each document's topic, audience, style and sampling key")
  for name in ("topics", "audiences", "styles"):
    parser.add_argument(f"--{name}", type=cli.existing_file, default=None, metavar="FILE",
                        help=f"{name}, one per line (default: phijax/curate/lists/{name}.txt)")
  parser.add_argument("--template", default=synth.DEFAULT_TEMPLATE,
                      help="the prompt, with {topic} {audience} {style} (\\n, \\t read as "
                           f"escapes); default {synth.DEFAULT_TEMPLATE!r}")
  parser.add_argument("--include_prompt", action="store_true",
                      help="a document's text is the prompt and its continuation (default: "
                           "the continuation alone)")
  parser.add_argument("--max_new_tokens", type=cli.positive_int, default=512)
  parser.add_argument("--temperature", type=float, default=0.8, help="0 decodes greedily")
  parser.add_argument("--top_k", type=int, default=0, help="0 (default): no limit")
  parser.add_argument("--top_p", type=float, default=0.95, help="default 0.95; 1: no limit")
  parser.add_argument("--stop", action="append", default=[], metavar="TEXT",
                      help="end a document where TEXT appears (repeatable; \\n escapes)")
  parser.add_argument("--min_chars", type=cli.positive_int, default=200,
                      help="drop continuations shorter than this (stripped; default 200)")
  parser.add_argument("--dedup", choices=dedup.MODES, default="near",
                      help="near (default: MinHash-LSH and exact) or exact")
  parser.add_argument("--dedup_threshold", type=float, default=0.8,
                      help="--dedup=near: Jaccard similarity of duplicates (default 0.8)")
  cli.add_config(parser, required=False)
  parser.add_argument("--source", default="", metavar="NAME[,NAME]",
                      help="with --config: the sources to dedup against (default: every "
                           "one with weight > 0 that has text)")
  return parser


def unescape(text: str) -> str:
  """``\\n``, ``\\t`` and ``\\\\`` as a shell passes them, read as the characters."""
  return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m[1]], text)


def corpus(config, spec: str, out: str):
  """``(identity, texts)`` of the config's sources to dedup against: what identifies
  their files (``data.fingerprint``) and a function yielding ``(label, text)`` of every
  document, held-out ones included; ``(None, None)`` without ``--config``."""
  if config is None:
    if spec:
      raise cli.UsageError("--source picks sources of --config: give --config=NAME too")
    return None, None
  from phijax.curate import synth
  from phijax.data import fingerprint, kinds, sources
  names = [n.strip() for n in spec.split(",") if n.strip()]
  unknown = [n for n in names if n not in config.data.sources]
  if unknown:
    raise cli.UsageError(f"--source names {unknown}, which config.data.sources does not "
                         f"have ({sorted(config.data.sources)})")
  picked = names or [n for n, s in config.data.sources.items() if s.get("weight", 1.0) > 0]
  ours = os.path.realpath(os.path.join(out, synth.DOCUMENTS))
  usable = []
  for name in picked:
    scfg = config.data.sources[name]
    if kinds.lookup(name, scfg.kind).generated or scfg.kind == "array_record":
      if names:
        raise cli.UsageError(f"--source={name}: a {scfg.kind} source has no text files "
                             "to compare documents with")
      continue
    _, paths = sources.source_files(name, scfg)
    if any(os.path.realpath(p) == ours for p in paths):
      raise cli.UsageError(f"source {name!r} of --config reads {ours}, this command's own "
                           "output: every document would be its own duplicate")
    usable.append(name)
  if not usable:
    raise cli.UsageError("no source of --config has text files to dedup against")
  identity = fingerprint.corpus_key(config.data, usable)[1]

  def texts():
    for name in usable:
      scfg = config.data.sources[name]
      src = kinds.lookup(name, scfg.kind).build(name, scfg, config.data.heldout_fraction,
                                                 config.data.seq_len)
      for i in range(src.num_documents):
        yield f"{name}/{src.key(i)}", src.text(i)
  return identity, texts


def train_command(out: str) -> str:
  """The command that trains configs/text.py on the kept documents."""
  path = os.path.join(out, "documents.jsonl")
  run = "runs/" + (os.path.basename(os.path.normpath(out)) or "synth")
  return (f"python -m phijax.train --config=text --workdir={shlex.quote(run)} "
          f"--config.data.sources.text.path={shlex.quote(path)}")


def main(args) -> int:
  from phijax.curate import synth
  from phijax.evals import model_source
  if args.temperature < 0 or not 0 < args.top_p <= 1 or args.top_k < 0:
    raise cli.UsageError(f"sampling needs --temperature >= 0, 0 < --top_p <= 1 and --top_k "
                         f">= 0; got {args.temperature}, {args.top_p}, {args.top_k}")
  lists = {n: synth.read_list(getattr(args, n), n) for n in ("topics", "audiences", "styles")}
  template = synth.check_template(unescape(args.template))
  identity, texts = corpus(args.config, args.source, args.out)
  m = model_source.load(args)
  settings = synth.Settings(
      teacher=m.source, seed=args.seed, template=template, max_new_tokens=args.max_new_tokens,
      temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
      stop=tuple(unescape(s) for s in args.stop), include_prompt=args.include_prompt,
      min_chars=args.min_chars, dedup=args.dedup, dedup_threshold=args.dedup_threshold,
      corpus=identity, **lists)
  settings.dedup_settings()  # a bad --dedup_threshold: one line before any work
  opened = synth.open_out(args.out, settings, args.count)  # another setting: one line
  from phijax.model.decode import Generator
  print(f"synth: teacher {m.source} ({m.cfg.arch}, {m.cfg.num_layers} layers, hidden "
        f"{m.cfg.hidden_size}); {len(lists['topics'])} topics x {len(lists['audiences'])} "
        f"audiences x {len(lists['styles'])} styles", file=sys.stderr, flush=True)
  state = synth.generate(args.out, settings, count=args.count, batch_size=args.batch_size,
                         tokenizer=m.tokenizer, generator=Generator(m.cfg, m.params),
                         corpus=texts, opened=opened)
  done, kept = state["next_index"], state["kept"]
  dropped = sum(state["dropped"].values())
  docs = os.path.join(args.out, synth.DOCUMENTS)
  reasons = ", ".join(f"{n} {r}" for r, n in state["dropped"].items() if n)
  print(f"synth: {done} documents attempted (--count={args.count}): {kept} kept in {docs}, "
        f"{dropped} dropped{f' ({reasons})' if reasons else ''}, each with its reason in "
        f"{os.path.join(args.out, synth.DROPPED)}; {state['tokens']:,} tokens generated in "
        f"{state['seconds']:.0f}s")
  if done > args.count:
    print(f"synth: {args.out} already held {done} documents, more than --count={args.count}")
  if not kept:
    print("synth: no document was kept: nothing to train on (see why in dropped.jsonl)")
    return 0
  print(f"Train on them (configs/text.py, this file its only source):\n  {train_command(args.out)}"
        "\nor mix them into a config: c.data.sources.synth = data_config.source(\"jsonl\", "
        f"{json.dumps(docs)}, weight=0.2)")
  return 0


def run(argv=None):
  cli.main(_parser(), main, argv)


if __name__ == "__main__":
  run()
