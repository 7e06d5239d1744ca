"""Console and infotext text: messages that quote a user's value cut to a readable length."""

from __future__ import annotations

import re

QUOTED_LIMIT = 60
"""Longest quoted value kept whole; a longer one keeps its start and end around an ellipsis."""
MESSAGE_LIMIT = 300
"""Longest message; the rest is cut with an ellipsis."""
ELLIPSIS = "…"
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def _cut(text: str, limit: int) -> str:
    """`text` of at most `limit` characters: its start and end around an ellipsis when it is longer."""
    if len(text) <= limit:
        return text
    keep = max(limit - len(ELLIPSIS), 2)
    head = keep - keep // 3
    return f"{text[:head]}{ELLIPSIS}{text[len(text) - (keep - head):]}"


def shorten(message: str, quoted: int = QUOTED_LIMIT, limit: int = MESSAGE_LIMIT) -> str:
    """Cut every quoted value ('...' or "...", as repr writes them) longer than `quoted` characters, then the
    whole message to `limit` characters; the words around the values (which setting, why) stay."""

    def cut_quoted(m: re.Match[str]) -> str:
        q = m.group(0)
        return q if len(q) <= quoted else q[0] + _cut(q[1:-1], quoted - 2) + q[-1]

    text = _QUOTED.sub(cut_quoted, message)
    return text if len(text) <= limit else text[:limit - len(ELLIPSIS)] + ELLIPSIS
