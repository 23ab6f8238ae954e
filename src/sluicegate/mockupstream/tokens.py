"""Deterministic token rules of the mock upstream; tests import them to compute expected usage.

Rules (``words(t) = len(t.split())``):

* Text of a message: a ``str`` content, or the "text" fields of its parts joined by a space
  (OpenAI ``{"type": "text"}`` parts, Anthropic text blocks, and the text inside Anthropic
  ``tool_result`` blocks). Each image part (OpenAI ``image_url``/``input_image``, Anthropic
  ``image``) adds ``IMAGE_TOKENS`` (85). Tool calls add ``words`` of their arguments' JSON
  string: OpenAI ``tool_calls[].function.arguments`` as sent, Anthropic ``tool_use.input`` as
  ``json.dumps(input)`` (default separators, so ``{"mock": true}`` is 2 words).
* Message tokens = 4 + words(text) + images + tool-call words.
* Chat ``prompt_tokens`` = 3 + sum of message tokens. Anthropic ``input_tokens`` = the same, with
  the ``system`` prompt (str or text blocks) counted as one extra message when present.
* Completion length per choice = ``min(max_tokens, K)`` where K is the ``x-mock-completion-tokens``
  header or ``DEFAULT_COMPLETION_TOKENS`` (16); ``max_tokens`` falls back to
  ``max_completion_tokens``. It is truncated ("length" / "max_tokens") when ``max_tokens < K``.
  The reply is ``reply_text(n)``: "mock reply word3 word4 ... word<n>". With ``n`` choices,
  ``completion_tokens`` = n * per-choice. Tool-call and JSON-mode replies bill the same length.
* Legacy completions: 3 + words(prompt) per prompt (a token-id list counts its length).
* Embeddings: words per input string, or the length of a token-id list.
* Cached tokens (``x-mock-cached-tokens: C``): ``min(C, prompt_tokens)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

DEFAULT_COMPLETION_TOKENS = 16
IMAGE_TOKENS = 85
PROMPT_BASE_TOKENS = 3
MESSAGE_OVERHEAD_TOKENS = 4
TOOL_CALL_ARGUMENTS = '{"mock": true}'

_IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})


def words(text: str) -> int:
    """Number of whitespace-separated words in ``text``."""
    return len(text.split())


def _walk_content(content: Any, texts: list[str]) -> int:
    """Collect the text of ``content`` into ``texts``; return the extra (non-text) tokens."""
    if content is None:
        return 0
    if isinstance(content, str):
        texts.append(content)
        return 0
    extra = 0
    if isinstance(content, Sequence):
        for part in content:
            if isinstance(part, str):
                texts.append(part)
                continue
            if not isinstance(part, Mapping):
                continue
            kind = part.get("type")
            if kind in _IMAGE_PART_TYPES:
                extra += IMAGE_TOKENS
            elif kind == "tool_use":
                extra += words(json.dumps(part.get("input", {})))
            elif kind == "tool_result":
                extra += _walk_content(part.get("content"), texts)
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
    return extra


def content_text(content: Any) -> str:
    """Text of a message content: the string itself or its text parts joined by a space."""
    texts: list[str] = []
    _walk_content(content, texts)
    return " ".join(texts)


def message_text(message: Mapping[str, Any]) -> str:
    """Text of one chat message (OpenAI or Anthropic shape)."""
    return content_text(message.get("content"))


def message_tokens(message: Mapping[str, Any]) -> int:
    """Tokens of one message: 4 + words(text) + 85 per image + words of tool-call arguments."""
    content = message.get("content")
    if type(content) is str and not message.get("tool_calls"):  # the hot path of benchmarks
        return MESSAGE_OVERHEAD_TOKENS + len(content.split())
    texts: list[str] = []
    extra = _walk_content(message.get("content"), texts)
    calls = message.get("tool_calls")
    # Whatever a client sent is counted, never a crash: only the shapes OpenAI defines add words.
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            arguments = function.get("arguments") or ""
            extra += words(arguments if isinstance(arguments, str) else json.dumps(arguments))
    return MESSAGE_OVERHEAD_TOKENS + words(" ".join(texts)) + extra


def chat_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """OpenAI chat ``prompt_tokens``: 3 + sum of message tokens."""
    return PROMPT_BASE_TOKENS + sum(message_tokens(m) for m in messages if isinstance(m, Mapping))


def anthropic_input_tokens(messages: Sequence[Mapping[str, Any]], system: Any = None) -> int:
    """Anthropic ``input_tokens`` before caching: chat rule plus the system prompt as a message."""
    total = chat_prompt_tokens(messages)
    if system:
        total += message_tokens({"content": system})
    return total


def _target_length(override: int | None) -> int:
    return DEFAULT_COMPLETION_TOKENS if override is None else max(0, override)


def completion_length(max_tokens: int | None = None, override: int | None = None) -> int:
    """Per-choice completion tokens: min(max_tokens, override or 16)."""
    target = _target_length(override)
    return target if max_tokens is None else max(0, min(max_tokens, target))


def is_truncated(max_tokens: int | None = None, override: int | None = None) -> bool:
    """True when ``max_tokens`` cut the reply short (finish_reason "length")."""
    return max_tokens is not None and max_tokens < _target_length(override)


@lru_cache(maxsize=256)
def reply_text(count: int) -> str:
    """The deterministic assistant reply of ``count`` words: "mock reply word3 ..."."""
    head = ["mock", "reply"][:count]
    return " ".join(head + [f"word{i}" for i in range(3, count + 1)])


def json_reply_text(count: int) -> str:
    """JSON-mode reply: a valid JSON object string that still reports the billed length."""
    return f'{{"mock": true, "words": {count}}}'


def legacy_prompt_tokens(prompt: str | Sequence[int]) -> int:
    """Legacy completions prompt tokens for one prompt: 3 + words (or token-id count)."""
    if isinstance(prompt, str):
        return PROMPT_BASE_TOKENS + words(prompt)
    return PROMPT_BASE_TOKENS + len(prompt)


def embedding_input_tokens(item: str | Sequence[int]) -> int:
    """Embedding tokens of one input: words of a string, or the length of a token-id list."""
    return words(item) if isinstance(item, str) else len(item)


def cached_tokens(requested: int | None, prompt_tokens: int) -> int:
    """Reported cached prompt tokens: min(requested, prompt_tokens), 0 when not requested."""
    return 0 if requested is None else max(0, min(requested, prompt_tokens))


def chat_usage(
    prompt_tokens: int, per_choice: int, n: int = 1, cached: int | None = None
) -> dict[str, Any]:
    """The OpenAI chat ``usage`` object the mock reports (also handy as a test expectation)."""
    completion = per_choice * n
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": cached_tokens(cached, prompt_tokens)},
    }
