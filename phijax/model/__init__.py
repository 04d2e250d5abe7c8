"""The model: what a checkpoint holds and how it turns tokens into logits.

    from phijax.model import ModelConfig, Transformer
    logits = Transformer(cfg).apply({"params": params}, tokens)

Modules: ``config`` (``ModelConfig``), ``transformer`` (phi / phi-3 blocks, the KV
cache layout), ``rope`` (with ``rope_scaling``: the context-extension types linear,
YaRN and LongRoPE), ``attention`` (the one door to every attention
implementation; kernels are ``phijax.kernels``), ``head_loss`` (the fused output head
and loss), ``sharding`` (the mesh and the logical-axis rules that lay parameters and
activations on it), ``decode`` (KV-cache generation; ``sampling`` picks the tokens,
``streaming`` keeps attention sinks plus a rolling window), ``params_io`` (phijax
parameter directories), ``lora`` (LoRA adapters on the block matrices; merging them).
Imports nothing from train, evals or sweeps.
"""

from phijax import lazy_exports

# Names are imported on first use (PEP 562): ``import phijax.model.config`` stays cheap.
_EXPORTS = {
    "ModelConfig": "config", "as_model_config": "config",
    "Transformer": "transformer", "Block": "transformer", "Attention": "transformer",
    "Mlp": "transformer", "CACHE_AXES": "transformer", "init_cache": "transformer",
    "init_params": "transformer", "abstract_params": "transformer",
    "param_axes": "transformer", "count_params": "transformer",
    "write_cache": "transformer", "random_position_offsets": "transformer",
    "residual_dropout_rates": "transformer",
}
_SUBMODULES = ("attention", "config", "decode", "head_loss", "lora", "params_io", "rope",
               "rope_scaling", "sampling", "sharding", "streaming", "transformer")
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, _SUBMODULES)
