"""The documentation: the README stays short and gives the commands CI and a newcomer run, every relative link
and picture resolves, and the extensions-index entry has the index's required keys."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
INDEX_ENTRY = ROOT / "docs" / "index-entry.json"
README_LIMIT = 12_500  # bytes
# the tags at the top of the AUTOMATIC1111 extensions index (its extension_template.json)
INDEX_TAGS = {"script", "localization", "tab", "dropdown", "ads", "training", "models", "UI related", "prompting",
              "editing", "manipulations", "online", "animation", "query", "science", "extras"}

_MD_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_LINK = re.compile(r"""<(?:img|a)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def doc_files() -> list[Path]:
    files = [README, *sorted((ROOT / "docs").glob("*.md"))]
    files += [p for p in (ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md") if p.is_file()]
    return files


def links(text: str) -> list[str]:
    """Markdown and HTML link / image targets, outside fenced code blocks."""
    text = _FENCE.sub("", text)
    return [*_MD_LINK.findall(text), *_HTML_LINK.findall(text)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:|^//", target, re.IGNORECASE)


def test_readme_is_short() -> None:
    size = README.stat().st_size
    assert size <= README_LIMIT, f"README.md is {size} bytes; keep it at most {README_LIMIT} (move detail to docs/)"


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_pictures_exist(path: Path) -> None:
    missing = []
    for target in links(path.read_text(encoding="utf-8")):
        if not relative(target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            missing.append(target)
        elif anchor and resolved.suffix == ".md" and anchor.lower() not in anchors(resolved):
            missing.append(f"{target} (no such heading)")
    assert not missing, f"{path.relative_to(ROOT)} links to missing files or headings: {missing}"


def test_readme_gives_the_try_it_and_test_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert ".venv/bin/python -m quality.try_it" in text
    assert ".venv/bin/python -m pytest -q" in text
    assert "bash tests/setup.sh" in text


def test_readme_links_the_method_notes_and_the_benchmark() -> None:
    targets = {t.partition("#")[0] for t in links(README.read_text(encoding="utf-8"))}
    assert "docs/method.md" in targets
    assert "quality/README.md" in targets


def test_the_readme_pictures_come_first() -> None:
    text = README.read_text(encoding="utf-8")
    pictures = [m.start() for m in re.finditer(r'<img src="[^"]+\.png"', text)]
    assert pictures and pictures[0] < text.find("## ")
    assert "shapes" in text[:text.find("## ")]  # labelled as the shapes test model's


def test_index_entry_has_the_required_keys() -> None:
    entry = json.loads(INDEX_ENTRY.read_text(encoding="utf-8"))
    for key in ("name", "url", "description", "tags"):
        assert key in entry, f"missing key {key!r}"
    for key in ("name", "url", "description"):
        assert isinstance(entry[key], str) and entry[key].strip(), f"{key!r} must be a non-empty string"
    assert re.match(r"^https://\S+$", entry["url"])
    tags = entry["tags"]
    assert isinstance(tags, list) and tags and all(isinstance(t, str) and t for t in tags)
    assert set(tags) <= INDEX_TAGS, f"tags not in the index's tag list: {set(tags) - INDEX_TAGS}"
