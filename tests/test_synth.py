"""python -m phijax.curate synth on a tiny randomly initialised teacher: documents that
depend on (seed, index) only (the oracle: the generator run alone on one prompt with that
document's key), a resume after a kill equal byte for byte to an uninterrupted run,
planted duplicates of the corpus and of earlier documents dropped, the output trained
on as a jsonl source, and one line for each kind of bad input."""

import dataclasses
import json
import random
import shlex

import jax
import numpy as np
import pytest
from flax import linen as nn

from phijax import cli, config_files, data, files
from phijax.curate import synth, synth_command
from phijax.evals import model_source
from phijax.model import abstract_params, decode, params_io
from phijax.model.config import ModelConfig

CFG = ModelConfig(arch="phi", vocab_size=448, hidden_size=32, num_layers=2, num_heads=4,
                  intermediate_size=64, partial_rotary_factor=0.5,
                  max_position_embeddings=256)
TEXTS = [f"def f{i}(x):\n    return x + {i}\n" for i in range(60)] + [
    "A textbook section on recursion, written for students, in the style of a tutorial.\n"
    * 5]
NEW = 12  # new tokens per document
# Prompts of 18 to 98 tokens: a batch holding the long topic (document 2 of seed 0)
# decodes in a 128-slot cache, its batch-mates alone in 64 slots.
TOPICS = ("recursion", "sorting", "graphs", "the sieve of Eratosthenes, wheel factorisation "
          "and other quick ways to enumerate prime numbers")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  """``(params dir, Loaded, Generator)``: random weights (no init compile) and a small
  tokenizer, saved as python -m phijax.convert writes them."""
  root = tmp_path_factory.mktemp("teacher")
  tok = data.train_tokenizer(TEXTS, vocab_size=400)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype),
                        nn.unbox(abstract_params(CFG)))
  params_io.save_params(str(root), CFG, params)
  tok.save(root / "tokenizer.model")
  m = model_source.load_params_dir(str(root))
  return root, m, decode.Generator(m.cfg, m.params)


def _settings(m, **kw):
  return synth.Settings(teacher=m.source, topics=TOPICS,
                        audiences=("students", "experts"), styles=("a tutorial", "a guide"),
                        max_new_tokens=NEW, temperature=1.0, top_p=0.95, min_chars=3, **kw)


def _records(out):
  """Every document, kept or dropped, by index."""
  rows = [json.loads(l) for name in (synth.DOCUMENTS, synth.DROPPED)
          for l in (out / name).read_text().splitlines()]
  return sorted(rows, key=lambda r: r["index"])


def _quiet(_):
  pass


def test_documents_depend_on_seed_and_index_only(teacher, tmp_path):
  _, m, gen = teacher
  for name, seed, batch in (("a", 0, 4), ("b", 0, 1), ("c", 1, 4)):
    synth.generate(str(tmp_path / name), _settings(m, seed=seed), count=5, batch_size=batch,
                   tokenizer=m.tokenizer, generator=gen, log=_quiet)
  a, b, c = (_records(tmp_path / n) for n in "abc")
  assert [r["index"] for r in a] == list(range(5)) and a == b  # batch size: no effect
  assert a[2]["topic"] == TOPICS[3] and len(m.tokenizer.encode(a[2]["prompt"])) + NEW > 64
  assert [r["text"] for r in a] != [r["text"] for r in c]  # another seed: other documents
  s = _settings(m)
  for r in a:
    assert r["topic"] in s.topics and r["audience"] in s.audiences and r["style"] in s.styles
    assert r["prompt"] == synth.DEFAULT_TEMPLATE.format(**r) and r["teacher"] == m.source
  # The oracle: document 3's prompt alone, sampled with the key (seed, 3) names.
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), 3), 0)
  alone, = gen.generate([m.tokenizer.encode(a[3]["prompt"])], keys=[key], max_new_tokens=NEW,
                        temperature=1.0, top_p=0.95, eos_id=m.tokenizer.eos_id,
                        tokenizer=m.tokenizer)
  assert a[3]["text"] == alone.text.strip() and a[3]["tokens"] == len(alone.ids)


def test_resume_after_a_kill_equals_an_uninterrupted_run(teacher, tmp_path, monkeypatch):
  _, m, gen = teacher
  run = lambda out, batch, log=_quiet: synth.generate(  # noqa: E731
      str(out), _settings(m), count=10, batch_size=batch, tokenizer=m.tokenizer,
      generator=gen, log=log)
  ref = run(tmp_path / "ref", 4)
  # Killed after the second batch reached the files, before its state was saved.
  real = synth.write_state

  def killed(out, state):
    if state["next_index"] == 8:
      raise KeyboardInterrupt
    real(out, state)
  monkeypatch.setattr(synth, "write_state", killed)
  with pytest.raises(KeyboardInterrupt):
    run(tmp_path / "out", 4)
  monkeypatch.undo()
  out = tmp_path / "out"
  assert len(_records(out)) == 8
  assert json.loads((out / synth.STATE).read_text())["next_index"] == 4
  with open(out / synth.DOCUMENTS, "ab") as f:  # and a torn line on top
    f.write(b'{"text": "half a li')
  lines = []
  state = run(out, 3, lines.append)  # another batch size
  assert any(f"bytes off {synth.DOCUMENTS}" in l for l in lines), lines
  for name in (synth.DOCUMENTS, synth.DROPPED):
    assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
  assert {k: v for k, v in state.items() if k != "seconds"} == \
      {k: v for k, v in ref.items() if k != "seconds"}
  assert len({r["index"] for r in _records(out)}) == len(_records(out)) == 10
  # Done: a rerun generates nothing; a larger --count continues.
  lines = []
  assert run(out, 4, lines.append)["next_index"] == 10 and "nothing to generate" in lines[0]


class Planted:
  """``Generator.complete``'s interface, returning planted texts by document index."""

  def __init__(self, texts):
    self.texts = texts

  def complete(self, tokenizer, prompts, *, key_ids, **sampling):
    return [[decode.Output([1, 2, 3], "length", self.texts[i])] for i in key_ids]


def _words(rng, n=80):
  return " ".join(rng.choice([f"w{k}" for k in range(300)]) for _ in range(n))


def test_planted_duplicates_are_dropped_and_counted(teacher, tmp_path):
  _, m, _ = teacher
  rng = random.Random(0)
  corpus_docs = [_words(rng) for _ in range(3)]
  (tmp_path / "corpus").mkdir()
  for k, t in enumerate(corpus_docs):
    (tmp_path / "corpus" / f"d{k}.txt").write_text(t)
  config = config_files.load("configs/text.py:runlocal", [
      f"--config.data.sources.text.path={tmp_path / 'corpus'}"])
  identity, texts = synth_command.corpus(config, "", str(tmp_path / "out"))
  u, v = _words(rng), _words(rng)
  one_word = lambda t: t.replace(t.split()[40], "changed", 1)  # noqa: E731  Jaccard ~0.9
  planted = ["\n  ".join(corpus_docs[0].split()),  # 0: a re-spaced corpus copy
             one_word(corpus_docs[1]),  # 1: near a corpus document
             u, u.replace(" ", "\n"),  # 2: new; 3: its copy
             one_word(u), "tiny", v]  # 4: near 2; 5: too short; 6: new
  settings = _settings(m, corpus=identity, dedup="near")
  settings = dataclasses.replace(settings, min_chars=20)
  state = synth.generate(str(tmp_path / "out"), settings, count=7, batch_size=3,
                         tokenizer=None, generator=Planted(planted), corpus=texts, log=_quiet)
  kept = [r["index"] for r in _records(tmp_path / "out") if "reason" not in r]
  assert kept == [2, 6] and state["kept"] == 2
  assert state["dropped"] == dict(too_short=1, copy_of_earlier=1, near_earlier=1,
                                  copy_of_corpus=1, near_corpus=1)
  why = {r["index"]: (r["reason"], r["duplicate_of"]) for r in _records(tmp_path / "out")
         if "reason" in r}
  assert why == {0: ("copy_of_corpus", "corpus:text/d0.txt"),
                 1: ("near_corpus", "corpus:text/d1.txt"),
                 3: ("copy_of_earlier", "document:2"), 4: ("near_earlier", "document:2"),
                 5: ("too_short", None)}
  # Stopped after the first batch (documents 0-2) and continued: the same files, its
  # duplicates found against the index rebuilt from documents.jsonl.
  for count in (3, 7):
    synth.generate(str(tmp_path / "resumed"), settings, count=count, batch_size=3,
                   tokenizer=None, generator=Planted(planted), corpus=texts, log=_quiet)
  for name in (synth.DOCUMENTS, synth.DROPPED):
    assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "out" / name).read_bytes()
  # A kept document deleted by hand: the counts disagree, the files are left alone.
  docs = tmp_path / "resumed" / synth.DOCUMENTS
  docs.write_bytes(docs.read_bytes().split(b"\n", 1)[1])
  with pytest.raises(files.BadFile, match="hold 1 kept and 5 dropped documents below index 7"
                     ", but state.json counts 2 and 5: a file was edited"):
    synth.open_out(str(tmp_path / "resumed"), settings, 7)
  (tmp_path / "resumed" / synth.STATE).unlink()
  with pytest.raises(cli.UsageError, match="has documents.jsonl but no state.json"):
    synth.open_out(str(tmp_path / "resumed"), settings, 7)
  # Exact dedup only: the near copies stay.
  state = synth.generate(str(tmp_path / "exact"), dataclasses.replace(settings, dedup="exact"),
                         count=7, batch_size=7, tokenizer=None, generator=Planted(planted),
                         corpus=texts, log=_quiet)
  assert state["kept"] == 4 and state["dropped"]["near_corpus"] == 0


def _cli(argv, capsys):
  try:
    synth_command.run(argv)
    code = 0
  except SystemExit as e:
    code = e.code
  out, err = capsys.readouterr()
  return code, out, err


def test_command_resumes_refuses_other_settings_and_its_output_trains(teacher, tmp_path,
                                                                      capsys):
  from phijax.train import loop
  root, _, _ = teacher
  out = tmp_path / "synth"
  argv = [f"--params_dir={root}", f"--out={out}", "--count=8", "--batch_size=4",
          "--max_new_tokens=24", "--min_chars=3", "--temperature=1"]
  code, stdout, err = _cli(argv, capsys)
  assert code == 0, err
  assert "synth: 8/8 documents" in err and "tokens/s" in err
  state = json.loads((out / synth.STATE).read_text())
  assert f"8 documents attempted (--count=8): {state['kept']} kept" in stdout
  command = next(l.strip() for l in stdout.splitlines() if "phijax.train" in l)
  code, stdout, err = _cli(argv, capsys)  # the same command: done already
  assert code == 0 and "nothing to generate" in err
  code, _, err = _cli(argv + ["--seed=1"], capsys)
  assert code == 2 and len(err.strip().splitlines()) == 1
  assert "was generated with another --seed: 0 there, 1 now" in err, err
  # The printed command's source, trained on for two steps (configs/text.py's smoke size).
  overrides = [a for a in shlex.split(command) if a.startswith("--config.data.sources")]
  assert overrides == [f"--config.data.sources.text.path={out / synth.DOCUMENTS}"]
  config = config_files.load("configs/text.py:runlocal", overrides + [
      "--config.data.tokenizer.vocab_size=400", f"--config.data.tokenizer.cache_dir={tmp_path}",
      "--config.train.steps=2", "--config.curriculum.lr.warmup_steps=0",
      "--config.train.batch_size=2", "--config.data.seq_len=16",
      "--config.train.eval_every=0", "--config.train.final_eval_batches=1",
      "--config.train.save_every=0", "--config.train.samples=0", "--config.train.log_every=1",
      "--config.train.compile_cache_dir="])
  src = data.build_sources(config.data)["text"]
  assert src.kind == "jsonl" and src.num_documents == state["kept"]
  loop.train(config, str(tmp_path / "run"))
  rows = [json.loads(l) for l in open(tmp_path / "run" / "metrics.jsonl")]
  losses = [r["loss"] for r in rows if "loss" in r]
  assert max(r["step"] for r in rows) == 2 and np.isfinite(losses).all(), rows


@pytest.mark.parametrize("flags, message", [
    (["--template=On {topic} for {reader}:"], "--template names an unknown field {reader}"),
    (["--template=On {topic"], "--template='On {topic': "),
    (["--topics={tmp}/empty.txt"], "--topics={tmp}/empty.txt has no items"),
    (["--source=text"], "--source picks sources of --config"),
    (["--dedup_threshold=1.5"], "--dedup_threshold=1.5: a Jaccard similarity threshold"),
    (["--seed=-1"], "argument --seed: '-1' must be an integer >= 0"),
])
def test_bad_input_is_one_line(teacher, tmp_path, capsys, flags, message):
  root, _, _ = teacher
  (tmp_path / "empty.txt").write_text("# nothing but a comment\n\n")
  flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
  code, out, err = _cli([f"--params_dir={root}", f"--out={tmp_path / 'o'}", "--count=2",
                         *flags], capsys)
  assert code == 2 and out == "", err
  assert len(err.strip().splitlines()) == 1 and message.replace("{tmp}", str(tmp_path)) in err, err
  assert not (tmp_path / "o" / synth.DOCUMENTS).exists()
