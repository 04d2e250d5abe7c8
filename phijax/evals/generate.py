"""``python -m phijax.generate``: continue prompts with a trained or converted model.

The decoding itself (KV cache, sampling) is ``phijax.model.decode.Generator``.
"""

from __future__ import annotations

from phijax.model import streaming
from phijax.model.decode import Generator

CLI_HELP = """Continue prompts with a trained or converted model (KV-cache decoding).

    python -m phijax.generate --workdir=runs/tiny --prompt="def fib(n):"
    python -m phijax.generate --hf_dir=DIR --prompt="def fib(n):" --n=4 --temperature=0.8
    python -m phijax.generate --params_dir=DIR --prompts_file=prompts.jsonl --json
    python -m phijax.generate --hf_dir=DIR --prompts_file=long.jsonl --sink_tokens=4 \
        --window=1020 --max_new_tokens=20000

--prompts_file reads JSONL: one JSON string, or an object with a "prompt" field, per
line. Each completion is printed after its prompt; --json prints one JSON object per
completion instead (prompt, sample, completion, finish, tokens). --window streams
(StreamingLLM attention sinks): the cache keeps the first --sink_tokens tokens and the
last --window, so prompts and completions may run past the model's positions.
"""


def _parser():
  from phijax import cli
  from phijax.evals import model_source
  parser = cli.ArgumentParser(prog=cli.prog("phijax.generate", "phijax-generate"),
                              description=CLI_HELP)
  model_source.add_args(parser)
  parser.add_argument("--prompt", action="append", default=[],
                      help="a prompt (repeat the flag for several)")
  parser.add_argument("--prompts_file", type=cli.existing_file, metavar="JSONL",
                      help="prompts, one per line (JSON string or {\"prompt\": ...})")
  parser.add_argument("--n", type=cli.positive_int, default=1,
                      help="completions per prompt (default 1)")
  parser.add_argument("--max_new_tokens", type=cli.positive_int, default=128)
  parser.add_argument("--temperature", type=float, default=0.0,
                      help="0 (default) decodes greedily")
  parser.add_argument("--top_k", type=int, default=0, help="0 (default): no limit")
  parser.add_argument("--top_p", type=float, default=1.0, help="1 (default): no limit")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--stop", action="append", default=[], metavar="TEXT",
                      help="end a completion where TEXT appears (repeatable; \\n "
                           "escapes are read)")
  parser.add_argument("--batch_size", type=cli.positive_int, default=32,
                      help="rows decoded together (default 32)")
  parser.add_argument("--window", type=cli.positive_int, default=None, metavar="W",
                      help="stream: keep only the last W tokens (plus the sinks) in the "
                           "cache, so text may run past the model's positions")
  parser.add_argument("--sink_tokens", type=int, default=None, metavar="S",
                      help="with --window: also keep the first S tokens (attention "
                           "sinks; StreamingLLM uses 4)")
  parser.add_argument("--json", action="store_true", help="one JSON object per completion")
  return parser


def read_prompts_file(path: str) -> list[str]:
  """Prompts from JSONL: a JSON string or an object with ``prompt`` per line."""
  import json
  prompts = []
  with open(path, "rb") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        item = json.loads(line)
      except UnicodeDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not UTF-8 ({e.reason} at byte {e.start})"
                         ) from None
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not JSON ({e.msg})") from None
      if isinstance(item, dict) and isinstance(item.get("prompt"), str):
        item = item["prompt"]
      if not isinstance(item, str):
        raise ValueError(f"{path}:{lineno}: expected a JSON string or an object with a "
                         "\"prompt\" string")
      prompts.append(item)
  if not prompts:
    raise ValueError(f"{path} has no prompts")
  return prompts


def main(args):
  import json
  import sys

  from phijax import cli
  from phijax.evals import model_source
  prompts = list(args.prompt)
  if args.prompts_file:
    prompts += read_prompts_file(args.prompts_file)
  if not prompts:
    raise cli.UsageError("give at least one --prompt or a --prompts_file")
  if args.n > 1 and args.temperature <= 0:
    raise cli.UsageError(f"--n={args.n} greedy completions would all be the same; set "
                         "--temperature (e.g. 0.8)")
  stop = [s.encode("utf-8").decode("unicode_escape") for s in args.stop]
  m = model_source.load(args)
  stream_kw = dict(sink_tokens=args.sink_tokens, window=args.window)
  streaming.rolling(m.cfg, **stream_kw)  # a bad setting: one line before any work
  too_long = [i for i, p in enumerate(prompts) if args.window is None
              and len(m.tokenizer.encode(p)) >= m.cfg.max_position_embeddings]
  if too_long:
    i = too_long[0]
    raise cli.UsageError(f"prompt {i + 1} is {len(m.tokenizer.encode(prompts[i]))} tokens; "
                         f"the model takes {m.cfg.max_position_embeddings} positions "
                         "(max_position_embeddings): shorten it, or stream (--window)")
  print(f"model: {m.source} ({m.cfg.arch}, {m.cfg.num_layers} layers, hidden "
        f"{m.cfg.hidden_size})", file=sys.stderr)
  gen = Generator(m.cfg, m.params)
  results = gen.complete(m.tokenizer, prompts, n=args.n, max_new_tokens=args.max_new_tokens,
                         batch_size=args.batch_size, stop=stop, seed=args.seed,
                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                         **stream_kw)
  for i, (prompt, outs) in enumerate(zip(prompts, results)):
    for j, o in enumerate(outs):
      if args.json:
        print(json.dumps({"prompt": prompt, "sample": j, "completion": o.text,
                          "finish": o.finish, "tokens": len(o.ids)}), flush=True)
      else:
        print(f"=== prompt {i + 1}, sample {j + 1} ({o.finish}, {len(o.ids)} tokens)")
        print(prompt + o.text, flush=True)


def run(argv=None):
  """Console entry point (``phijax-generate``)."""
  from phijax import cli
  cli.main(_parser(), main, argv)


if __name__ == "__main__":
  run()
