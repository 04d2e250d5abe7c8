"""Random-weight Hugging Face models for parity tests (no hub access)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def hf_model(arch, **kw):
  """A float32 eager-attention PhiForCausalLM / Phi3ForCausalLM with random weights.

  Every parameter (norm scales and biases included) is redrawn so that a swapped or
  dropped tensor cannot go unnoticed.
  """
  torch.manual_seed(kw.pop("seed", 0))
  if arch == "phi":
    cfg = transformers.PhiConfig(**kw)
    model = transformers.PhiForCausalLM(cfg)
  else:
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
      kw.setdefault(key, None)
    cfg = transformers.Phi3Config(**kw)
    model = transformers.Phi3ForCausalLM(cfg)
  model.config._attn_implementation = "eager"
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight") or "layernorm.weight" in name:
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      else:
        p.copy_(0.15 * torch.randn_like(p))
  return model.eval()


def state_dict_numpy(model):
  return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


def hf_logits(model, tokens, position_ids=None):
  with torch.no_grad():
    kw = {}
    if position_ids is not None:
      kw["position_ids"] = torch.tensor(np.asarray(position_ids))
    return model(torch.tensor(np.asarray(tokens)), **kw).logits.float().numpy()
