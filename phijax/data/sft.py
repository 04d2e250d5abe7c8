"""Chat / instruction data (LIMA-style): conversations rendered with a chat template.

A conversation is a list of ``(role, text)`` turns, rendered by one of ``TEMPLATES``:

- ``plain``: ``text_1 <eot> text_2 <eot> ...``: each turn's tokens followed by the
  end-of-turn token, which is distinct from ``<|endoftext|>`` (LIMA).
- ``phi3``: phi-3 / phi-4's chat format, ``<|user|>\n{text}<|end|>\n<|assistant|>\n
  {text}<|end|>\n`` (``<|system|>`` likewise), with ``<|user|>``, ``<|assistant|>``,
  ``<|system|>`` and ``<|end|>`` as single special tokens.
- ``phi15``: the plain QA format of the phi-1.5 / phi-2 model cards, ``Instruct:
  {prompt}\nOutput: {response}<eot>\n`` (a system turn is its text and a newline).

Loss is taken only on the assistant's tokens and on the end-of-turn that closes each
assistant turn, so the model learns to answer and to stop, never to write the prompt
(or the template's role markers). Tokenizers trained by phijax reserve every special
piece these templates use; a tokenizer without them gets a clear error. With a
Hugging Face tokenizer (phi-3's own), render the same text with its
``apply_chat_template`` and mask with ``return_assistant_tokens_mask``: the pieces
named here are the ones phi-3's tokenizer has.
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


TEMPLATES = ("plain", "phi3", "phi15")
PHI3_PIECES = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>",
               "end": "<|end|>"}
_PHI15_PREFIX = {"system": "", "user": "Instruct: ", "assistant": "Output: "}


def check_template(template: str, where: str = "") -> None:
  if template not in TEMPLATES:
    raise DataError(f"{where}unknown chat template {template!r}; choose one of "
                    f"{', '.join(TEMPLATES)}")


def _special(tok, piece: str) -> int:
  i = tok.special_id(piece)
  if i is None:
    raise DataError(f"tokenizer {tok.name!r} has no {piece!r} token, which this chat "
                    "template needs; use a tokenizer trained by phijax "
                    "(config.data.tokenizer.path='' retrains one that reserves it)")
  return i


def _turn(role: str, text: str, tok, template: str) -> tuple[list, list, list]:
  """``(header, body, trailer)`` ids of one turn; loss falls on body (assistant only)."""
  if template == "phi3":
    return ([_special(tok, PHI3_PIECES[role])], tok.encode("\n" + text),
            [_special(tok, PHI3_PIECES["end"])] + tok.encode("\n"))
  eot = _special(tok, "<|endofturn|>") if tok.eot_id is None else tok.eot_id
  if template == "phi15":
    if role == "system":
      return tok.encode(text + "\n"), [], []
    end = [eot] if role == "assistant" else []
    return tok.encode(_PHI15_PREFIX[role]), tok.encode(text) + end, tok.encode("\n")
  return [], tok.encode(text) + [eot], []


def prompt_ids(turns, tok, template: str = "plain") -> list[int]:
  """The ids a model continues to answer ``turns`` (whose last turn is not the
  assistant's): the rendered turns and the assistant's header."""
  check_template(template)
  ids = []
  for role, text in turns:
    header, body, trailer = _turn(role, text, tok, template)
    ids += header + body + trailer
  if template == "phi3":
    ids += [_special(tok, PHI3_PIECES["assistant"])] + tok.encode("\n")
  elif template == "phi15":
    ids += tok.encode(_PHI15_PREFIX["assistant"].rstrip(" "))
  return ids


def render(turns, tok, max_tokens: int, template: str = "plain"):
  """Token ids ``[n]`` and a bool ``[n]`` marking assistant tokens (with their
  end-of-turn), rendered with ``template``.

  Returns ``(ids, is_response, truncated_from)``; ``truncated_from`` is the full
  length when the conversation was cut to ``max_tokens``, else 0.
  """
  check_template(template)
  if template != "phi3" and tok.eot_id is None:
    raise DataError(f"tokenizer {tok.name!r} has no end-of-turn token "
                    f"('<|endofturn|>'), which SFT data needs; use a tokenizer "
                    "trained by phijax (config.data.tokenizer.path='')")
  ids, is_response = [], []
  for role, text in turns:
    header, body, trailer = _turn(role, text, tok, template)
    learn = role == "assistant"
    if template == "phi3" and learn:  # <|end|> closes the answer: learned too
      body, trailer = body + trailer[:1], trailer[1:]
    ids += header + body + trailer
    is_response += [False] * len(header) + [learn] * len(body) + [False] * len(trailer)
  truncated_from = len(ids) if len(ids) > max_tokens else 0
  ids_n = np.asarray(ids[:max_tokens], np.int32)
  return ids_n, np.asarray(is_response[:max_tokens], bool), truncated_from
