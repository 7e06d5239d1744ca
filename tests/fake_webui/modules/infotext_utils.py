"""Infotext quoting and parsing as the WebUI does it."""

import json
import re

re_param = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def quote(text):
    if "," not in str(text) and "\n" not in str(text) and ":" not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text):
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def parse_generation_parameters(x: str) -> dict:
    res = {}
    lines = x.strip().split("\n")
    res["Prompt"] = lines[0]
    for k, v in re_param.findall(lines[-1]):
        res[k] = unquote(v.strip())
    return res


def apply_infotext(params: dict, fields):
    """What pasting does: for each (component, key or callable), the value to set (None = leave as is)."""
    out = []
    for component, key in fields:
        v = key(params) if callable(key) else params.get(key)
        if v is not None:
            out.append((component, v))
    return out
