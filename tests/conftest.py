"""The suite's speed: XLA compiles fast rather than well, and the longest files go first.

Compiling, not running, is most of this suite's time: its models are tiny, and most
tests compile a fresh train step (in-process, or in the training processes they
start). ``JAX_DISABLE_MOST_OPTIMIZATIONS`` (JAX's own switch, which its test suite
uses) turns off XLA's LLVM optimization passes: on 2 cores the 8-device train-step
tests took 67 s instead of 150 s, the whole suite about 12 minutes instead of 16
(with the XLA flags below, 7.5). It is set in the environment, so the training
processes the tests start inherit it.
Every test passes with it and without it (bit-identical resumes and the Hugging Face
parity tests included); set it to 0 to test the code as users compile it.

Test order for CI's ``pytest tests -n 2 --dist loadfile``: the longest files first.

xdist hands out whole files; by default it sorts them by test count, which puts the
files with a few long end-to-end tests (subprocess training runs) last, so one worker
can still be in a 2-minute file while the other has nothing left. Longest first, the
many short files at the end fill in and both workers finish close together. Only the
order changes: every test still runs, and each file's tests in their own order.
"""

import os

os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")  # before JAX is imported
# XLA's CPU compiler without its newer fusion emitters and without splitting codegen
# across threads (both cores are busy with the two workers): on 2 cores the HF-parity
# decoding tests compiled in 24-25 s instead of 40-42 s, the whole suite (cold caches) in
# 502 s instead of 645 with test_multihost's shorter runs. The suite passed with them and
# without. Tests that start JAX processes keep these flags (tests/devices.py).
SUITE_XLA_FLAGS = ["--xla_cpu_use_fusion_emitters=false",
                   "--xla_cpu_parallel_codegen_split_count=1"]
_given = os.environ.get("XLA_FLAGS", "").split()  # a flag set there wins over ours
os.environ["XLA_FLAGS"] = " ".join(
    [f for f in SUITE_XLA_FLAGS if f.split("=")[0] not in {g.split("=")[0] for g in _given}]
    + _given)

# Slowest first (measured on 2 cores); files not listed follow in collection order.
LONGEST_FIRST = [
    "test_multihost.py", "test_sweep.py", "test_notebooks.py", "test_attention_mesh.py",
    "test_curriculum_train.py",  # one 30-50 s test (unlisted, it came last and ran alone)
    "test_host_rows.py",  # 4 processes x 2 devices against 1 x 8: ~35 s
    "test_generate.py", "test_kernels.py", "test_resume.py", "test_launch.py",
    "test_evaluate.py", "test_rope_scaling.py", "test_extend_context.py", "test_time_budget.py",
    "test_curate_score.py", "test_lora.py", "test_qlora.py", "test_streaming.py", "test_synth.py",
    "test_export.py", "test_dpo.py", "test_wandb.py", "test_train_cli.py",
    "test_code_eval.py", "test_model_hf.py", "test_own_corpus.py", "test_logs.py",
    "test_token_selection.py", "test_execute.py",
    "test_sharpness.py", "test_plan.py", "test_mup.py", "test_galore.py",
    "test_freeze.py", "test_quality.py", "test_prepare.py",
]
_RANK = {name: i for i, name in enumerate(LONGEST_FIRST)}


def pytest_configure(config):
  # The scheduler's own reordering (by test count) would undo the order below.
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
  # A stable sort by file: each file's tests stay together and in their order.
  items.sort(key=lambda item: _RANK.get(os.path.basename(str(item.path)), len(_RANK)))

