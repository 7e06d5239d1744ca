"""The settings table's machinery: a `Setting` row says everything about one setting (type, default, bounds or
choices, the method's default, UI label, tooltip and control, infotext key, positional index, X/Y/Z axis), and a
`SettingsTable` derives from its rows the params dataclass (coercion, validation), the infotext written and read,
what paste restores, the positional list, the API dict's keys and the X/Y/Z axes. No gradio, no host.

The rows themselves are in settings/params.py (SETTINGS); adding a setting is adding a row there.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

INFOTEXT_PREFIX = "A-STAR"
OUTPUT_KEYS = ("warnings", "result")  # infotext keys the life cycle writes (hosts/lifecycle.py): no setting's


_UNSET: Any = type("Unset", (), {"__repr__": lambda self: "UNSET"})()  # a Control's value not given


class ParamError(ValueError):
    """A setting is out of range or malformed; the message names the setting and the allowed range."""


TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def read_switch(value: Any, true_words: tuple[str, ...] = TRUE_WORDS,
                false_words: tuple[str, ...] = FALSE_WORDS) -> bool:
    """A yes/no setting given as a bool or a word (case and spaces ignored); ValueError for anything else."""
    low = str(value).strip().lower()
    if low in true_words:
        return True
    if low in false_words:
        return False
    raise ValueError(value)


def fmt(x: float) -> str:
    """A number as the infotext writes it (shortest form: 1, 0.5, 12.5)."""
    return f"{x:g}"


def infotext_key(name: str) -> str:
    """'step size' -> 'A-STAR step size'."""
    return f"{INFOTEXT_PREFIX} {name}"


def concepts_in(info: Mapping[str, Any]) -> bool:
    """Whether an infotext was written with A-STAR on (every such infotext names its concepts)."""
    return infotext_key("concepts") in info


@dataclass(frozen=True)
class Control:
    """How the accordion shows a setting (described here, built with gradio in ui/accordion.py).

    kind: "checkbox", "slider", "radio", "textbox" (or "accordion": the enable switch); `choices` and `value`
    default to the row's; `group` is where a control not placed by the accordion's layout goes ("main",
    "advanced" or "layout")."""

    kind: str
    minimum: float = 0.0
    maximum: float = 1.0
    step: float = 1.0
    choices: tuple[str, ...] | None = None
    value: Any = _UNSET
    placeholder: str | None = None
    info: bool = False  # show the tooltip below the control (otherwise on hover only)
    txt2img_only: bool = False  # hidden in the img2img tab
    group: str = "advanced"


@dataclass(frozen=True)
class Axis:
    """An X/Y/Z plot axis: its label and value type; `field` is the override key (default the setting's name),
    `choices` the axis' dropdown (default the control's choices, for a radio)."""

    label: str
    type: type
    field: str | None = None
    choices: tuple[str, ...] | None = None


Reader = Callable[[Mapping[str, Any]], Mapping[str, Any]]


@dataclass(frozen=True)
class Setting:
    """One row of the settings table.

    `type` is the dataclass annotation ("bool", "int", "float", "str" or a tuple type) and picks the coercion
    of loose values (UI strings, JSON), unless `parse` is given. Floats must be finite; `bounds` is an
    inclusive [lo, hi] range, `choices` the allowed values. `by_method` is the default per method (the API dict
    fills what it does not give from the chosen method's; the UI switches it with the method). `normalize`
    (value, params) runs when the params are built, `check` (value, params) after the generic checks.

    Infotext: `infotext` is the key after "A-STAR "; by default the value is written when it differs from the
    (method's) default (`always=True`: every time), shown with `show`, read back as written, and paste sets the
    control to it (or to the default when an A-STAR infotext lacks it). `write`, `read` and `paste` replace
    these for the few settings whose infotext is special (see params.py). `position` is the index in the UI's
    positional list (old lists keep their meaning: a new setting takes the next index)."""

    name: str
    type: str
    default: Any
    bounds: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    by_method: Mapping[str, Any] | None = None
    parse: Callable[[Any], Any] | None = None
    normalize: Callable[[Any, Any], Any] | None = None
    check: Callable[[Any, Any], None] | None = None
    label: str = ""
    tip: str = ""
    control: Control | None = None
    position: int | None = None
    infotext: str | None = None
    always: bool = False
    show: Callable[[Any], str] | None = None
    write: Callable[[Any], Mapping[str, str]] | None = None
    read: Reader | None = None
    paste: str | Callable[[Mapping[str, Any]], Any] | None = None  # a str: an infotext key read as is
    paste_name: bool = True  # listed in paste_field_names (copied when sending to another tab)
    xyz: Axis | None = None

    # ---------------------------------------------------------------- coercion and checks
    def coerce(self, value: Any) -> Any:
        """A loose value (UI string, JSON) -> this setting's type, or ParamError naming the setting."""
        try:
            if self.parse is not None:
                return self.parse(value)
            if self.type == "bool":
                return read_switch(value) if isinstance(value, str) else bool(value)
            if self.type == "float":
                return float(value)
            if self.type == "int":
                as_float = float(value)
                if not math.isfinite(as_float) or as_float != int(as_float):
                    raise ValueError(value)
                return int(as_float)
            if self.type == "str":
                return str(value).strip().lower()
        except ParamError:
            raise
        except (TypeError, ValueError) as e:
            raise ParamError(f"{self.name}: cannot read {value!r} as {self.type}") from e
        return value

    def validate(self, value: Any, params: Any) -> None:
        """The row's own checks: finite, bounds, choices, then `check`."""
        if self.type == "float" and (not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise ParamError(f"{self.name} must be a finite number, got {value!r}")
        if self.bounds is not None:
            lo, hi = self.bounds
            if not lo <= value <= hi:
                raise ParamError(f"{self.name} must be in [{lo}, {hi}], got {value}")
        if self.choices is not None and value not in self.choices:
            raise ParamError(f"{self.name} must be one of {self.choices}, got {value!r}")
        if self.check is not None:
            self.check(value, params)

    # ---------------------------------------------------------------- infotext
    @property
    def key(self) -> str | None:
        return infotext_key(self.infotext) if self.infotext else None

    def default_for(self, method: str | None) -> Any:
        """The default under `method` (by_method where the row has it)."""
        if self.by_method is not None and method in self.by_method:
            return self.by_method[method]
        return self.default

    def infotext_entries(self, params: Any) -> Mapping[str, str]:
        """What this setting adds to the infotext."""
        if self.write is not None:
            return self.write(params)
        if self.key is None:
            return {}
        value = getattr(params, self.name)
        if not self.always and value == self.default_for(getattr(params, "method", None)):
            return {}
        return {self.key: self.show(value) if self.show else _show(value)}

    def infotext_values(self, info: Mapping[str, Any]) -> Mapping[str, Any]:
        """The values this setting reads back from an infotext."""
        if self.read is not None:
            return self.read(info)
        if self.key is not None and self.key in info:
            return {self.name: info[self.key]}
        return {}

    def paste_source(self, method_of: Callable[[Mapping[str, Any]], str | None] = lambda info: None
                     ) -> str | Callable[[Mapping[str, Any]], Any] | None:
        """What the WebUI's paste reads for this control: an infotext key, a function of the infotext, or None.
        By default an A-STAR infotext without the key sets the default of the infotext's method (`method_of`)."""
        if self.paste is not None:
            return self.paste
        if self.key is None:
            return None
        if self.always:
            return self.key
        key = self.key

        def source(info: Mapping[str, Any]) -> Any:
            if key in info:
                return info[key]
            if not concepts_in(info):
                return None
            method = method_of(info)
            return self.by_method[method] if self.by_method and method in self.by_method else self.ui_value()

        return source

    def ui_value(self) -> Any:
        """The control's starting value."""
        if self.control is not None and self.control.value is not _UNSET:
            return self.control.value
        return self.default

    def ui_choices(self) -> tuple[str, ...] | None:
        if self.control is not None and self.control.choices is not None:
            return self.control.choices
        return self.choices


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return fmt(value)
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


class ParamsBase:
    """Methods of the params dataclass that a SettingsTable builds (the fields come from its rows)."""

    TABLE: SettingsTable

    def __post_init__(self) -> None:
        for row in self.TABLE.rows:
            if row.normalize is not None:
                object.__setattr__(self, row.name, row.normalize(getattr(self, row.name), self))
        self.validate()

    def validate(self) -> None:
        """Raise ParamError naming the first bad setting."""
        for row in self.TABLE.rows:
            row.validate(getattr(self, row.name), self)
        if self.TABLE.check is not None:
            self.TABLE.check(self)

    @classmethod
    def create(cls, **values: Any) -> Any:
        """Build from loosely typed values (UI strings, JSON numbers), coercing each to its setting's type.

        Method-dependent settings not given take the chosen method's defaults (Setting.by_method)."""
        table = cls.TABLE
        unknown = sorted(set(values) - set(table.names))
        if unknown:
            raise ParamError(f"unknown {INFOTEXT_PREFIX} setting(s): {', '.join(unknown)}; "
                             f"known: {', '.join(table.names)}")
        coerced = {k: table.row(k).coerce(v) for k, v in values.items()}
        for name, default in table.method_defaults(coerced.get(table.method_name)).items():
            coerced.setdefault(name, default)
        return cls(**coerced)

    def replace(self, **changes: Any) -> Any:
        return self.create(**{**dataclasses.asdict(self), **changes})

    def to_infotext(self) -> dict[str, str]:
        """Infotext entries (written to p.extra_generation_params)."""
        out: dict[str, str] = {}
        for row in self.TABLE.infotext_rows:
            out.update(row.infotext_entries(self))
        return out

    @classmethod
    def from_infotext(cls, info: Mapping[str, Any]) -> Any:
        """Inverse of to_infotext; absent keys keep their (method's) defaults."""
        values: dict[str, Any] = {}
        for row in cls.TABLE.rows:
            values.update(row.infotext_values(info))
        return cls.create(**values)


class SettingsTable:
    """The rows, and what is derived from them. `infotext_order` names the rows written first (the order of the
    infotext of earlier versions); the others follow in table order. `check` runs after every row's checks.
    `method_name` is the row whose value picks the by_method defaults."""

    def __init__(self, rows: Iterable[Setting], *, infotext_order: Sequence[str] = (),
                 check: Callable[[Any], None] | None = None, method_name: str = "method",
                 class_name: str = "SegretParams", doc: str = "") -> None:
        self.rows: tuple[Setting, ...] = tuple(rows)
        self.names: tuple[str, ...] = tuple(r.name for r in self.rows)
        self._by_name = {r.name: r for r in self.rows}
        if len(self._by_name) != len(self.rows):
            raise ValueError(f"two settings with one name in {self.names}")
        self.check = check
        self.method_name = method_name
        order = [self._by_name[n] for n in infotext_order]
        self.infotext_rows: tuple[Setting, ...] = (*order, *(r for r in self.rows if r not in order))
        self.positional: tuple[str, ...] = self._positional()
        self._check_keys()
        self.params = self._params_class(class_name, doc)

    def row(self, name: str) -> Setting:
        return self._by_name[name]

    def _positional(self) -> tuple[str, ...]:
        placed = sorted((r.position, r.name) for r in self.rows if r.position is not None)
        if [p for p, _ in placed] != list(range(len(placed))):
            raise ValueError(f"positions must be 0..{len(placed) - 1}, one per setting, got {placed}")
        return tuple(name for _, name in placed)

    def _check_keys(self) -> None:
        keys = [r.infotext for r in self.rows if r.infotext]
        clash = sorted({k for k in keys if keys.count(k) > 1} | (set(keys) & set(OUTPUT_KEYS)))
        if clash:
            raise ValueError(f"infotext keys used twice or by the life cycle: {clash}")

    def _params_class(self, name: str, doc: str) -> type:
        spec = [(r.name, r.type, field(default=r.default)) for r in self.rows]
        cls = dataclasses.make_dataclass(name, spec, bases=(ParamsBase,), frozen=True,
                                         namespace={"TABLE": self, "__doc__": doc})
        cls.__module__ = __name__.rsplit(".", 1)[0] + ".params"  # where SETTINGS' class lives (pickle, repr)
        return cls

    # ---------------------------------------------------------------- derived structures
    def method_defaults(self, method: Any) -> dict[str, Any]:
        """{setting: default} of the settings whose default depends on the method, for `method`."""
        name = self.row(self.method_name).coerce(method if method is not None else self.row(self.method_name).default)
        return {r.name: r.by_method[name] for r in self.rows if r.by_method is not None}

    def method_of(self, info: Mapping[str, Any]) -> str | None:
        """The method an infotext was made with (None when it names an unknown one)."""
        row = self.row(self.method_name)
        try:
            return row.coerce(row.infotext_values(info).get(row.name, row.default))
        except ParamError:
            return None

    @property
    def api_keys(self) -> tuple[str, ...]:
        """The keys the HTTP API's dict takes (every setting, by name)."""
        return self.names

    def tips(self) -> dict[str, str]:
        return {r.name: r.tip for r in self.rows if r.tip}

    def paste_fields(self) -> list[tuple[str, str | Callable[[Mapping[str, Any]], Any]]]:
        """(setting, infotext key or function) for every control that paste restores, in table order."""
        out = []
        for r in self.rows:
            if r.position is not None and (src := r.paste_source(self.method_of)) is not None:
                out.append((r.name, src))
        return out

    def paste_field_names(self) -> list[str]:
        return [r.key for r in self.rows if r.key and r.position is not None and r.paste_name]

    def xyz_axes(self) -> tuple[tuple[str, str, type, tuple[str, ...] | None], ...]:
        """(label, override key, value type, choices or None) of every X/Y/Z axis, in table order."""
        return tuple((r.xyz.label, r.xyz.field or r.name, r.xyz.type,
                      r.xyz.choices if r.xyz.choices is not None else r.ui_choices())
                     for r in self.rows if r.xyz is not None)

    def with_rows(self, *rows: Setting, **kwargs: Any) -> SettingsTable:
        """A copy with more rows (tests, experiments); keeps the order, the check and the method row."""
        infotext_order = [r.name for r in self.infotext_rows]
        return SettingsTable((*self.rows, *rows), infotext_order=kwargs.pop("infotext_order", infotext_order),
                             check=self.check, method_name=self.method_name, doc=self.params.__doc__ or "",
                             **kwargs)
