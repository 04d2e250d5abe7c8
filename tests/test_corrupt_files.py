"""Every reader of a file a user hands us, fuzzed: truncations and byte flips of each
kind of file each reader takes either still read (a flip inside tensor data is not
detectable: neither safetensors nor orbax keeps checksums) or end the command with one
line naming the file, exit 2; never a traceback, never a library's noise on stderr.

The readers run in-process under ``cli.main``, the same conventions a command has; one
command runs for real, for the noise orbax leaves behind after a failed restore.
"""

import contextlib
import gzip
import io
import json
import os
import random
import shutil
import subprocess
import sys
import traceback
import warnings

import numpy as np
import pytest
from flax import linen as nn

from phijax import cli, config_files, convert, data
from phijax.convert import hf_tokenizer
from phijax.data import config as data_config, sources
from phijax.evals import code_tasks, generate, model_source
from phijax.model import abstract_params, params_io
from phijax.model.config import ModelConfig

CFG = ModelConfig(arch="phi", vocab_size=320, hidden_size=32, num_layers=2, num_heads=4,
                  intermediate_size=64, partial_rotary_factor=0.5,
                  max_position_embeddings=64)
TEXTS = [f"def f{i}(x):\n    return x + {i}\n" for i in range(100)] + ["hello world " * 20]
PROBLEM = {"task_id": "T/0", "prompt": "def f(x):\n", "test": "def check(f): pass\n",
           "entry_point": "f", "canonical_solution": "    return x\n"}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
  """One intact file or directory of every kind a reader takes."""
  root = tmp_path_factory.mktemp("intact")
  tok = data.train_tokenizer(TEXTS, vocab_size=300)
  rng = np.random.default_rng(0)  # random weights without compiling the init
  params = {k: v for k, v in nn.unbox(abstract_params(CFG)).items()}
  import jax
  params = jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype),
                        params)
  hf = root / "hf"
  convert.to_hf(CFG, params, str(hf))
  hf_tokenizer.write_hf_tokenizer(tok, str(hf), model_max_length=64)
  shutil.copytree(hf, root / "hf_tokenizer")  # read with transformers' AutoTokenizer
  tok.save(hf / "tokenizer.model")
  params_io.save_params(str(root / "params"), CFG, params)
  tok.save(root / "params" / "tokenizer.model")
  tok.save(root / "tokenizer.model")
  (root / "problems.jsonl").write_text(json.dumps(PROBLEM) + "\n")
  with gzip.open(root / "problems.jsonl.gz", "wt") as f:
    f.write(json.dumps(PROBLEM) + "\n")
  (root / "prompts.jsonl").write_text('"def f("\n{"prompt": "import os"}\n')
  (root / "text").mkdir()
  for i in range(2):
    (root / "text" / f"m{i}.py").write_text(TEXTS[i] * 3)
  (root / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:4]))
  (root / "sft.jsonl").write_text("".join(
      json.dumps({"prompt": f"add {i}", "response": t}) + "\n"
      for i, t in enumerate(TEXTS[:4])))
  (root / "prefs.jsonl").write_text("".join(
      json.dumps({"prompt": "f", "chosen": t, "rejected": "x"}) + "\n" for t in TEXTS[:4]))
  sources.write_array_record(root / "ids.array_record", [tok.encode(t) for t in TEXTS[:4]])
  shutil.copy(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"),
              root / "tiny.py")
  return root, tok


def _read_source(kind, path, tok):
  src = sources.build_source("fuzz", data_config.source(kind, str(path)), 0.25, 64)
  for i in range(src.num_documents):
    if kind == "sft":
      src.conversation(i)
    elif kind == "preferences":
      src.pair(i)
    else:
      src.tokens(i, tok)


# (reader, what it is handed, the command-line flag or setting that hands it over)
READERS = {
    "--hf_dir (sentencepiece)": ("hf", model_source.load_hf_dir),
    "--hf_dir (tokenizer.json)": ("hf_tokenizer", model_source.load_hf_dir),
    "--params_dir": ("params", model_source.load_params_dir),
    "data.tokenizer.path": ("tokenizer.model", data.Tokenizer.load),
    "--problems": ("problems.jsonl", code_tasks.load_problems),
    "--problems (.gz)": ("problems.jsonl.gz", code_tasks.load_problems),
    "--prompts_file": ("prompts.jsonl", generate.read_prompts_file),
    "--config": ("tiny.py", lambda p: config_files.load(f"{p}:runlocal")),
}
SOURCES = {"text": "text", "jsonl": "docs.jsonl", "sft": "sft.jsonl",
           "preferences": "prefs.jsonl", "array_record": "ids.array_record"}


def _damaged(size: int, seed: str):
  """Truncations (to nothing, half, all but the last byte) and byte flips (one in the
  first 16 bytes, where headers are, and one anywhere)."""
  rng = random.Random(seed)
  out = [("truncated to 0 bytes", 0, None), (f"truncated to {size // 2}", size // 2, None)]
  if size > 1:
    out.append((f"truncated to {size - 1}", size - 1, None))
  for pos in (rng.randrange(min(size, 16)), rng.randrange(size)):
    out.append((f"byte {pos} flipped", None, pos))
  return out


def _outcome(fn):
  """``(exit code, stderr)`` of ``fn`` run as a command's main."""
  err = io.StringIO()
  with contextlib.redirect_stderr(err), warnings.catch_warnings():
    warnings.simplefilter("ignore")  # a skipped non-UTF-8 text file warns: by design
    try:
      cli.main(cli.ArgumentParser(prog="phijax-fuzz"), lambda args: fn(), argv=[])
      code = 0
    except SystemExit as e:
      code = e.code
    except Exception:  # escaped the command's conventions: a traceback
      traceback.print_exc(file=err)
      code = "a traceback"
  return code, err.getvalue()


def _fuzz(root, name, read, tmp_path):
  """Every damaged copy of every file under ``root / name``: what went wrong."""
  intact = root / name
  files = sorted(p for p in intact.rglob("*") if p.is_file()) if intact.is_dir() else [intact]
  problems = []
  for n, f in enumerate(files):
    rel = f.relative_to(root)
    for k, (how, cut, flip) in enumerate(_damaged(f.stat().st_size, str(rel))):
      copy_root = tmp_path / f"{n}-{k}"
      copy = copy_root / name
      if intact.is_dir():
        shutil.copytree(intact, copy)
      else:
        copy_root.mkdir()
        shutil.copy(intact, copy)
      target = copy_root / rel
      raw = bytearray(target.read_bytes())
      if flip is not None:
        raw[flip] ^= 0xFF
      else:
        del raw[cut:]
      target.write_bytes(bytes(raw))
      code, err = _outcome(lambda: read(copy))
      lines = err.strip().splitlines()
      # The file, or the directory inside the handed-over one that holds it (an
      # orbax checkpoint is read as a whole: its error names params/).
      named = [str(p) for p in [target, *target.parents] if copy in [p, *p.parents]]
      if code == 0 and not lines:
        continue
      if (code == 2 and len(lines) == 1 and lines[0].startswith("phijax-fuzz: error: ")
          and any(p in lines[0] for p in named)):
        continue
      problems.append(f"{rel} {how}: exit {code}, stderr {err[-600:]!r}")
    shutil.rmtree(tmp_path, ignore_errors=True)
    tmp_path.mkdir(exist_ok=True)
  return problems


@pytest.mark.parametrize("reader", list(READERS))
def test_a_damaged_file_is_one_line_naming_it(made, reader, tmp_path):
  root, _ = made
  name, read = READERS[reader]
  problems = _fuzz(root, name, read, tmp_path)
  assert not problems, "\n".join(problems)


@pytest.mark.parametrize("kind", list(SOURCES))
def test_a_damaged_data_file_is_one_line_naming_it(made, kind, tmp_path):
  root, tok = made
  problems = _fuzz(root, SOURCES[kind], lambda p: _read_source(kind, p, tok), tmp_path)
  assert not problems, "\n".join(problems)


def test_a_wrong_field_names_the_config_file(made, tmp_path):
  """A readable config that phijax rejects names the file too."""
  root, _ = made
  shutil.copytree(root / "params", tmp_path / "p")
  path = tmp_path / "p" / "model_config.json"
  cfg = json.loads(path.read_text())
  path.write_text(json.dumps({**cfg, "num_heads": "four"}))
  code, err = _outcome(lambda: model_source.load_params_dir(tmp_path / "p"))
  assert code == 2 and str(path) in err and len(err.strip().splitlines()) == 1, err
  path.write_text(json.dumps({**cfg, "hidden_size": 64}))  # the weights are 32 wide
  code, err = _outcome(lambda: model_source.load_params_dir(tmp_path / "p"))
  assert code == 2 and "has shape (320, 32)" in err and "needs (320, 64)" in err, err


def test_the_command_prints_one_line_after_a_failed_restore(made, tmp_path):
  """orbax abandons the other arrays' reads when one fails; they finish while the
  command exits and must not print tracebacks after its error line."""
  root, _ = made
  shutil.copytree(root / "params", tmp_path / "p")
  for f in (tmp_path / "p" / "params" / "ocdbt.process_0" / "d").iterdir():
    f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2])
  r = subprocess.run([sys.executable, "-m", "phijax.generate", f"--params_dir={tmp_path}/p",
                      "--prompt=def "], capture_output=True, text=True, timeout=120)
  assert r.returncode == 2, r.stderr
  assert r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
  assert f"{tmp_path}/p/params is corrupt or truncated" in r.stderr, r.stderr
