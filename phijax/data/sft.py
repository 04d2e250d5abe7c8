"""Chat / instruction data (LIMA-style): conversations rendered with end-of-turn.

A conversation is a list of ``(role, text)`` turns. It is rendered as
``text_1 <eot> text_2 <eot> ...``: each turn's tokens followed by the end-of-turn
token, which is distinct from ``<|endoftext|>`` (LIMA). Loss is taken only on the
assistant's tokens and on the end-of-turn that closes each assistant turn, so the
model learns to answer and to stop, never to write the prompt.
"""

from __future__ import annotations

import numpy as np

from phijax.data.errors import DataError

ROLES = ("system", "user", "assistant")


def parse_conversation(record, where: str) -> list[tuple[str, str]]:
  """Turns of one JSON record: ``{"prompt", "response"}`` or ``{"messages":
  [{"role", "content"}, ...]}``. ``where`` (file:line) goes into error messages."""
  if not isinstance(record, dict):
    raise DataError(f"{where}: an SFT record must be a JSON object, got "
                    f"{type(record).__name__}")
  if "messages" in record:
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
      raise DataError(f"{where}: 'messages' must be a non-empty list of "
                      "{'role', 'content'} objects")
    turns = []
    for k, m in enumerate(messages):
      if (not isinstance(m, dict) or m.get("role") not in ROLES
          or not isinstance(m.get("content"), str)):
        raise DataError(f"{where}: message {k} must be {{'role': one of {ROLES}, "
                        f"'content': str}}, got {m!r:.120}")
      turns.append((m["role"], m["content"]))
  elif "prompt" in record and "response" in record:
    if not isinstance(record["prompt"], str) or not isinstance(record["response"], str):
      raise DataError(f"{where}: 'prompt' and 'response' must be strings")
    turns = [("user", record["prompt"]), ("assistant", record["response"])]
  else:
    raise DataError(f"{where}: an SFT record needs 'prompt' and 'response' fields or a "
                    f"'messages' list; it has keys {sorted(record)}")
  if not any(role == "assistant" for role, _ in turns):
    raise DataError(f"{where}: the conversation has no assistant turn to learn from")
  return turns


def render(turns, tok, max_tokens: int):
  """Token ids ``[n]`` and a bool ``[n]`` marking assistant tokens (with their eot).

  Returns ``(ids, is_response, truncated_from)``; ``truncated_from`` is the full
  length when the conversation was cut to ``max_tokens``, else 0.
  """
  if tok.eot_id is None:
    raise DataError(f"tokenizer {tok.name!r} has no end-of-turn token "
                    f"('<|endofturn|>'), which SFT data needs; use a tokenizer "
                    "trained by phijax (config.data.tokenizer.path='')")
  ids, is_response = [], []
  for role, text in turns:
    turn = tok.encode(text) + [tok.eot_id]
    ids.extend(turn)
    is_response.extend([role == "assistant"] * len(turn))
  truncated_from = len(ids) if len(ids) > max_tokens else 0
  ids_n = np.asarray(ids[:max_tokens], np.int32)
  return ids_n, np.asarray(is_response[:max_tokens], bool), truncated_from
