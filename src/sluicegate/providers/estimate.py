"""Token estimates for when an upstream reports no usage. Rough on purpose, and marked as such
on the usage event (`usage_estimated`); about four characters make a token in English text."""

from __future__ import annotations

from typing import Any

CHARS_PER_TOKEN = 4
# OpenAI's chat format adds a few tokens per message for roles and separators.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REQUEST = 3
# What one image part is billed at, at low detail, by OpenAI.
TOKENS_PER_IMAGE = 85


def tokens_for_chars(chars: int) -> int:
    return (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def _content_chars(content: Any) -> tuple[int, int]:
    """(characters of text, number of images) in a message's content."""
    if isinstance(content, str):
        return len(content), 0
    chars = images = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            text = part.get("text")
            if isinstance(text, str):
                chars += len(text)
            elif part.get("type") in ("image_url", "image", "input_image"):
                images += 1
    return chars, images


def chat_prompt_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return TOKENS_PER_REQUEST
    total = TOKENS_PER_REQUEST
    for message in messages:
        if not isinstance(message, dict):
            continue
        chars, images = _content_chars(message.get("content"))
        calls = message.get("tool_calls")
        # The body reached here unvalidated beyond `messages`: any JSON may stand in this field.
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                chars += len(str(call["function"].get("arguments", "")))
        total += TOKENS_PER_MESSAGE + tokens_for_chars(chars) + images * TOKENS_PER_IMAGE
    tools = body.get("tools")
    if isinstance(tools, list):
        total += tokens_for_chars(len(repr(tools)))
    return total


def text_input_tokens(value: Any) -> int:
    """Tokens of a completions `prompt` or an embeddings `input` (string, strings or token ids)."""
    if isinstance(value, str):
        return tokens_for_chars(len(value))
    if isinstance(value, list):
        if value and all(isinstance(item, int) for item in value):
            return len(value)
        return sum(text_input_tokens(item) for item in value)
    return 0
