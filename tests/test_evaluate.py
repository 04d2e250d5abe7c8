"""The generate and evaluate commands end to end on a tiny trained run: bits per byte
equal to the training loop's final evaluation, HumanEval and a problem file scored
through the sandbox, the same text from a run and its Hugging Face export, and one
clear line for each kind of bad input."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from phijax.evals import evaluate, generate
from tests.devices import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """The tiny default model, trained a few steps (the numbers, not the quality, matter)."""
  workdir = tmp_path_factory.mktemp("run")
  proc = subprocess.run(
      [sys.executable, "-m", "phijax.train", "--config=tiny", f"--workdir={workdir}",
       "--config.train.steps=4", "--config.train.batch_size=4", "--config.data.seq_len=64",
       "--config.train.eval_every=0", "--config.train.final_eval_batches=3",
       "--config.train.samples=0", "--config.curriculum.lr.warmup_steps=1"],
      capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir


def _cli(run, argv, capsys):
  """Runs a command in-process; returns (exit code, stdout, stderr)."""
  try:
    run(argv)
    code = 0
  except SystemExit as e:
    code = e.code
  out, err = capsys.readouterr()
  return code, out, err


def test_bpb_equals_the_training_loops_final_eval(run_dir, capsys):
  code, out, err = _cli(evaluate.run, [f"--workdir={run_dir}", "--task=bpb"], capsys)
  assert code == 0, err
  final = [json.loads(l) for l in open(run_dir / "metrics.jsonl") if '"final"' in l][-1]
  report = json.loads((run_dir / "evals" / "bpb.json").read_text())
  assert report["scores"]["eval_bpb"] == pytest.approx(final["eval_bpb"], abs=1e-6)
  assert report["scores"]["eval_loss"] == pytest.approx(final["eval_loss"], abs=1e-6)
  assert report["scores"]["gzip_bpb"] == pytest.approx(final["gzip_bpb"], abs=1e-9)
  assert report["settings"]["eval_batches"] == 3 and report["step"] == 4
  assert out.startswith("bpb: eval_loss ") and str(run_dir / "evals" / "bpb.json") in out
  # The run's gzip figure is gzip -9 of exactly the bytes its 3 final batches scored.
  import ml_collections

  from phijax import data
  from phijax.data.tokenizer import Tokenizer
  from phijax.train import perplexity
  cfg = ml_collections.ConfigDict(json.load(open(run_dir / "config.json")))
  tok = Tokenizer.load(str(run_dir / "tokenizer.model"))
  batches = data.make_eval_batches(cfg.data, tok, batch_size=4, num_batches=3,
                                   process_index=0, process_count=1)
  scored = perplexity.scored_bytes(batches, tok)
  assert final["gzip_bpb"] == perplexity.gzip_bits_per_byte(scored)
  assert final["eval_bytes"] == len(scored) and final["eval_whole"] is False


def test_positions_buckets_past_the_trained_length(run_dir, capsys):
  """Rows twice the trained 64 tokens, buckets of 32: the tokens of every bucket add up,
  the later two are marked past the trained length; at the trained length the overall
  loss is the training loop's final evaluation."""
  code, out, err = _cli(evaluate.run, [f"--workdir={run_dir}", "--task=positions",
                                       "--seq_len=128", "--bucket=32"], capsys)
  assert code == 0, err
  report = json.loads((run_dir / "evals" / "positions.json").read_text())
  rows = [json.loads(l) for l in open(run_dir / "evals" / "positions.samples.jsonl")]
  assert [(r["start"], r["end"], r["past_trained"]) for r in rows] == [
      (0, 32, False), (32, 64, False), (64, 96, True), (96, 128, True)]
  assert all(r["tokens"] > 0 and r["loss"] > 0 for r in rows)
  assert sum(r["tokens"] for r in rows) == report["scores"]["eval_tokens"]
  assert report["settings"]["seq_len"] == 128 and report["settings"]["trained_seq_len"] == 64
  assert report["scores"]["loss_64_96"] == rows[2]["loss"]
  assert "(past trained length)" in err
  code, out, err = _cli(evaluate.run, [f"--workdir={run_dir}", "--task=positions",
                                       "--bucket=16"], capsys)
  assert code == 0, err
  final = [json.loads(l) for l in open(run_dir / "metrics.jsonl") if '"final"' in l][-1]
  report = json.loads((run_dir / "evals" / "positions.json").read_text())
  assert report["scores"]["eval_loss"] == pytest.approx(final["eval_loss"], rel=1e-5)
  assert report["scores"]["eval_tokens"] == final["eval_tokens"]


def test_humaneval_end_to_end_on_a_handful_of_problems(run_dir, capsys):
  code, out, err = _cli(evaluate.run, [f"--workdir={run_dir}", "--task=humaneval",
                                       "--limit=3", "--max_new_tokens=16"], capsys)
  assert code == 0, err
  report = json.loads((run_dir / "evals" / "humaneval.json").read_text())
  scores = report["scores"]
  assert scores["problems"] == 3 and scores["samples"] == 3
  assert 0.0 <= scores["pass@1"] <= 1.0 and "pass@10" not in scores  # n=1 allows k=1
  assert report["settings"]["temperature"] == 0.0 and "\ndef" in report["settings"]["stop"]
  rows = [json.loads(l) for l in open(run_dir / "evals" / "humaneval.samples.jsonl")]
  assert [r["task_id"] for r in rows] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
  assert all(r["status"] in ("passed", "failed", "timeout", "killed") for r in rows)
  assert scores["pass@1"] == sum(r["passed"] for r in rows) / 3
  assert "generating: 3/3 problems" in err


def test_problem_file_scores_and_oversized_prompts_count_as_failed(run_dir, tmp_path, capsys):
  problems = tmp_path / "mine.jsonl"
  problems.write_text("".join(json.dumps(p) + "\n" for p in [
      {"task_id": 1, "text": "Write a function add(a, b) returning a + b.",
       "code": "def add(a, b):\n    return a + b\n", "test_list": ["assert add(1, 2) == 3"]},
      {"task_id": 2, "text": "word " * 2100, "code": "def f():\n    return 1\n",
       "test_list": ["assert f() == 1"]}]))
  code, out, err = _cli(evaluate.run, [f"--workdir={run_dir}", "--task=problems",
                                       f"--problems={problems}", "--max_new_tokens=8",
                                       f"--out={tmp_path}"], capsys)
  assert code == 0, err
  report = json.loads((tmp_path / "evals" / "mine.json").read_text())
  assert report["scores"]["problems"] == 2 and report["scores"]["prompt_too_long"] == 1
  assert "1 of 2 prompts do not fit the model's 2048 positions" in err


def test_generate_prints_completions_and_hf_export_gives_the_same_text(run_dir, tmp_path,
                                                                      capsys):
  prompts = tmp_path / "p.jsonl"
  prompts.write_text(json.dumps({"prompt": "import os"}) + "\n" + json.dumps("class A:") + "\n")
  argv = ["--prompt=def fib(n):", f"--prompts_file={prompts}", "--max_new_tokens=12",
          "--json"]
  code, out, err = _cli(generate.run, [f"--workdir={run_dir}", *argv], capsys)
  assert code == 0, err
  rows = [json.loads(l) for l in out.splitlines()]
  assert [r["prompt"] for r in rows] == ["def fib(n):", "import os", "class A:"]
  assert all(r["tokens"] <= 12 and r["finish"] in ("eos", "length") for r in rows)
  pytest.importorskip("transformers")
  hf_dir = tmp_path / "hf"
  proc = subprocess.run([sys.executable, "-m", "phijax.convert", f"--run={run_dir}",
                         "--to_hf", f"--out={hf_dir}"], capture_output=True, text=True,
                        env=ENV, timeout=300)
  assert proc.returncode == 0, proc.stderr
  code, out_hf, err = _cli(generate.run, [f"--hf_dir={hf_dir}", *argv], capsys)
  assert code == 0, err
  assert [json.loads(l) for l in out_hf.splitlines()] == rows
  os.remove(hf_dir / "tokenizer.model")  # now through transformers' AutoTokenizer
  code, out_auto, err = _cli(generate.run, [f"--hf_dir={hf_dir}", *argv], capsys)
  assert code == 0, err
  assert [json.loads(l)["completion"] for l in out_auto.splitlines()] == [
      r["completion"] for r in rows]


def test_bad_input_is_one_line(run_dir, tmp_path, capsys):
  def one_line_error(run, argv, expected):
    code, out, err = _cli(run, argv, capsys)
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], err

  one_line_error(evaluate.run, [f"--workdir={run_dir}", "--task=mmlu"],
                 "argument --task: invalid choice: 'mmlu'")
  one_line_error(evaluate.run, [f"--workdir={run_dir}", "--task=problems",
                                f"--problems={tmp_path}/nope.jsonl"], "does not exist")
  one_line_error(evaluate.run, [f"--workdir={run_dir}", "--task=problems"],
                 "--task=problems needs --problems=FILE.jsonl")
  no_tok = tmp_path / "no_tokenizer"
  shutil.copytree(run_dir, no_tok)
  os.remove(no_tok / "tokenizer.model")
  one_line_error(generate.run, [f"--workdir={no_tok}", "--prompt=x"],
                 "has no tokenizer.model: without its tokenizer")
  one_line_error(generate.run, [f"--workdir={run_dir}", "--prompt=" + "word " * 2100],
                 "the model takes 2048 positions")
  one_line_error(generate.run, [f"--workdir={run_dir}", "--prompt=x", "--n=3"],
                 "greedy completions would all be the same")
