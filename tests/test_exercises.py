"""Code exercises: the extractor on hand-written sources (exact prompt / response
strings), every stdlib exercise parses and matches its file's own lines, held-out
exercises come only from held-out files (the pretraining split and a sha256 oracle),
exact-match normalisation, and the task's response loss against a per-exercise
forward with numpy log-softmax."""

from __future__ import annotations

import argparse
import ast
import collections
import dataclasses
import hashlib
import json

import jax
import numpy as np
import pytest
from flax import linen as nn

from phijax.evals import model_source
from phijax import model as model_lib
from phijax.data import corpus, sources, exercises as ex_lib
from phijax.data.errors import DataError
from phijax.data.tokenizer import train_tokenizer
from phijax.evals import exercises as task
from phijax.model.config import ModelConfig

LONG_BODY = "".join(f"    x{i} = x + {i}\n" for i in range(15)) + "    return x14\n"

SOURCE = f'''\
import functools


class Stack:
    """A stack of items."""

    def push(self, item):
        """Put item on top of the stack."""
        self.items.append(item)
        return self

    @property
    def top(self):
        """The item on top, or None when empty.

        Never raises.
        """
        # empty stack first
        if not self.items:
            return None
        return self.items[-1]

    def pop(self):
        """Remove and return the top item."""
        raise NotImplementedError("subclasses pop")

    def peek(self):
        """Look at the top item."""
        ...


def outer(xs):
    """Sum of the squares of xs, via a helper."""
    def square(x):
        """The square of one number x."""
        y = x * x
        return y
    total = 0
    for x in xs:
        total += square(x)
    return total


def short(x):
    """Short."""
    y = x + 1
    return y


def one_line(x):
    """Return x plus one, please."""
    return x + 1


def long_body(x):
    """A body longer than the maximum allowed."""
{LONG_BODY}

def text_at_column_zero():
    """Returns a string with a line at column zero."""
    s = """a
b"""
    return s


def no_doc(x):
    y = x
    return y
'''


def test_extract_hand_written_source():
  skipped = {}
  got = {e.name: e for e in ex_lib.extract(SOURCE, path="pkg/stack.py", skipped=skipped)}
  assert list(got) == ["Stack.push", "Stack.top", "outer", "outer.<locals>.square"]
  push = got["Stack.push"]
  assert (push.path, push.lineno) == ("pkg/stack.py", 7)
  assert push.prompt == 'def push(self, item):\n    """Put item on top of the stack."""\n'
  assert push.response == "    self.items.append(item)\n    return self\n"
  # Decorators belong to the prompt; the multi-line docstring is dedented with the
  # method; a comment between docstring and code belongs to the body.
  top = got["Stack.top"]
  assert top.lineno == 13
  assert top.prompt == ('@property\ndef top(self):\n    """The item on top, or None when '
                        'empty.\n\n    Never raises.\n    """\n')
  assert top.response == ("    # empty stack first\n    if not self.items:\n"
                          "        return None\n    return self.items[-1]\n")
  outer = got["outer"]
  assert outer.prompt == 'def outer(xs):\n    """Sum of the squares of xs, via a helper."""\n'
  assert outer.response == ('    def square(x):\n        """The square of one number x."""\n'
                            "        y = x * x\n        return y\n    total = 0\n"
                            "    for x in xs:\n        total += square(x)\n    return total\n")
  square = got["outer.<locals>.square"]
  assert square.lineno == 34
  assert square.prompt == 'def square(x):\n    """The square of one number x."""\n'
  assert square.response == "    y = x * x\n    return y\n"
  assert skipped == {"functions": 11, "no_docstring": 1, "short_docstring": 1,
                     "no_body": 0, "stub_body": 2, "same_line": 0, "body_too_short": 1,
                     "body_too_long": 1, "unindented_body_line": 1, "unparseable": 0}


def test_selection_is_configurable_and_checked():
  wider = ex_lib.Selection(min_doc_words=1, min_body_lines=1, max_body_lines=16)
  names = [e.name for e in ex_lib.extract(SOURCE, selection=wider)]
  assert names == ["Stack.push", "Stack.top", "outer", "outer.<locals>.square", "short",
                   "one_line", "long_body"]
  long_body = ex_lib.extract(SOURCE, selection=wider)[-1]
  assert long_body.response == LONG_BODY
  with pytest.raises(ValueError, match="max_body_lines"):
    ex_lib.Selection(min_body_lines=5, max_body_lines=4)
  with pytest.raises(DataError, match=r"bad\.py:1: not Python"):
    ex_lib.extract("def f(:\n", path="bad.py")


def test_same_line_bodies_and_missing_final_newline():
  src = ('def a():\n    """Docstring with enough words."""; x = 1\n    return x\n'
         'def b():\n    """Docstring with enough words."""\n    y = 2\n    return y')
  skipped = {}
  out = ex_lib.extract(src, skipped=skipped)
  assert [e.name for e in out] == ["b"] and skipped["same_line"] == 1
  assert out[0].response == "    y = 2\n    return y\n"


@pytest.fixture(scope="module")
def scan():
  return ex_lib.scan_stdlib()


def test_every_stdlib_exercise_parses_and_is_its_files_lines(scan):
  """Every exercise of the whole corpus: prompt + response parses as one function of
  the exercise's name, and its lines are the file's own lines from the first decorator
  to the function's end (found by a separate walk of the file's tree)."""
  root = corpus.stdlib_root()
  by_path = collections.defaultdict(list)
  for e in scan.train + scan.heldout:
    by_path[e.path].append(e)
  sel = ex_lib.Selection()
  for path, exs in by_path.items():
    text = (root / path).read_bytes().decode("utf-8")
    lines = text.split("\n")
    nodes = {(n.lineno, n.name): n for n in ast.walk(ast.parse(text))
             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    for e in exs:
      where = f"{path}:{e.lineno} {e.name}"
      tree = ast.parse(e.prompt + e.response)
      assert len(tree.body) == 1, where
      fn = tree.body[0]
      assert isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)), where
      assert fn.name == e.name.split(".")[-1], where
      assert len(ast.get_docstring(fn, clean=False).split()) >= sel.min_doc_words, where
      body = [l for l in e.response.split("\n") if l.strip()]
      assert sel.min_body_lines <= len(body) <= sel.max_body_lines, where
      assert e.prompt.endswith("\n") and e.response.endswith("\n"), where
      node = nodes[(e.lineno, fn.name)]
      start = min([node.lineno] + [d.lineno for d in node.decorator_list])
      original = lines[start - 1:node.end_lineno]
      assert [l.strip() for l in (e.prompt + e.response).split("\n")[:-1]] == \
             [l.strip() for l in original], where
  assert len(scan.train) > 3000 and len(scan.heldout) > 100


def test_heldout_exercises_come_only_from_heldout_files(scan):
  fraction = scan.counts["heldout_fraction"]
  src = sources.stdlib_source("stdlib", "", fraction)  # what pretraining builds
  train_files = {src.keys[i] for i in src.train_indices()}
  heldout_files = {src.keys[i] for i in src.heldout_indices()}
  assert heldout_files and not train_files & heldout_files
  assert {e.path for e in scan.heldout} <= heldout_files
  assert {e.path for e in scan.train} <= train_files
  # The same through an oracle that knows nothing of phijax: sha256 of the path.
  for e in scan.heldout:
    score = int.from_bytes(hashlib.sha256(e.path.encode()).digest()[:8], "big") / 2**64
    assert score < fraction, e.path
  # Deterministic order (file, then line) and the counts the README quotes add up.
  assert scan.heldout == sorted(scan.heldout, key=lambda e: (e.path, e.lineno))
  c = scan.counts
  assert (c["exercises_train"], c["exercises_heldout"]) == (len(scan.train),
                                                            len(scan.heldout))
  assert c["functions"] == len(scan.train) + len(scan.heldout) + sum(c["skipped"].values())
  assert c["files"] == c["files_train"] + c["files_heldout"] == len(src.keys)
  assert ex_lib.stdlib_exercises("heldout") == scan.heldout


def test_cli_writes_sft_records(tmp_path, capsys):
  out = tmp_path / "ex.jsonl"
  ex_lib.run([f"--out={out}", "--split=heldout"])
  counts = json.loads(capsys.readouterr().out)
  records = [json.loads(l) for l in out.read_text().splitlines()]
  assert len(records) == counts["exercises_heldout"]
  held = ex_lib.stdlib_exercises("heldout")
  assert records[0] == {"prompt": held[0].prompt, "response": held[0].response,
                        "name": held[0].name, "path": held[0].path,
                        "lineno": held[0].lineno}
  # What the sft data kind reads: one user and one assistant turn per record.
  src = sources.SftJsonLines("ex", tmp_path, [out], 0.0, max_tokens=0)
  assert src.conversation(1) == [("user", held[1].prompt), ("assistant", held[1].response)]
  with pytest.raises(SystemExit):
    ex_lib.run([f"--out={tmp_path}"])
  assert "ending in .jsonl" in capsys.readouterr().err


# ------------------------------------------------------------------ exact match


def test_normalisation_and_body_cut():
  n = task.normalize
  assert n("    x = 1   \n\n  \n    return x\n") == "    x = 1\n    return x"
  assert n("    x = 1\r\n    return x\r\n") == n("    x = 1\n    return x")
  assert n("\tif x:\n\t    y = 1\n") == "        if x:\n            y = 1"
  assert n("  x = 1\n") != n("    x = 1\n")  # indentation is syntax
  assert n("    x=1\n") != n("    x = 1\n")  # only whitespace at line ends and blank lines
  cut = task.body_of
  assert cut("    return x\ndef g():\n    pass\n") == "    return x"
  assert cut("    return x\n\n@deco\nclass A: pass") == "    return x\n"
  assert cut("    a = 1\nλ = 2\n") == "    a = 1"
  assert cut("def g(): pass") == "" and cut("    a\n\n") == "    a\n\n"
  assert task.is_exact("    y = x\n    return y\n", "    y = x  \n\n    return y\nprint(1)")
  assert not task.is_exact("    y = x\n    return y\n", "    y = x\n")
  # The stop strings end generation exactly where body_of cuts.
  assert all(s.startswith("\n") and not s[1].isspace() for s in task.BODY_STOPS)
  assert {"\nd", "\nc", "\n@", "\n#", "\n)"} <= set(task.BODY_STOPS)


# --------------------------------------------------------------------- the task


@pytest.fixture(scope="module")
def tiny():
  texts = [(corpus.stdlib_root() / f).read_text("utf-8")
           for f in ("chunk.py", "concurrent/futures/process.py", "textwrap.py")]
  tok = train_tokenizer(texts, vocab_size=400)
  cfg = ModelConfig(arch="phi", vocab_size=tok.vocab_size, hidden_size=32, num_layers=1,
                    num_heads=4, intermediate_size=64, max_position_embeddings=1024)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype),
                        nn.unbox(model_lib.abstract_params(cfg)))
  return model_source.Loaded(cfg, params, tok, "tiny random model", "unused")


def _reference_nll(m, ids, first_target):
  """Summed NLL of ids[first_target + 1:] given what precedes them: one unpadded
  sequence through the model, log-softmax in float64 numpy."""
  forward = jax.jit(model_lib.Transformer(m.cfg).apply)
  logits = np.asarray(forward({"params": m.params}, np.asarray([ids], np.int32))[0],
                      np.float64)
  logp = logits - logits.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  return -sum(logp[j, ids[j + 1]] for j in range(first_target, len(ids) - 1))


def _args(**kw):
  return argparse.Namespace(**{"limit": 2, "batch_size": 4, "max_new_tokens": 8,
                               "seed": 0, "config": None, **kw})


def test_response_loss_equals_a_per_exercise_reference(tiny):
  settings, scores, rows = task.run(tiny, _args())
  held = ex_lib.stdlib_exercises("heldout")[:2]
  tok = tiny.tokenizer
  nll = tokens = nbytes = 0.0
  for e, row in zip(held, rows):
    ids = tok.encode(e.prompt + e.response)
    prompt = tok.encode(e.prompt)
    n = next(i for i in range(len(ids) + 1)
             if i == len(ids) or i == len(prompt) or ids[i] != prompt[i])
    one = _reference_nll(tiny, ids, n - 1)
    assert (row["name"], row["path"], row["tokens"]) == (e.name, e.path, len(ids) - n)
    assert row["loss"] == pytest.approx(one / (len(ids) - n), rel=1e-4)
    nll, tokens, nbytes = nll + one, tokens + len(ids) - n, nbytes + len(e.response.encode())
  assert scores["exercises"] == 2 and scores["response_tokens"] == tokens
  assert scores["response_loss"] == pytest.approx(nll / tokens, rel=1e-4)
  assert scores["response_bpb"] == pytest.approx(nll / np.log(2) / nbytes, rel=1e-4)
  assert settings["split_from"] == "the data defaults" and settings["limit"] == 2
  assert settings["exercises_available"] == len(ex_lib.stdlib_exercises("heldout"))


def test_chat_format_loss_counts_the_body_and_its_end_of_turn(tiny):
  e = ex_lib.stdlib_exercises("heldout")[1]
  tok = tiny.tokenizer
  prompt, body = tok.encode(e.prompt), tok.encode(e.response)
  ids = prompt + [tok.eot_id] + body + [tok.eot_id]
  ref = _reference_nll(tiny, ids, len(prompt))
  _, scores, rows = task.run(tiny, _args(exercises_format="chat"), exercises=[e])
  assert rows[0]["tokens"] == len(body) + 1
  assert scores["response_loss"] == pytest.approx(ref / (len(body) + 1), rel=1e-4)


def _cycling_model(m, cycle):
  """``m`` with zeroed layers and a bigram head: after ``cycle[k]`` it writes
  ``cycle[k + 1]``, after any other token ``cycle[0]``, whatever the prompt."""
  params = jax.tree.map(np.zeros_like, m.params)
  d = m.cfg.hidden_size
  embed = np.zeros((m.cfg.vocab_size, d), np.float32)
  embed[:] = np.eye(d)[len(cycle) - 1]  # any other token reads as the cycle's last
  for k, t in enumerate(cycle):
    embed[t] = np.eye(d)[k]
  head = np.zeros((d, m.cfg.vocab_size), np.float32)
  for k, t in enumerate(cycle):  # final_norm of e_k is (e_k - mean) / std
    v = np.eye(d)[k]
    head[:, cycle[(k + 1) % len(cycle)]] = 10 * (v - v.mean()) / v.std()
  params.update(embed=embed, lm_head=head,
                final_norm={"scale": np.ones(d, np.float32), "bias": np.zeros(d, np.float32)})
  return dataclasses.replace(m, params=params)


def test_exact_match_compares_the_normalised_greedy_body(tiny):
  """A model that writes ``    self)`` lines forever: a reference of those lines (with
  trailing spaces and blank lines) is an exact match, a real body is not, and the
  generated body in the rows is what the model wrote."""
  tok = tiny.tokenizer
  cycle = [tok.encode(p) for p in ("    ", "self", ")\n")]
  assert all(len(c) == 1 for c in cycle)
  m = _cycling_model(tiny, [c[0] for c in cycle])
  e0, e1 = ex_lib.stdlib_exercises("heldout")[:2]
  own = dataclasses.replace(e0, name="own", response="    self)  \n\n" + "    self)\n" * 3)
  # 12 new tokens: 4 lines (the budget is min(--max_new_tokens, 1.25 x reference + 16)).
  _, scores, rows = task.run(m, _args(max_new_tokens=12), exercises=[own, e1])
  assert [r["name"] for r in rows] == ["own", e1.name]
  assert rows[0]["generated"] == rows[1]["generated"] == "    self)\n" * 4
  assert [r["exact"] for r in rows] == [True, False] and scores["exact_match"] == 0.5
  assert [r["finish"] for r in rows] == ["length", "length"] and scores["ended"] == 0.0


def test_ended_counts_the_bodies_the_model_stopped_itself(tiny):
  """A model that writes an indented line, then a line at column 0: it ends every body
  itself (a stop), where the model above ran out of budget."""
  tok = tiny.tokenizer
  cycle = [tok.encode(p) for p in ("    ", "self", ")\n", "x")]
  assert all(len(c) == 1 for c in cycle)
  m = _cycling_model(tiny, [c[0] for c in cycle])
  _, scores, rows = task.run(m, _args(max_new_tokens=12))
  assert [r["finish"] for r in rows] == ["stop", "stop"] and scores["ended"] == 1.0
  assert rows[0]["generated"] == "    self)"


# ------------------------------------------------------------------ preference pairs

def test_shuffled_lines_keep_the_lines_in_another_order():
  body = "    a = 1\n    b = 2\n\n    return a + b\n"
  out = ex_lib.shuffled_lines(body, "k")
  assert out != body and sorted(out.splitlines(True)) == sorted(body.splitlines(True))
  assert ex_lib.shuffled_lines(body, "k") == out  # the same key, the same order
  assert ex_lib.shuffled_lines("    return 1\n", "k") is None
  assert ex_lib.shuffled_lines("    x\n    x\n", "k") is None  # no other order
  # A body without a final newline: every shuffled line still ends in one.
  assert ex_lib.shuffled_lines("    a\n    b", "k").endswith("\n")


def test_preference_pairs_from_exercises(tmp_path, scan, capsys):
  """chosen = the body, rejected = the same lines (as a multiset) in another order,
  the same on every call; the JSONL is what a preferences source reads, and the CLI
  writes the same file."""
  held = scan.heldout
  pairs = ex_lib.preference_pairs(held, seed=0)
  assert len(pairs) >= len(held) - 5
  for p in pairs:
    e = next(x for x in held if (x.path, x.lineno) == (p["path"], p["lineno"]))
    assert (p["prompt"], p["chosen"]) == (e.prompt, e.response)
    assert p["rejected"] != p["chosen"]
    assert collections.Counter(p["rejected"].splitlines()) == collections.Counter(
        e.response.splitlines())
  assert ex_lib.preference_pairs(held, seed=0) == pairs
  assert ex_lib.preference_pairs(held, seed=1) != pairs
  path = tmp_path / "pairs.jsonl"
  assert ex_lib.write_preferences_jsonl(held, path) == len(pairs)
  src = sources.PreferenceJsonLines("pairs", tmp_path, [path], 0.0, max_tokens=0)
  assert src.num_documents == len(pairs) and src.pair(3)["rejected"] == pairs[3]["rejected"]
  cli_path = tmp_path / "cli.jsonl"
  ex_lib.run([f"--out={cli_path}", "--split=heldout", "--kind=preferences"])
  capsys.readouterr()
  assert cli_path.read_text() == path.read_text()


def test_every_nth_and_cached_jsonl(tmp_path, scan):
  items = list(range(10))
  assert ex_lib.every_nth(items, 4) == [0, 2, 5, 7]
  assert ex_lib.every_nth(items, 0) == items == ex_lib.every_nth(items, 20)
  path = ex_lib.cached_jsonl("heldout", "sft", count=7, cache_dir=str(tmp_path))
  records = [json.loads(l) for l in open(path)]
  assert [r["name"] for r in records] == [e.name for e in ex_lib.every_nth(scan.heldout, 7)]
  mtime = (tmp_path / path.split("/")[-1]).stat().st_mtime_ns
  assert ex_lib.cached_jsonl("heldout", "sft", count=7, cache_dir=str(tmp_path)) == path
  assert (tmp_path / path.split("/")[-1]).stat().st_mtime_ns == mtime  # not rewritten
  pairs = ex_lib.cached_jsonl("heldout", "preferences", cache_dir=str(tmp_path))
  assert [json.loads(l) for l in open(pairs)] == ex_lib.preference_pairs(scan.heldout)
  with pytest.raises(ValueError, match="kind must be"):
    ex_lib.cached_jsonl("heldout", "dpo", cache_dir=str(tmp_path))
