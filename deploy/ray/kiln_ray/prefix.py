"""The prompt text a request starts with, and the keys the router matches on."""

from __future__ import annotations

from typing import Any, Iterator

# Prefix lengths (characters) the router remembers: 64, 128, ... up to MAX.
# Shorter shared prefixes (a greeting, a chat template's first tokens) are too
# small for a KV-cache hit to matter and would only skew load.
MIN_PREFIX_CHARS = 64
MAX_PREFIX_CHARS = 8192


def prompt_text(body: Any) -> str:
    """The text a completion or chat request's prompt starts with ('' if none).

    Completions: `prompt` (a string, the first of a list, or token ids).
    Chat: each message's role and text content, in order, so that two chats with
    the same system prompt and history share a prefix.
    """
    if not isinstance(body, dict):
        return ""
    if "messages" in body:
        return _chat_text(body["messages"])
    return _prompt(body.get("prompt"))


def prefix_keys(text: str, max_chars: int = MAX_PREFIX_CHARS) -> Iterator[int]:
    """Hashes of the text's prefixes of 64, 128, 256, ... characters, longest last.

    The text's full length is included when it lies between two of those
    lengths, so a prompt repeated verbatim always matches itself.
    """
    length = MIN_PREFIX_CHARS
    limit = min(len(text), max_chars)
    while length <= limit:
        yield hash(text[:length])
        length *= 2
    if limit >= MIN_PREFIX_CHARS and limit != length // 2:
        yield hash(text[:limit])


def _prompt(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt:
        first = prompt[0]
        if isinstance(first, str):
            return first
        if isinstance(first, int):
            return " ".join(str(t) for t in prompt)
        if isinstance(first, list):
            return " ".join(str(t) for t in first)
    return ""


def _chat_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    parts: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(
                str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
            )
        parts.append(f"<{message.get('role', '')}>{content if isinstance(content, str) else ''}")
    return "\n".join(parts)
