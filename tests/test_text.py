"""segret_lib.settings.text.shorten: long quoted values and long messages cut, short ones untouched."""

from __future__ import annotations

from segret_lib.settings.text import ELLIPSIS, MESSAGE_LIMIT, QUOTED_LIMIT, shorten


def test_short_messages_are_unchanged() -> None:
    assert shorten("'zebra' is not in the prompt") == "'zebra' is not in the prompt"


def test_a_long_quoted_value_keeps_its_start_end_and_the_words_around() -> None:
    value = "a" * 2000 + "END"
    out = shorten(f"method must be one of 'astar', 'aae', got {value!r}")
    assert out.startswith("method must be one of 'astar', 'aae', got 'aaa")
    assert out.endswith("END'") and ELLIPSIS in out
    assert len(out) < 120 and len(out.split("got ")[1]) == QUOTED_LIMIT


def test_a_long_message_without_quotes_is_cut_at_the_limit() -> None:
    out = shorten("x " * 3000)
    assert len(out) == MESSAGE_LIMIT and out.endswith(ELLIPSIS)
