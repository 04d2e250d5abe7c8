"""Taking a model out of a run: ``python -m phijax.convert --run=RUN [--step=N]`` to a
Hugging Face directory (logits and tokenizer ids equal phijax's) or to phijax
parameters, and one clear line (exit 2, no traceback) for each kind of bad input."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from phijax.convert import weights
from phijax.data.tokenizer import Tokenizer
from phijax.model import Transformer, params_io
from tests.devices import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1))
TRAIN = ["--config=configs/tiny.py:runlocal", "--config.train.steps=4",
         "--config.train.save_every=2", "--config.train.progress=false",
         "--config.train.samples=0", "--config.train.eval_every=0",
         "--config.train.final_eval_batches=1"]


def _cmd(module, *args):
  return [sys.executable, "-m", module, *map(str, args)]


def convert_cli(*args):
  return subprocess.run(_cmd("phijax.convert", *args), capture_output=True, text=True,
                        cwd=ROOT, env=ENV, timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  proc = subprocess.run(_cmd("phijax.train", f"--workdir={workdir}", *TRAIN),
                        capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
  return workdir


@pytest.fixture(scope="module")
def hf_dir(run_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("export") / "hf"
  proc = convert_cli(f"--run={run_dir}", "--to_hf", f"--out={out}")
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert "step 4" in proc.stdout and "parameters" in proc.stdout, proc.stdout
  # orbax's INFO lines ("Closing ...") stay quiet without --verbose
  assert "Closing" not in proc.stderr and "INFO" not in proc.stderr, proc.stderr[-2000:]
  return out


def _phijax_logits(cfg, params, tokens):
  # One compiled forward, not an eager compile per op: the same numbers, far faster.
  return np.asarray(jax.jit(lambda p, t: Transformer(cfg).apply({"params": p}, t))(
      params, tokens))


def test_load_run_params_steps(run_dir):
  cfg, params, step = weights.load_run_params(run_dir)
  assert step == 4 and cfg.num_layers == 2
  _, params2, step2 = weights.load_run_params(run_dir, step=2)
  assert step2 == 2
  assert not np.allclose(params["embed"], params2["embed"])
  with pytest.raises(ValueError, match=r"no checkpoint at step 3; steps there: 2, 4"):
    weights.load_run_params(run_dir, step=3)
  # init_from reads the same newest parameters
  abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  init = weights.load_init_params(str(run_dir), abstract)
  jax.tree_util.tree_map(np.testing.assert_array_equal, init, params)


def test_export_step_to_phijax_params(run_dir, tmp_path):
  out = tmp_path / "p2"
  proc = convert_cli(f"--run={run_dir}", "--step=2", f"--out={out}")
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert "step 2" in proc.stdout, proc.stdout
  cfg, params = params_io.load_params(str(out))
  want_cfg, want, _ = weights.load_run_params(run_dir, step=2)
  assert cfg == want_cfg
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, want)
  assert (out / "tokenizer.model").read_bytes() == (run_dir / "tokenizer.model").read_bytes()


def test_hf_logits_equal_phijax(run_dir, hf_dir):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  cfg, params, _ = weights.load_run_params(run_dir)
  tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 24)).astype(np.int32)
  model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).float().eval()
  with torch.no_grad():
    hf = model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(hf, _phijax_logits(cfg, params, tokens), atol=1e-4, rtol=1e-4)
  tok = Tokenizer.load(run_dir / "tokenizer.model")
  assert model.config.eos_token_id == tok.eos_id and model.config.pad_token_id == tok.pad_id


def test_hf_export_without_tokenizers_package(run_dir, tmp_path, monkeypatch):
  """The fast tokenizer is the optional part: without the package, a note."""
  from phijax.convert import export
  monkeypatch.setitem(sys.modules, "tokenizers", None)  # import tokenizers -> ImportError
  summary = export.export_run(str(run_dir), str(tmp_path / "hf"), to_hf=True)
  assert "tokenizer.json" not in summary["files"]
  assert {"config.json", "model.safetensors", "tokenizer.model"} <= set(summary["files"])
  assert any("pip install 'phijax[hf]'" in n for n in summary["notes"]), summary["notes"]


TEXTS = [
    "def f(x):\n    if x:\n        return x  # comment\n\n\n    return None\n",
    "class A:\n\tpass\r\n\r\n\n\n\n        \n  \t  x = [1,  2,   3]\n",
    "",
    " ",
    "\n",
    "print('héllo wörld', 'ñandú', '日本語のテキスト', 'Ελληνικά', 'кириллица')\n",
    "emoji 😀🤖 and controls \x00\x01\x7f and a BOM \ufeff and nbsp \u00a0 \u3000\n",
    "s = '\u2581'  # a literal U+2581, and \u2581\u2581 a\u2581b \u2581 \n",
    "ﬁ ① Ⅻ ｆｕｌｌｗｉｄｔｈ (no NFKC: kept as written)",
    "<|endoftext|> <|endofturn|> <pad> <unk> are text here, as in phijax",
]


def test_hf_tokenizer_ids_equal_phijax(run_dir, hf_dir):
  transformers = pytest.importorskip("transformers")
  tok = Tokenizer.load(run_dir / "tokenizer.model")
  hf = transformers.AutoTokenizer.from_pretrained(hf_dir)
  # phijax's own source: real code, indentation and all
  sources = [open(os.path.join(ROOT, "phijax", name), encoding="utf-8").read()
             for name in ("model/transformer.py", "train/loop.py", "train/checkpoint.py")]
  for text in TEXTS + sources:
    ids = tok.encode(text)
    assert hf.encode(text) == ids, text[:80]
    assert hf(text)["input_ids"] == ids
    assert hf.decode(ids) == text
  assert (hf.eos_token_id, hf.pad_token_id) == (tok.eos_id, tok.pad_id)
  assert hf.convert_tokens_to_ids("<|endofturn|>") == tok.eot_id
  assert hf.decode(tok.encode("x\n") + [tok.eos_id, tok.eot_id], skip_special_tokens=True) == "x\n"
  cfg, _, _ = weights.load_run_params(run_dir)
  assert hf.model_max_length == cfg.max_position_embeddings
  assert (hf_dir / "tokenizer.model").exists()


def test_hf_tokenizer_on_the_whole_stdlib_corpus(run_dir):
  """The README's claim: the same ids as sentencepiece on every stdlib corpus file."""
  pytest.importorskip("tokenizers")
  from phijax.convert import hf_tokenizer
  from phijax.data import corpus
  tok = Tokenizer.load(run_dir / "tokenizer.model")
  root = corpus.stdlib_root()
  texts = [(root / f).read_bytes().decode("utf-8", errors="replace")
           for f in corpus.stdlib_files(root)]
  assert len(texts) > 500
  differ = hf_tokenizer.check_hf_tokenizer(tok, texts)
  assert not differ, [str(corpus.stdlib_files(root)[i]) for i in differ[:5]]


# --- bad input: one line on stderr, exit 2, no traceback ------------------------------

def _bad_cases(run_dir, tmp):
  (tmp / "file.txt").write_text("x")
  (tmp / "empty_run" / "checkpoints").mkdir(parents=True)
  out = f"--out={tmp / 'out'}"
  return {
      "hf_dir missing": (["--hf_dir=/nonexistent/phi", out], "does not exist"),
      "hf_dir is a run": ([f"--hf_dir={run_dir}", out], "--run="),
      "run is a file": ([f"--run={tmp / 'file.txt'}", out], "not a directory"),
      "run is not a run": ([f"--run={tmp}", out], "not a phijax run directory"),
      "run has no checkpoints": ([f"--run={tmp / 'empty_run'}", out], "no checkpoints"),
      "step missing": ([f"--run={run_dir}", "--step=3", out], "steps there: 2, 4"),
      "phijax_dir is a run": ([f"--phijax_dir={run_dir}", "--to_hf", out], "--run="),
      "phijax_dir not params": ([f"--phijax_dir={tmp}", "--to_hf", out], "model_config.json"),
      "out missing": ([f"--run={run_dir}"], "--out"),
      "out is a file": ([f"--run={run_dir}", f"--out={tmp / 'file.txt'}"], "is a file"),
      "no source": ([out], "--run"),
      "out is the run": ([f"--run={run_dir}", f"--out={run_dir}"], "run directory itself"),
  }


@pytest.fixture(scope="module")
def bad_runs(run_dir, tmp_path_factory):
  """All the bad invocations at once (each is a short process)."""
  cases = _bad_cases(run_dir, tmp_path_factory.mktemp("bad"))
  assert sorted(cases) == sorted(BAD_CASES)
  procs = {name: subprocess.Popen(_cmd("phijax.convert", *args), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
           for name, (args, _) in cases.items()}
  results = {name: (p.communicate(timeout=300), p.returncode) for name, p in procs.items()}
  return cases, results


BAD_CASES = ["hf_dir missing", "hf_dir is a run", "run is a file", "run is not a run",
             "run has no checkpoints", "step missing", "phijax_dir is a run",
             "phijax_dir not params", "out missing", "out is a file", "no source",
             "out is the run"]


@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_input_one_line_exit_2(bad_runs, name):
  cases, results = bad_runs
  (stdout, stderr), code = results[name]
  _, expected = cases[name]
  assert code == 2, (name, stdout, stderr)
  lines = [l for l in stderr.splitlines() if l.strip()]
  assert len(lines) == 1, stderr
  assert "Traceback" not in stderr
  assert lines[0].startswith("python -m phijax.convert: error: ") and expected in lines[0], lines
