"""The suite's speed: XLA compiles with few optimizations, and the longest files go first.

Compiling, not running, is most of this suite's time: its models are tiny, and most
tests compile a fresh train step (in-process, or in the training processes they
start). ``JAX_DISABLE_MOST_OPTIMIZATIONS`` (JAX's own switch, which its test suite
uses) turns off XLA's LLVM optimization passes: compiles take about half as long and
the tiny programs run about as fast. It only changes how fast the code XLA emits is,
not what it computes (no fast-math), and it is set in the environment, so the
training processes the tests start inherit it. Set it to 0 to test with full
optimization. Each pytest process also has a fresh persistent compilation cache of its
own (the training runs tests start keep their config's): a program one test compiled,
the next test that builds the same one reads.

Test order for CI's ``pytest tests -n 2 --dist loadfile``: the longest files first.

xdist hands out whole files; by default it sorts them by test count, which puts the
files with a few long end-to-end tests (subprocess training runs) last, so one worker
can still be in a 2-minute file while the other has nothing left. Longest first, the
many short files at the end fill in and both workers finish close together. Only the
order changes: every test still runs, and each file's tests in their own order.
"""

import os
import shutil
import tempfile

os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")  # before JAX is imported
# Each pytest process (an xdist worker) has its own, removed when it ends.
_XLA_CACHE = tempfile.mkdtemp(prefix="phijax-tests-xla-")

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", _XLA_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

# Slowest first (measured on 2 cores); files not listed follow in collection order.
LONGEST_FIRST = [
    "test_multihost.py", "test_sweep.py", "test_notebooks.py", "test_attention_mesh.py",
    "test_curriculum_train.py",  # one 30-50 s test: last in the queue, it ran alone
    "test_generate.py", "test_kernels.py", "test_resume.py", "test_launch.py",
    "test_evaluate.py",
    "test_export.py", "test_dpo.py", "test_wandb.py", "test_train_cli.py",
    "test_code_eval.py", "test_model_hf.py", "test_own_corpus.py", "test_logs.py",
    "test_token_selection.py", "test_execute.py",
    "test_sharpness.py", "test_plan.py", "test_mup.py", "test_galore.py",
    "test_freeze.py",
]
_RANK = {name: i for i, name in enumerate(LONGEST_FIRST)}


def pytest_configure(config):
  # The scheduler's own reordering (by test count) would undo the order below.
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
  # A stable sort by file: each file's tests stay together and in their order.
  items.sort(key=lambda item: _RANK.get(os.path.basename(str(item.path)), len(_RANK)))


def pytest_unconfigure(config):
  shutil.rmtree(_XLA_CACHE, ignore_errors=True)
