"""Your own corpus end to end: the tokenizer command, configs/text.py's source (a
directory, a glob, JSON Lines), its held-out split, and a short training run whose
tokenizer, held-out documents and gzip baseline come from that corpus alone.

The split oracle is sha256 of each document's key computed here, independently of
phijax.data.corpus; the tokenizer oracle is train_tokenizer on the files this test
reads itself."""

import gzip
import hashlib
import json
import os
import random
import re
import subprocess
import sys

import pytest

from phijax import config_files, data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRACTION = 0.05  # data.heldout_fraction's default, which configs/text.py keeps
WORDS = ("zorblax", "quux", "widget", "sprocket", "lattice", "ember", "harbor", "quill")


def _score(key):
  return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def _expected_heldout(keys, fraction=FRACTION):
  """Keys hashing below the fraction; with none, the lowest-hashing one (>= 2 keys)."""
  held = {k for k in keys if _score(k) < fraction}
  return held or {min(keys, key=_score)}


def _python_doc(rng, i):
  lines = [f'"""Module {i}: {" ".join(rng.choice(WORDS) for _ in range(6))}."""', ""]
  for j in range(rng.randint(4, 9)):
    a, b = rng.sample(WORDS, 2)
    lines += [f"def zorblax_{a}_{j}(x, n={rng.randint(0, 99)}):",
              f"    # {b} then {a}",
              f"    return [{b}(v) for v in x if v > n]  # ünïcode {i}", ""]
  return "\n".join(lines)


def _prose_doc(rng, i):
  return "\n\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize()
                     + "." for _ in range(rng.randint(3, 6))) + "\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """``(dir, {key: text})``: 32 Python-like files in two packages and 4 prose files."""
  root = tmp_path_factory.mktemp("mycode")
  rng = random.Random(0)
  docs = {}
  for i in range(32):
    docs[f"pkg{i % 2}/mod{i:02d}.py"] = _python_doc(rng, i)
  for i in range(4):
    docs[f"notes{i}.txt"] = _prose_doc(rng, i)
  for key, text in docs.items():
    (root / key).parent.mkdir(parents=True, exist_ok=True)
    (root / key).write_bytes(text.encode("utf-8"))
  return root, docs


def _train_texts(docs, keys):
  held = _expected_heldout(keys)
  return [docs[k] for k in sorted(keys) if k not in held], [docs[k] for k in sorted(held)]


def _text_config(path, cache_dir, *overrides):
  return config_files.load("configs/text.py:runlocal", [
      f"--config.data.sources.text.path={path}", "--config.data.tokenizer.vocab_size=400",
      f"--config.data.tokenizer.cache_dir={cache_dir}", *overrides])


def _run(module, *args, env_extra=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu", **(env_extra or {}))
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                        text=True, cwd=ROOT, env=env, timeout=300)


def _one_error_line(proc):
  assert proc.returncode == 2, proc.stdout + proc.stderr
  assert "Traceback" not in proc.stderr, proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.strip() and not l.startswith("INFO ")]
  assert len(lines) == 1, proc.stderr
  return lines[0]


# ------------------------------------------------------------ tokenizer command


def test_tokenizer_command_trains_on_the_train_split(corpus, tmp_path):
  root, docs = corpus
  out = tmp_path / "mine.model"
  proc = _run("phijax.data.tokenizer", f"--input={root}", "--vocab_size=400", f"--out={out}")
  assert proc.returncode == 0, proc.stderr
  train, held = _train_texts(docs, list(docs))
  oracle = data.train_tokenizer(train, vocab_size=400)
  tok = data.Tokenizer.load(out)
  assert tok.model_proto == oracle.model_proto  # this corpus' train split, nothing else
  assert re.search(rf"on {len(train)} of {len(train)} train documents "
                   rf"\({sum(len(t.encode()) for t in train):,} bytes\)", proc.stdout)
  held_bytes = sum(len(t.encode()) for t in held)
  held_tokens = sum(len(oracle.encode(t)) for t in held)
  m = re.search(r"held-out split: (\d+) documents, ([\d,]+) bytes, ([\d,]+) tokens: "
                r"([\d.]+) bytes/token", proc.stdout)
  assert m, proc.stdout
  assert int(m[1]) == len(held) and int(m[2].replace(",", "")) == held_bytes
  assert float(m[4]) == pytest.approx(held_bytes / held_tokens, abs=1e-3)
  assert f"round trip: exact on all {len(held)} documents" in proc.stdout
  assert (f"--config.data.tokenizer.path={out} --config.data.tokenizer.vocab_size="
          f"{tok.vocab_size}") in proc.stdout


def test_tokenizer_command_glob_and_jsonl(corpus, tmp_path):
  root, docs = corpus
  # A glob: only the .py files; keys (and the split) relative to the glob's directory.
  proc = _run("phijax.data.tokenizer", f"--input={root}/**/*.py", "--vocab_size=400",
              f"--out={tmp_path / 'py.model'}")
  assert proc.returncode == 0, proc.stderr
  py_keys = [k for k in docs if k.endswith(".py")]
  train, held = _train_texts(docs, py_keys)
  assert data.Tokenizer.load(tmp_path / "py.model").model_proto == \
      data.train_tokenizer(train, vocab_size=400).model_proto
  assert f"held-out split: {len(held)} documents" in proc.stdout
  # JSON Lines: one document per line, the text in --text_field.
  lines = [json.dumps({"body": docs[k], "id": k}) for k in sorted(docs)]
  (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")
  proc = _run("phijax.data.tokenizer", f"--input={tmp_path / 'docs.jsonl'}",
              "--text_field=body", "--model_type=unigram", "--vocab_size=400",
              f"--out={tmp_path / 'j.model'}")
  assert proc.returncode == 0, proc.stderr
  keys = [f"docs.jsonl:{n}" for n in range(1, len(lines) + 1)]
  n_held = len(_expected_heldout(keys))
  assert f"on {len(keys) - n_held} of {len(keys) - n_held} train documents" in proc.stdout
  assert f"round trip: exact on all {n_held} documents" in proc.stdout


@pytest.mark.parametrize("args,expected", [
    (["--input=/nonexistent/corpus"], "argument --input: '/nonexistent/corpus' does not exist"),
    (["--input=/nonexistent/**/*.py"], "'/nonexistent', the directory of the glob"),
    (["--input={root}/*.rst"], "has no files matching '*.rst'; point --input at"),
    (["--input={root}/notes0.txt", "--kind=jsonl"], "not valid JSON"),
])
def test_tokenizer_command_bad_input(corpus, tmp_path, args, expected):
  root, _ = corpus
  proc = _run("phijax.data.tokenizer", *[a.format(root=root) for a in args],
              f"--out={tmp_path / 'x.model'}")
  line = _one_error_line(proc)
  assert line.startswith("python -m phijax.data.tokenizer: error: ") and expected in line, line


# ------------------------------------------------------------- configs/text.py


def test_text_config_sources_and_tokenizer(corpus, tmp_path):
  root, docs = corpus
  cfg = _text_config(root, tmp_path / "cache")
  assert list(cfg.data.sources) == ["text"]  # no stdlib in the mix
  assert cfg.model.vocab_size == 400  # follows data.tokenizer.vocab_size
  src = data.build_sources(cfg.data)["text"]
  assert src.kind == "text" and sorted(src.keys) == sorted(docs)
  train, held = _train_texts(docs, list(docs))
  assert data.heldout_documents(cfg.data) == held and held
  tok = data.load_tokenizer(cfg.data)  # trained on this corpus' train split, cached
  assert tok.model_proto == data.train_tokenizer(train, vocab_size=400).model_proto
  cached = list((tmp_path / "cache" / "tokenizers").glob("text-bpe400-*.model"))
  assert [str(p) for p in cached] == [tok.name]
  assert data.load_tokenizer(cfg.data).name == tok.name  # a cache hit
  # A glob: only what it matches, keys relative to the directory before the wildcard.
  cfg = _text_config(f"{root}/pkg*/*.py", tmp_path / "cache")
  src = data.build_sources(cfg.data)["text"]
  py_keys = sorted(k for k in docs if k.endswith(".py"))
  assert sorted(src.keys) == py_keys
  assert data.heldout_documents(cfg.data) == _train_texts(docs, py_keys)[1]
  assert data.load_tokenizer(cfg.data).name != tok.name  # another corpus, another model


def test_text_config_jsonl(corpus, tmp_path):
  _, docs = corpus
  texts = [docs[k] for k in sorted(docs)]
  (tmp_path / "d").mkdir()
  (tmp_path / "d" / "a.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
  cfg = _text_config(tmp_path / "d", tmp_path / "cache", "--config.data.sources.text.text_field=body")
  src = data.build_sources(cfg.data)["text"]
  assert src.kind == "jsonl" and src.num_documents == len(texts)
  keys = [f"a.jsonl:{n}" for n in range(1, len(texts) + 1)]
  held = _expected_heldout(keys)
  assert data.heldout_documents(cfg.data) == [t for k, t in zip(keys, texts) if k in held]


def test_small_corpora_split(tmp_path):
  # Two documents: one is held out (the lower hash), one trained on, whatever the hashes.
  for name in ("a.txt", "b.txt"):
    (tmp_path / "two" / name).parent.mkdir(exist_ok=True)
    (tmp_path / "two" / name).write_text(f"text of {name}\n")
  cfg = _text_config(tmp_path / "two", tmp_path / "cache")
  src = data.build_sources(cfg.data)["text"]
  assert [src.keys[i] for i in src.heldout_indices()] == [min(["a.txt", "b.txt"], key=_score)]
  assert len(src.train_indices()) == 1
  # One document is trained on; evaluating then says why nothing is held out.
  cfg = _text_config(tmp_path / "two" / "a.txt", tmp_path / "cache")
  assert len(data.build_sources(cfg.data)["text"].train_indices()) == 1
  with pytest.raises(data.DataError, match="hold one document each.*split -l"):
    data.make_eval_batches(cfg.data, data.train_tokenizer(["a b c"], vocab_size=300),
                           batch_size=1, num_batches=1, process_index=0, process_count=1)


# ------------------------------------------------------------------ training run


def test_text_config_training_run(corpus, tmp_path):
  root, docs = corpus
  workdir = tmp_path / "run"
  proc = _run("phijax.train", "--config=configs/text.py:runlocal", f"--workdir={workdir}",
              f"--config.data.sources.text.path={root}", "--config.train.steps=4",
              "--config.data.tokenizer.vocab_size=512",
              f"--config.data.tokenizer.cache_dir={tmp_path / 'cache'}",
              "--config.train.eval_every=0", "--config.train.save_every=4",
              "--config.train.log_every=2", "--config.train.samples=1",
              "--config.train.sample_tokens=4", "--config.train.progress=false")
  assert proc.returncode == 0, proc.stderr[-3000:]
  train, held = _train_texts(docs, list(docs))
  # The run's tokenizer is the one trained on this corpus' train split.
  oracle = data.train_tokenizer(train, vocab_size=512)
  assert (workdir / "tokenizer.model").read_bytes() == oracle.model_proto
  assert any("zorblax" in oracle.id_to_piece(i) for i in range(oracle.vocab_size))
  config = json.loads((workdir / "config.json").read_text())
  assert list(config["data"]["sources"]) == ["text"]
  assert config["model"]["vocab_size"] == 512
  # The final evaluation and the gzip baseline read exactly this corpus' held-out files.
  final = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()][-1]
  # gzip on the bytes scored: each held-out file but its first token (which no target
  # predicts), in order.
  raw = b"".join(t.encode()[int(oracle.token_bytes[oracle.encode(t)[0]]):] for t in held)
  assert final["gzip_bpb"] == pytest.approx(8 * len(gzip.compress(raw, 9)) / len(raw))
  assert final["eval_bytes"] == len(raw)
  held_tokens = sum(len(oracle.encode(t)) + 1 for t in held)  # + <|endoftext|>
  assert final["eval_tokens"] == held_tokens - len(held)  # the first token has no target


@pytest.mark.parametrize("path,expected", [
    ("", "set config.data.sources.text.path to a directory, a file or a glob"),
    ("/nonexistent/corpus", "path '/nonexistent/corpus' does not exist"),
])
def test_training_bad_path_is_one_line(tmp_path, path, expected):
  proc = _run("phijax.train", "--config=configs/text.py:runlocal",
              f"--workdir={tmp_path / 'run'}", f"--config.data.sources.text.path={path}",
              f"--config.data.tokenizer.cache_dir={tmp_path / 'cache'}",
              "--config.train.progress=false")
  line = _one_error_line(proc)
  assert line.startswith("python -m phijax.train: error: ") and expected in line, line
