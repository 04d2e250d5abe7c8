"""A rubric that labels Python files as "textbook quality" or not, without a model.

phi-1 (Gunasekar et al. 2023, section 2.1) had GPT-4 label a sample of The Stack for
"educational value for a student whose goal is to learn basic coding concepts" and a
classifier generalise those labels. Offline there is no strong annotator, so this rubric
stands in for it: it checks what such a reader values and can be read off the text.
One point for each of:

- ``module_doc``: a module docstring saying what the file is for;
- ``documented``: at least half of the functions and classes have a docstring;
- ``examples``: usage shown (doctest ``>>>`` lines);
- ``comments``: comment lines at least 5% of the code lines (reasons stated);
- ``short_functions``: functions 40 lines long or less on average (readable units);
- ``not_data``: under 2% of lines longer than 100 characters and under 30% of the lines
  literal data (numbers, strings, tables): code to learn from, not a dump.

A file scoring at least ``GOOD`` (4 of 6) is labelled 1. Text that is not Python (no
``ast``) scores on comments and line shape alone, so it is labelled 0 unless it is
small and tidy; that is the rubric's view of what the code model should learn from.
"""

from __future__ import annotations

import ast
import re

POINTS = ("module_doc", "documented", "examples", "comments", "short_functions",
          "not_data")
GOOD = 4
_DATA_LINE = re.compile(r"""^\s*[-+0-9.eExXa-fA-F_,\s'"()\[\]{}:]*,?\s*$""")


def features(text: str) -> dict:
  """The rubric's measurements of ``text`` (a Python file's source)."""
  lines = text.splitlines()
  code = [ln for ln in lines if ln.strip()]
  comments = sum(ln.lstrip().startswith("#") for ln in code)
  long_lines = sum(len(ln) > 100 for ln in lines)
  data_lines = sum(bool(_DATA_LINE.match(ln)) and len(ln.strip()) > 3 for ln in code)
  out = dict(lines=len(lines), code_lines=len(code), comment_share=comments / max(
      1, len(code) - comments), long_share=long_lines / max(1, len(lines)),
             data_share=data_lines / max(1, len(code)),
             doctests=text.count(">>> "), parsed=False, module_doc=False,
             defs=0, documented_defs=0, mean_def_lines=0.0)
  try:
    tree = ast.parse(text)
  except (SyntaxError, ValueError, RecursionError, MemoryError):
    return out
  defs = [n for n in ast.walk(tree)
          if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
  funcs = [n for n in defs if not isinstance(n, ast.ClassDef)]
  sizes = [n.end_lineno - n.lineno + 1 for n in funcs if n.end_lineno]
  out.update(parsed=True, module_doc=bool(ast.get_docstring(tree)), defs=len(defs),
             documented_defs=sum(bool(ast.get_docstring(n)) for n in defs),
             mean_def_lines=sum(sizes) / len(sizes) if sizes else 0.0)
  return out


def points(f: dict) -> dict:
  """``{point: bool}`` for the features ``features`` measured."""
  return dict(
      module_doc=f["module_doc"],
      documented=f["defs"] > 0 and f["documented_defs"] >= 0.5 * f["defs"],
      examples=f["doctests"] > 0,
      comments=f["comment_share"] >= 0.05,
      short_functions=f["parsed"] and f["mean_def_lines"] <= 40,
      not_data=f["long_share"] < 0.02 and f["data_share"] < 0.3,
  )


def score(text: str) -> int:
  """The rubric's points, 0 to 6."""
  return sum(points(features(text)).values())


def label(text: str) -> int:
  """1 if ``text`` scores at least ``GOOD`` points, else 0."""
  return int(score(text) >= GOOD)
