"""Data quality: dedup (exact and MinHash-LSH near duplicates) and HumanEval / held-out
contamination, as reports, as the commands that print them, and as the filters a data
source's config applies to its training documents.

The oracles are independent of phijax.data.quality: planted pairs' Jaccard similarity
comes from Python sets of 5-word tuples of ``str.split()`` over lowercase text; which
documents are held out from sha256 of their keys (as tests/test_own_corpus.py); the
planted HumanEval text's span from where this test inserted it.
"""

import hashlib
import json
import random
import re
import string

import numpy as np
import pytest

from phijax import config_files
from phijax.data import DataError, config as data_config, sources
from phijax.data.quality import command, contamination, dedup, evalsets, filters

FRACTION = 0.05  # data.heldout_fraction's default
THRESHOLD, MARGIN = 0.8, 0.1


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
  """Reports cached in this test's directory, and no memo from another test."""
  monkeypatch.setattr(filters, "CACHE_DIR", str(tmp_path / "quality-cache"))
  monkeypatch.setattr(filters, "_MEMO", {})


def _heldout(key, fraction=FRACTION):
  return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64 < fraction


def _vocab(rng, n=4000):
  return sorted({"".join(rng.choices(string.ascii_lowercase, k=7)) for _ in range(n)})


def _jaccard(a, b, k=5):
  """The oracle: Jaccard similarity of the sets of k-word runs."""
  wa, wb = a.split(), b.split()
  sa = {tuple(wa[i:i + k]) for i in range(len(wa) - k + 1)}
  sb = {tuple(wb[i:i + k]) for i in range(len(wb) - k + 1)}
  return len(sa & sb) / len(sa | sb)


def _edited(rng, words, vocab, edits):
  out = list(words)
  for pos in rng.sample(range(len(out)), edits):
    out[pos] = rng.choice(vocab)
  return " ".join(out)


# ------------------------------------------------------------------------ dedup


def test_near_duplicates_found_above_the_threshold_and_not_below():
  """Planted pairs at known Jaccard similarity among unrelated documents: at the 0.8
  threshold every pair above 0.9 is found, none below 0.7, and no unrelated document
  is ever clustered; recall and precision at the threshold itself are printed."""
  rng = random.Random(0)
  vocab = _vocab(rng)
  texts, planted = [], []  # planted: (i, j, true Jaccard)
  for _ in range(40):  # unrelated documents
    texts.append(" ".join(rng.choices(vocab, k=500)))
  # 500 words: k substituted words change up to 5k of 496 shingles, Jaccard about
  # (496 - 5k) / (496 + 5k): 1 (exact copies) down to about 0.5.
  for edits in list(range(0, 36)) * 2:
    base = rng.choices(vocab, k=500)
    copy = _edited(rng, base, vocab, edits)
    planted.append((len(texts), len(texts) + 1, _jaccard(" ".join(base), copy)))
    texts += [" ".join(base), copy]
  order = rng.sample(range(len(texts)), len(texts))  # interleave planted and unrelated
  where = {old: new for new, old in enumerate(order)}
  texts = [texts[old] for old in order]
  planted = [(*sorted((where[i], where[j])), sim) for i, j, sim in planted]

  clusters, pairs, _, _ = dedup.find_duplicates(
      texts, dedup.Settings(mode="near", threshold=THRESHOLD))
  cluster_of = {i: c for c, members in enumerate(clusters) for i in members}
  found = {(i, j): cluster_of.get(i) is not None and cluster_of.get(i) == cluster_of.get(j)
           for i, j, _ in planted}
  sims = {(i, j): s for i, j, s in planted}
  assert all(len(members) == 2 for members in clusters), clusters  # no chains, no strays
  assert {tuple(m) for m in clusters} <= set(found)

  high = [p for p, s in sims.items() if s >= THRESHOLD + MARGIN]
  low = [p for p, s in sims.items() if s <= THRESHOLD - MARGIN]
  assert len(high) >= 10 and len(low) >= 20  # the design spans the threshold
  recall_high = np.mean([found[p] for p in high])
  assert recall_high >= 0.9, recall_high
  assert not any(found[p] for p in low), [sims[p] for p in low if found[p]]
  above = [p for p, s in sims.items() if s >= THRESHOLD]
  reported = [p for p in found if found[p]]
  recall = np.mean([found[p] for p in above])
  precision = np.mean([sims[p] >= THRESHOLD for p in reported])
  print(f"at threshold {THRESHOLD}: recall {recall:.2f} ({len(above)} pairs), precision "
        f"{precision:.2f} ({len(reported)} reported); above {THRESHOLD + MARGIN}: "
        f"recall {recall_high:.2f}")
  # Pairs within a few standard errors (0.03-0.035 with 128 permutations) of the
  # threshold fall either side as their estimates do.
  missed = sorted(round(sims[p], 3) for p in above if not found[p])
  assert recall >= 0.85 and precision >= 0.9, (recall, precision, missed)
  for (i, j), sim in pairs.items():  # estimates near the truth
    assert sim == pytest.approx(sims[i, j], abs=0.12)


def test_exact_duplicates_ignore_whitespace_only():
  base = "def f(x):\n    return x + 1\n\n\nclass A:\n    pass\n"
  same = ["def f(x):   \r\n    return x + 1\r\n\r\nclass A:\r\n    pass",  # CRLF, trailing
          "  def f(x):\n\treturn x + 1\nclass A:\n  pass\n\n"]  # re-indented, blank lines
  different = [base.replace("x + 1", "x+1"),  # spacing inside a line is kept apart: "x+1"
               base.upper()]  # case is kept
  clusters, pairs, _, copy_of = dedup.find_duplicates(
      [base, *same, *different], dedup.Settings(mode="exact"))
  assert clusters == [[0, 1, 2]]
  assert list(copy_of) == [0, 0, 0, 3, 4]
  assert pairs == {(0, 1): 1.0, (0, 2): 1.0}


def _write_corpus(root, docs: dict):
  for key, text in docs.items():
    (root / key).parent.mkdir(parents=True, exist_ok=True)
    (root / key).write_text(text, encoding="utf-8")


def _names(prefix, heldout: bool, count: int = 1) -> list[str]:
  """The first ``count`` names ``prefix{k}.txt`` whose keys hash to the wanted side of
  the split."""
  out, k = [], 0
  while len(out) < count:
    if _heldout(f"{prefix}{k}.txt") == heldout:
      out.append(f"{prefix}{k}.txt")
    k += 1
  return out


def _name(prefix, heldout: bool) -> str:
  return _names(prefix, heldout)[0]


@pytest.fixture
def dup_corpus(tmp_path):
  """``(root, docs, expected dropped keys)``: 30 unrelated files, a cluster of three
  training copies (the first by path kept), and a held-out file with two near copies
  in the train split (both dropped)."""
  rng = random.Random(1)
  vocab = _vocab(rng)
  docs = {f"u{k:02d}.txt": " ".join(rng.choices(vocab, k=200)) for k in range(30)}
  base = rng.choices(vocab, k=200)
  trio = [_name("a", False), _name("b", False), _name("c", False)]
  docs[trio[0]] = " ".join(base)
  docs[trio[1]] = " ".join(base) + "\n\n"  # exact after whitespace
  docs[trio[2]] = _edited(rng, base, vocab, 2)  # near
  held = rng.choices(vocab, k=200)
  h = _name("h", True)
  copies = _names("t", False, 2)
  docs[h] = " ".join(held)
  docs[copies[0]] = _edited(rng, held, vocab, 1)
  docs[copies[1]] = " ".join(held).upper()  # the same words: case is normalised
  root = tmp_path / "corpus"
  _write_corpus(root, docs)
  return root, docs, set(sorted(trio)[1:]) | set(copies)


def _source(root, **fields):
  return data_config.source("text", str(root), **fields)


def test_dedup_filter_drops_exactly_the_non_representatives(dup_corpus, monkeypatch):
  root, docs, expected = dup_corpus
  plain = sources.build_source("text", _source(root), FRACTION)
  src = sources.build_source("text", _source(root, dedup="near"), FRACTION)
  keys = [src.key(i) for i in range(src.num_documents)]
  assert keys == sorted(docs)
  assert {k for k in keys if _heldout(k)} == {keys[i] for i in plain.heldout_indices()}
  dropped = {keys[i] for i in plain.train_indices()} - {keys[i] for i in src.train_indices()}
  assert dropped == expected
  assert list(src.heldout_indices()) == list(plain.heldout_indices())  # split unchanged

  # The report is cached: a rebuild (memo cleared) reads it instead of computing.
  assert len(list((root.parent / "quality-cache").glob("text-dedup-*.json"))) == 1
  monkeypatch.setattr(filters, "_MEMO", {})
  monkeypatch.setattr(dedup, "report", lambda *a, **k: pytest.fail("recomputed"))
  again = sources.build_source("text", _source(root, dedup="near"), FRACTION)
  assert list(again.train_indices()) == list(src.train_indices())
  # Recomputed from nothing (cache deleted: another machine), the same documents go: a
  # resumed run reads the train split its first part did.
  monkeypatch.undo()
  monkeypatch.setattr(filters, "CACHE_DIR", str(root.parent / "another-cache"))
  monkeypatch.setattr(filters, "_MEMO", {})
  fresh = sources.build_source("text", _source(root, dedup="near"), FRACTION)
  assert list(fresh.train_indices()) == list(src.train_indices())


def test_exact_mode_keeps_near_copies(dup_corpus):
  root, docs, _ = dup_corpus
  src = sources.build_source("text", _source(root, dedup="exact"), FRACTION)
  dropped = {src.key(i) for i in np.flatnonzero(src.dropped)}
  trio = sorted(k for k in docs if k[0] in "abc")
  assert dropped == {trio[1]}  # the whitespace copy only; near copies stay


# ---------------------------------------------------------------- contamination


def _humaneval(task_id):
  return next(it for it in evalsets.humaneval() if it.id == task_id)


def _code_doc(rng, i):
  names = ["".join(rng.choices(string.ascii_lowercase, k=6)) for _ in range(12)]
  lines = [f"# module {i}"]
  for j in range(8):
    a, b, c = rng.sample(names, 3)
    lines += [f"def {a}_{j}({b}, {c}={rng.randint(0, 99)}):",
              f"    return [{b}.{c}(v) for v in {a} if v > {rng.randint(0, 9)}]", ""]
  return "\n".join(lines)


@pytest.fixture
def code_corpus(tmp_path):
  """``(root, docs, planted)``: 24 code-like files; HumanEval/0 and /42 planted in two
  training files, /53 in a held-out one; ``planted``: ``{key: (task_id, text)}``."""
  rng = random.Random(2)
  docs = {f"m{k:02d}.py": _code_doc(rng, k) for k in range(24)}
  planted = {}
  for task, held in (("HumanEval/0", False), ("HumanEval/42", False), ("HumanEval/53", True)):
    key = _name(f"p{task.split('/')[1]}_", held)
    text = _humaneval(task).text
    docs[key] = _code_doc(rng, 99) + "\n\n" + text + "\n\n" + _code_doc(rng, 98)
    planted[key] = (task, text)
  root = tmp_path / "code"
  _write_corpus(root, docs)
  return root, docs, planted


def test_planted_humaneval_solutions_are_found_with_their_spans(code_corpus):
  root, docs, planted = code_corpus
  src = sources.build_source("code", _source(root), FRACTION)
  rep = contamination.report(src, evalsets.humaneval(), 13, against=["humaneval"])
  assert rep["eval_items"] == 164 and rep["n"] == 13
  train_planted = {k: v for k, v in planted.items() if not _heldout(k)}
  pairs = {(p["key"], p["item"]): p for p in rep["pairs"]}
  assert {key for key, _ in pairs} == set(train_planted)  # the held-out one is not scanned
  for key, (task, text) in train_planted.items():
    at = docs[key].index(text)
    first = at + re.search(r"\w", text).start()
    last = at + max(m.end() for m in re.finditer(r"\w", text))
    p = pairs[key, task]
    assert [(s["start"], s["end"]) for s in p["spans"]] == [(first, last)]
    assert p["spans"][0]["text"] == docs[key][first:last]
    assert p["spans"][0]["words"] == len(re.findall(r"\w+", text))
  # HumanEval/0's canonical solution shares a 13-word loop ("for idx, elem in
  # enumerate(numbers): for idx2, elem2 in enumerate(numbers): if idx != idx2") with
  # HumanEval/20's: that pair is reported too, its span inside the planted text.
  others = {k: p for k, p in pairs.items() if k[1] != train_planted[k[0]][0]}
  assert set(others) == {("p0_0.txt", "HumanEval/20")}, set(others)
  [span] = others["p0_0.txt", "HumanEval/20"]["spans"]
  assert span["text"] == ("for idx, elem in enumerate(numbers):\n        for idx2, elem2 in "
                          "enumerate(numbers):\n            if idx != idx2")
  assert span["text"] in train_planted["p0_0.txt"][1]
  assert span["text"] in _humaneval("HumanEval/20").text
  assert rep["contaminated_documents"] == len(train_planted) == 2
  lines = contamination.summary(rep).splitlines()
  assert "3 contaminated (document, item) pairs: 2 documents" in lines[2]


def test_a_clean_corpus_reports_no_contamination(code_corpus):
  """Unplanted files of the corpus above, and the stdlib's json package."""
  root, docs, planted = code_corpus
  src = sources.build_source("code", _source(root, exclude="p*"), FRACTION)
  assert contamination.report(src, evalsets.humaneval(), 13)["pairs"] == []
  stdlib = sources.stdlib_source("stdlib", "", FRACTION, include="json/*")
  assert contamination.report(stdlib, evalsets.humaneval(), 13)["pairs"] == []


def test_decontaminate_filter_drops_exactly_the_planted_documents(code_corpus, tmp_path):
  """Against HumanEval and an MBPP-format file: the training files holding an item are
  dropped, nothing else; the held-out file with one stays held out."""
  root, docs, planted = code_corpus
  mbpp = tmp_path / "mbpp.jsonl"
  code = "def zigzag_sum(values):\n    total = 0\n    for k, v in enumerate(values):\n" \
         "        total += v if k % 2 == 0 else -v\n    return total\n"
  mbpp.write_text(json.dumps({"task_id": 7, "text": "Write a function that alternates "
                              "signs while summing.", "code": code,
                              "test_list": ["assert zigzag_sum([1, 2]) == -1"]}) + "\n")
  extra = _name("q", False)
  (root / extra).write_text("import os\n\n" + code + "\nprint(1)\n")
  plain = sources.build_source("code", _source(root), FRACTION)
  src = sources.build_source(
      "code", _source(root, decontaminate=f"humaneval,{mbpp}"), FRACTION)
  keys = [src.key(i) for i in range(src.num_documents)]
  dropped = {keys[i] for i in plain.train_indices()} - {keys[i] for i in src.train_indices()}
  assert dropped == {k for k in planted if not _heldout(k)} | {extra}
  assert list(src.heldout_indices()) == list(plain.heldout_indices())
  held = [k for k in planted if _heldout(k)]
  assert held and all(keys.index(k) in set(src.heldout_indices()) for k in held)


def test_decontaminate_against_the_held_out_split(code_corpus):
  """``heldout``: a training copy of a held-out file's body is dropped."""
  root, docs, planted = code_corpus
  held = next(k for k in docs if _heldout(k))
  copy = _name("copy", False)
  (root / copy).write_text("# copied\n" + docs[held])
  src = sources.build_source("code", _source(root, decontaminate="heldout"), FRACTION)
  assert {src.key(i) for i in np.flatnonzero(src.dropped)} == {copy}


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize("fields, message", [
    (dict(dedup="fuzzy"), "config.data.sources.x.dedup='fuzzy': choose one of exact, near"),
    (dict(dedup="near", dedup_threshold=1.5), "config.data.sources.x.dedup_threshold=1.5"),
    (dict(decontaminate="mbpp"), "unknown evaluation set 'mbpp'"),
    (dict(decontaminate="humaneval", decontaminate_n=0),
     "config.data.sources.x.decontaminate_n=0: the n-gram length must be an integer >= 1"),
])
def test_bad_filter_settings_name_the_field(code_corpus, fields, message):
  root, _, _ = code_corpus
  with pytest.raises(DataError, match=re.escape(message)):
    sources.build_source("x", _source(root, **fields), FRACTION)


def _command(capsys, *argv):
  """``(exit code, stdout, stderr)`` of the command run in this process."""
  try:
    command.run(list(argv))
    code = 0
  except SystemExit as e:
    code = e.code
  out, err = capsys.readouterr()
  return code, out, err


@pytest.mark.parametrize("flags, message", [
    (["contamination", "--against=nosuch"], "--against: unknown evaluation set 'nosuch'"),
    (["contamination", "--against=humaneval", "--n=0"], "--n=0: the n-gram length"),
    (["dedup", "--threshold=0"], "--threshold=0.0: a Jaccard similarity threshold"),
    (["dedup", "--n=5"], "--n is a flag of contamination, not of dedup"),
    (["contamination", "--against=heldout:nope"], "config.data.sources has no 'nope'"),
    (["contamination", "--against={tmp}/bad.jsonl"], "bad.jsonl:2: not a JSON object"),
])
def test_command_bad_input_is_one_line(code_corpus, capsys, tmp_path, flags, message):
  root, _, _ = code_corpus
  (tmp_path / "bad.jsonl").write_text('{"task_id": 1, "prompt": "def f():"}\n{oops\n')
  flags = [f.format(tmp=tmp_path) for f in flags]
  code, out, err = _command(capsys, *flags, "--config=configs/text.py:runlocal",
                            f"--config.data.sources.text.path={root}")
  assert code == 2 and out == ""
  assert len(err.strip().splitlines()) == 1 and message in err, err


def test_commands_print_the_reports(code_corpus, dup_corpus, capsys, tmp_path):
  root, docs, planted = code_corpus
  config = ["--config=configs/text.py:runlocal", f"--config.data.sources.text.path={root}"]
  out_json = tmp_path / "report.json"
  code, out, err = _command(capsys, "contamination", *config, "--against=humaneval",
                            f"--out={out_json}")
  assert code == 0, err
  rep = json.loads(out_json.read_text())
  assert rep["contaminated_documents"] == 2 and "against humaneval (164 items)" in out
  assert "HumanEval/42" in out and "computed in" in out
  code, out, _ = _command(capsys, "contamination", *config, "--against=humaneval")
  assert "from the cache in" in out

  droot, _, expected = dup_corpus
  code, out, _ = _command(capsys, "dedup", "--config=configs/text.py:runlocal",
                          f"--config.data.sources.text.path={droot}")
  assert code == 0
  assert "2 clusters (0 exact, 2 near) holding 6 documents" in out
  assert f"dropped: {len(expected)} training documents" in out


def test_training_with_the_filters_on(dup_corpus, tmp_path):
  """configs/text.py:runlocal (tiny's smoke run on one source) trains a couple of steps
  with both filters on; the corpus key (tokenizer, token cache, provenance) says so, and
  the filtered data iterator resumes exactly from a saved state."""
  from phijax.data import fingerprint, pipeline
  from phijax.train import loop
  root, docs, expected = dup_corpus
  config = config_files.load("configs/text.py:runlocal", [
      f"--config.data.sources.text.path={root}", "--config.data.sources.text.dedup=near",
      "--config.data.sources.text.decontaminate=humaneval",
      "--config.data.tokenizer.vocab_size=300", f"--config.data.tokenizer.cache_dir={tmp_path}",
      "--config.train.steps=2", "--config.curriculum.lr.warmup_steps=0",
      "--config.train.batch_size=2", "--config.data.seq_len=32",
      "--config.train.eval_every=0", "--config.train.final_eval_batches=1",
      "--config.train.save_every=0", "--config.train.samples=0", "--config.train.log_every=1",
      "--config.train.compile_cache_dir="])
  src = pipeline.build_sources(config.data)["text"]
  assert {src.key(i) for i in np.flatnonzero(src.dropped)} == expected
  assert "filters" in fingerprint.corpus_key(config.data, ["text"])[1]["corpus"][0]
  loop.train(config, str(tmp_path / "run"))
  rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  losses = [r["loss"] for r in rows if "loss" in r]
  assert max(r["step"] for r in rows) == 2 and losses and np.isfinite(losses).all(), rows

  iterator_resumes_exactly(config.data)


def iterator_resumes_exactly(cfg_data):
  """The (filtered) training iterator, restored from its state after one batch, gives
  the next three batches the uninterrupted one gives."""
  from phijax import data
  tok = data.load_tokenizer(cfg_data)
  first = data.make_train_iterator(cfg_data, tok, batch_size=2, seed=0)
  next(first)
  state = first.get_state()
  want = [next(first) for _ in range(3)]
  second = data.make_train_iterator(cfg_data, tok, batch_size=2, seed=0)
  second.set_state(state)
  for a, b in zip(want, [next(second) for _ in range(3)]):
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_command_help_lists_flags_and_the_filter_fields(capsys):
  code, out, _ = _command(capsys, "--help", "--config=tiny")
  assert code == 0
  for flag in ("dedup", "contamination", "--mode", "--threshold", "--against", "--n",
               "--source", "--out", "--recompute"):
    assert flag in out, flag
  fields = {line.split()[0]: line for line in out.splitlines() if line.startswith("  data.")}
  assert "# drop duplicate training documents" in fields["data.sources.stdlib.dedup"]
  assert "GPT-3 used 13" in fields["data.sources.stdlib.decontaminate_n"]
