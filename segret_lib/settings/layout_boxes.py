"""Layout boxes as the user writes them (A-STAR paper, section 5): parsing and validation, the infotext and
UI textbox forms (no torch). A layout is one box per concept, (x0, y0, x1, y1) as fractions of the image width
and height, origin top left."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Box = tuple[float, float, float, float]
Layout = tuple[tuple[str, Box], ...]

DIGITS = 4  # boxes are kept at 1e-4 of the image: the infotext writes them exactly, paste restores them exactly


class LayoutError(ValueError):
    """A malformed layout; params turns it into a ParamError (the message names the bad box)."""


def parse_layout(value: Any) -> Layout:
    """A layout from a dict {"cat": [x0, y0, x1, y1]}, its JSON text, the infotext text
    ("cat: 0 0.2 0.5 0.9; dog: 0.5 0 1 1"), a sequence of (name, box) pairs, or None/"" (no boxes).

    Raises LayoutError naming the bad box. Names are whitespace-collapsed; boxes are rounded to DIGITS."""
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        if not text or text in ("{}", "[]"):
            return ()
        if text[0] in "{[":
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise LayoutError(f"layout is not valid JSON ({e.msg} at character {e.pos})") from None
        else:
            value = _parse_text(text)
    if isinstance(value, Mapping):
        items: Iterable[Any] = value.items()
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise LayoutError(f"layout must be a dict of boxes like {{\"cat\": [0, 0.2, 0.5, 0.9]}}, got {value!r}")
    out: list[tuple[str, Box]] = []
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise LayoutError(f"layout entry {item!r} is not a (concept, box) pair")
        name = " ".join(str(item[0]).split())
        if not name:
            raise LayoutError("a layout box has an empty concept name")
        if name.lower() in seen:
            raise LayoutError(f"layout box '{name}' is given twice")
        seen.add(name.lower())
        out.append((name, _parse_box(name, item[1])))
    return tuple(out)


def _parse_text(text: str) -> list[tuple[str, str]]:
    pairs = []
    for entry in text.split(";"):
        if not entry.strip():
            continue
        name, sep, numbers = entry.rpartition(":")
        if not sep:
            raise LayoutError(f"layout entry '{entry.strip()}' must read 'concept: x0 y0 x1 y1'")
        pairs.append((name, numbers))
    return pairs


def _parse_box(name: str, raw: Any) -> Box:
    if isinstance(raw, str):
        raw = raw.replace(",", " ").split()
    if isinstance(raw, Mapping):
        try:
            raw = [raw[k] for k in ("x0", "y0", "x1", "y1")]
        except KeyError:
            raise LayoutError(f"layout box '{name}' needs x0, y0, x1, y1, got {dict(raw)!r}") from None
    try:
        nums = [float(v) for v in raw]
    except (TypeError, ValueError):
        raise LayoutError(f"layout box '{name}' must be 4 numbers x0, y0, x1, y1, got {raw!r}") from None
    if len(nums) != 4:
        raise LayoutError(f"layout box '{name}' must be 4 numbers x0, y0, x1, y1, got {len(nums)}")
    if not all(math.isfinite(v) for v in nums):
        raise LayoutError(f"layout box '{name}' has a non-finite number: {nums}")
    x0, y0, x1, y1 = (round(v, DIGITS) for v in nums)
    if not (0.0 <= x0 <= 1.0 and 0.0 <= y0 <= 1.0 and 0.0 <= x1 <= 1.0 and 0.0 <= y1 <= 1.0):
        raise LayoutError(f"layout box '{name}' must lie inside the image (fractions 0..1), got "
                          f"{_fmt_box((x0, y0, x1, y1))}")
    if not (x0 < x1 and y0 < y1):
        raise LayoutError(f"layout box '{name}' needs x0 < x1 and y0 < y1, got {_fmt_box((x0, y0, x1, y1))}")
    return (x0, y0, x1, y1)


def check_names(layout: Layout, concepts: Sequence[str]) -> None:
    """Every box must name one of the concepts (case-insensitive)."""
    known = {c.lower() for c in concepts}
    for name, _ in layout:
        if name.lower() not in known:
            listed = ", ".join(concepts) or "none"
            raise LayoutError(f"layout box '{name}' names no concept (concepts: {listed})")


def _fmt_box(box: Box) -> str:
    return " ".join(f"{v:g}" for v in box)


def layout_text(layout: Layout) -> str:
    """The infotext form: 'cat: 0 0.2 0.5 0.9; dog: 0.5 0 1 1' (parse_layout reads it back)."""
    return "; ".join(f"{name}: {_fmt_box(box)}" for name, box in layout)


def layout_json(layout: Layout) -> str:
    """The UI textbox form: {"cat": [0, 0.2, 0.5, 0.9]} (what javascript/segret_layout.js reads and writes)."""
    return json.dumps({name: list(box) for name, box in layout}) if layout else ""


def box_of(layout: Layout, word: str) -> Box | None:
    for name, box in layout:
        if name.lower() == word.lower():
            return box
    return None
