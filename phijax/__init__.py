"""phijax: Phi-style small language models in JAX/Flax.

Submodules are imported lazily by the user (``phijax.model``, ``phijax.convert``, ...)
so that ``import phijax`` stays cheap.
"""

__version__ = "0.1.0"
