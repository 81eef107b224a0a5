"""The URL is the state: the one module that owns the dashboard's query-parameter schema.

Every query the dashboard shows is mirrored in the URL's query parameters, so a link reopens exactly
the same view. The core keys are

    z      comma-separated floats, one per latent dimension, each in [-bound, bound]
    score  a name from the score registry (the caller passes the allowed names)
    k      number of neighbours, an integer clamped to [1, k_max]
    s      the query spread used by KL, a positive finite float (optional)
    item   an index in the canonical item order, 0..n_items-1 (optional)
    seed   the seed behind prior draws, an integer in [0, 2**32) (optional)

Reading a URL never raises: NaN, inf, a wrong length, an out-of-range value, an unknown name or text
that is not a number is clamped or dropped, and each such decision comes back as a human-readable
warning (``"z[3]=12 is outside [-5, 5]; clamped to 5"``) for the page to show.

Later pages extend the schema instead of editing this module: a :class:`UrlSchema` is an immutable,
ordered collection of :class:`FieldSpec` (name, parse, format, default), and
``CORE_SCHEMA.with_field(bool_field("present"))`` returns a new schema whose values land in
:attr:`QueryState.extras`. Keys that no field claims are kept in :attr:`QueryState.unknown` and written
back unchanged, so one page never erases another page's keys.

Floats in ``z`` are float32 values (the model's dtype) written with the shortest decimal that reads
back to the same float32, so a catalog mean survives a round trip bit for bit while links stay short.
"""

from __future__ import annotations

import math
import numbers
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np

SEED_LIMIT = 2**32  # seeds are integers in [0, SEED_LIMIT), as numpy's legacy seeding requires
DEFAULT_K = 8
DEFAULT_BOUND = 5.0
#: Query parameters that Streamlit owns (case-insensitive); they are neither parsed nor written back.
RESERVED_KEYS = frozenset({"embed", "embed_options"})
#: How much of a bad value a warning quotes.
_QUOTE_CHARS = 24
#: Integers longer than this are not converted (Python refuses > 4300 digits; any of them is out of range).
_MAX_INT_DIGITS = 40

_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INT_RE = re.compile(r"[+-]?[0-9]+")
_NONFINITE_RE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


# --------------------------------------------------------------------------- number text


def format_float32(x: float) -> str:
    """The shortest decimal text that reads back (via ``float``, then float32) to ``float32(x)``.

    Positional or scientific, whichever is shorter (``"0.1"``, ``"-2.5"``, ``"1e-07"``); never a
    ``"+"`` (it would turn into a space in a URL). Non-finite input gives ``"nan"``/``"inf"``/``"-inf"``.
    """
    v = np.float32(x)
    if not np.isfinite(v):
        return str(float(v))
    pos = np.format_float_positional(v, unique=True, trim="-")
    sci = np.format_float_scientific(v, unique=True, trim="-").replace("+", "")
    return pos if len(pos) <= len(sci) else sci


def format_float(x: float) -> str:
    """Shortest text that reads back to the same Python float (``repr``), without ``"+"``."""
    return repr(float(x)).replace("+", "")


def to_float32(x: float) -> float:
    """``x`` rounded to the nearest float32, as a Python float (inf if it overflows float32)."""
    with np.errstate(over="ignore"):
        return float(np.float32(x))


def _largest_float32_at_most(bound: float) -> float:
    """The largest float32 value <= ``bound``, so a clamped value never exceeds the bound after rounding."""
    b = np.float32(bound)
    if float(b) > bound:
        b = np.nextafter(b, np.float32(-np.inf))
    return float(b)


def quote(raw: str) -> str:
    """A short, printable rendering of user text for a warning."""
    text = raw if len(raw) <= _QUOTE_CHARS else raw[:_QUOTE_CHARS] + "…"
    return repr(text)


def _g(x: float) -> str:
    return f"{x:g}"


class FieldError(ValueError):
    """Raised by a field's parser: the value is unusable and the default is used; the message is the warning."""


def parse_float(raw: str, what: str) -> float:
    """Read a plain decimal or scientific number; raise :class:`FieldError` for anything else or non-finite."""
    text = raw.strip().replace(" ", "+")  # a "+" in an unescaped URL arrives as a space
    if text == "":
        raise FieldError(f"{what} is empty")
    if _NONFINITE_RE.fullmatch(text):
        raise FieldError(f"{what}={quote(raw)} is not a finite number")
    if not _FLOAT_RE.fullmatch(text):
        raise FieldError(f"{what}={quote(raw)} is not a number")
    value = float(text)
    if not math.isfinite(value):
        raise FieldError(f"{what}={quote(raw)} is too large to be a finite number")
    return value


def parse_int(raw: str, what: str) -> int:
    """Read an integer (optional sign, ASCII digits); huge values saturate to +-10**_MAX_INT_DIGITS."""
    text = raw.strip().replace(" ", "+")
    if text == "":
        raise FieldError(f"{what} is empty")
    if not _INT_RE.fullmatch(text):
        if _FLOAT_RE.fullmatch(text) or _NONFINITE_RE.fullmatch(text):
            raise FieldError(f"{what}={quote(raw)} is not a whole number")
        raise FieldError(f"{what}={quote(raw)} is not a number")
    digits = text.lstrip("+-").lstrip("0")
    if len(digits) > _MAX_INT_DIGITS:  # out of any range we use; skip the costly conversion
        return -(10**_MAX_INT_DIGITS) if text.startswith("-") else 10**_MAX_INT_DIGITS
    return int(text)


# --------------------------------------------------------------------------- context and state


@dataclass(frozen=True)
class ParseContext:
    """What a URL is validated against.

    Attributes:
        latent_dim: d, the number of values ``z`` must have.
        bound: a in the slider range [-a, a] (see :func:`slider_bound`).
        score_names: the allowed score names (from ``latent.scores.SCORES``), in display order.
        n_items: number of catalog items; ``item`` must lie in 0..n_items-1.
        k_max: largest allowed ``k``.
        default_score: the score when the URL names none (default: the first of ``score_names``).
        default_k: ``k`` when the URL gives none, clamped to [1, k_max].
        s_range: optional (low, high) that ``s`` is clamped to, besides being positive and finite.
    """

    latent_dim: int
    bound: float
    score_names: tuple[str, ...]
    n_items: int
    k_max: int
    default_score: str | None = None
    default_k: int = DEFAULT_K
    s_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "score_names", tuple(str(n) for n in self.score_names))
        for name, low in (("latent_dim", 1), ("n_items", 0), ("k_max", 1), ("default_k", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
            object.__setattr__(self, name, int(value))
        bound = self.bound
        if isinstance(bound, bool) or not isinstance(bound, numbers.Real) or not (math.isfinite(bound) and bound > 0):
            raise ValueError(f"bound must be a positive finite number; got {bound!r}")
        object.__setattr__(self, "bound", float(bound))
        if self.default_score is not None and self.default_score not in self.score_names:
            raise ValueError(f"default_score {self.default_score!r} is not one of: {', '.join(self.score_names)}")
        if self.s_range is not None:
            lo, hi = self.s_range
            if not (0 < lo <= hi < math.inf):
                raise ValueError(f"s_range must be (low, high) with 0 < low <= high < inf; got {self.s_range!r}")

    @property
    def score_default(self) -> str | None:
        if self.default_score is not None:
            return self.default_score
        return self.score_names[0] if self.score_names else None

    @property
    def k_default(self) -> int:
        return min(self.default_k, self.k_max)


@dataclass(frozen=True)
class QueryState:
    """One view of the dashboard, as read from or written to the URL.

    Attributes:
        z: the query in latent space, one float32-representable float per dimension.
        score: the score name, or None when the registry is empty.
        k: number of neighbours.
        s: the query spread for KL, or None for the score's default.
        item: the catalog item the query came from, or None.
        seed: the seed behind the last prior draw, or None.
        extras: values of fields that later pages registered, by key (read-only).
        unknown: query parameters no field claims, kept verbatim so links keep them (read-only).

    ``z`` is rounded to float32 on construction, so ``to_query_params`` and ``parse_query_params``
    round-trip it exactly. ``extras`` and ``unknown`` take part in equality but not in the hash.
    """

    z: tuple[float, ...]
    score: str | None = None
    k: int = DEFAULT_K
    s: float | None = None
    item: int | None = None
    seed: int | None = None
    extras: Mapping[str, Any] = field(default_factory=dict, hash=False)
    unknown: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "z", tuple(to_float32(v) for v in np.asarray(self.z, dtype=np.float64).ravel()))
        object.__setattr__(self, "k", int(self.k))
        if self.s is not None:
            object.__setattr__(self, "s", float(self.s))
        if self.item is not None:
            object.__setattr__(self, "item", int(self.item))
        if self.seed is not None:
            object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "extras", MappingProxyType(dict(self.extras)))
        object.__setattr__(self, "unknown", MappingProxyType({str(k): str(v) for k, v in self.unknown.items()}))

    def replace(self, **changes: Any) -> QueryState:
        """A copy with ``changes`` applied (``dataclasses.replace``)."""
        return replace(self, **changes)

    def with_extra(self, name: str, value: Any) -> QueryState:
        """A copy with ``extras[name] = value``."""
        return replace(self, extras={**self.extras, name: value})

    @property
    def z_array(self) -> np.ndarray:
        """``z`` as a (d,) float32 array (a new array each call)."""
        return np.array(self.z, dtype=np.float32)


# --------------------------------------------------------------------------- fields

#: ``parse(raw, ctx) -> (value, warnings)``. Raise :class:`FieldError` to use the default with that warning.
ParseFn = Callable[[str, ParseContext], "tuple[Any, list[str]]"]
#: ``format(value) -> text``, or None to leave the key out of the URL.
FormatFn = Callable[[Any], "str | None"]
#: ``default(ctx) -> value`` when the key is absent or unusable.
DefaultFn = Callable[[ParseContext], Any]


@dataclass(frozen=True)
class FieldSpec:
    """One URL key: how to read it, write it, and what it is when absent.

    Attributes:
        name: the query-parameter key.
        parse: ``parse(raw, ctx) -> (value, warnings)``; it may raise :class:`FieldError` (the default
            is used and the message becomes the warning). Any other exception is caught too.
        format: ``format(value) -> str | None``; None leaves the key out of the URL.
        default: ``default(ctx) -> value``, used when the key is absent or unusable.
        help: one line for documentation.
    """

    name: str
    parse: ParseFn
    format: FormatFn
    default: DefaultFn
    help: str = ""


CORE_KEYS: tuple[str, ...] = ("z", "score", "k", "s", "item", "seed")


def _parse_z(raw: str, ctx: ParseContext) -> tuple[tuple[float, ...], list[str]]:
    d = ctx.latent_dim
    if raw.strip() == "":
        raise FieldError("z is empty; using the origin")
    tokens = raw.split(",")
    if len(tokens) != d:
        raise FieldError(f"z has {len(tokens)} values but the model has {d} latent dimensions; using the origin")
    bound = float(ctx.bound)
    top = _largest_float32_at_most(bound)
    warnings: list[str] = []
    values: list[float] = []
    for i, token in enumerate(tokens):
        try:
            v = parse_float(token, f"z[{i}]")
        except FieldError as exc:
            warnings.append(f"{exc}; set to 0")
            values.append(0.0)
            continue
        if abs(v) > bound:
            clamped = math.copysign(top, v)
            where = f"[{_g(-bound)}, {_g(bound)}]"
            warnings.append(f"z[{i}]={_g(v)} is outside {where}; clamped to {format_float32(clamped)}")
            values.append(clamped)
            continue
        v32 = to_float32(v)
        values.append(math.copysign(top, v32) if abs(v32) > bound else v32)  # rounding may step past the bound
    return tuple(values), warnings


def _format_z(z: Sequence[float]) -> str:
    return ",".join(format_float32(v) for v in z)


def _parse_score(raw: str, ctx: ParseContext) -> tuple[str | None, list[str]]:
    name = raw.strip()
    if name in ctx.score_names:
        return name, []
    folded = [n for n in ctx.score_names if n.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0], []
    allowed = ", ".join(ctx.score_names) if ctx.score_names else "(none registered)"
    raise FieldError(f"unknown score {quote(raw)}; using {ctx.score_default!r} (choose one of: {allowed})")


def _parse_k(raw: str, ctx: ParseContext) -> tuple[int, list[str]]:
    try:
        k = parse_int(raw, "k")
    except FieldError as exc:
        raise FieldError(f"{exc}; using k={ctx.k_default}") from None
    if k < 1 or k > ctx.k_max:
        clamped = min(max(k, 1), ctx.k_max)
        shown = quote(raw.strip()) if len(raw.strip()) > _QUOTE_CHARS else str(k)
        return clamped, [f"k={shown} is outside [1, {ctx.k_max}]; clamped to {clamped}"]
    return k, []


def _parse_s(raw: str, ctx: ParseContext) -> tuple[float | None, list[str]]:
    try:
        s = parse_float(raw, "s")
    except FieldError as exc:
        raise FieldError(f"{exc}; ignored (the score's default spread is used)") from None
    if s <= 0:
        raise FieldError(f"s={_g(s)} must be positive; ignored (the score's default spread is used)")
    if ctx.s_range is not None:
        lo, hi = ctx.s_range
        if not lo <= s <= hi:
            clamped = min(max(s, lo), hi)
            return clamped, [f"s={_g(s)} is outside [{_g(lo)}, {_g(hi)}]; clamped to {_g(clamped)}"]
    return s, []


def _parse_item(raw: str, ctx: ParseContext) -> tuple[int | None, list[str]]:
    try:
        item = parse_int(raw, "item")
    except FieldError as exc:
        raise FieldError(f"{exc}; ignored") from None
    if not 0 <= item < ctx.n_items:
        shown = quote(raw.strip()) if len(raw.strip()) > _QUOTE_CHARS else str(item)
        if ctx.n_items == 0:
            raise FieldError(f"item={shown} cannot be used: the catalog is empty; ignored")
        raise FieldError(f"item={shown} is outside 0..{ctx.n_items - 1}; ignored")
    return item, []


def _parse_seed(raw: str, ctx: ParseContext) -> tuple[int | None, list[str]]:
    try:
        seed = parse_int(raw, "seed")
    except FieldError as exc:
        raise FieldError(f"{exc}; ignored") from None
    if not 0 <= seed < SEED_LIMIT:
        shown = quote(raw.strip()) if len(raw.strip()) > _QUOTE_CHARS else str(seed)
        raise FieldError(f"seed={shown} is outside 0..{SEED_LIMIT - 1}; ignored")
    return seed, []


def _optional(fmt: Callable[[Any], str]) -> FormatFn:
    return lambda value: None if value is None else fmt(value)


CORE_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("z", _parse_z, _format_z, lambda ctx: (0.0,) * ctx.latent_dim,
              "the query: comma-separated floats, one per latent dimension"),
    FieldSpec("score", _parse_score, _optional(str), lambda ctx: ctx.score_default, "a score name from the registry"),
    FieldSpec("k", _parse_k, str, lambda ctx: ctx.k_default, "number of neighbours, 1..k_max"),
    FieldSpec("s", _parse_s, _optional(format_float), lambda ctx: None, "the query spread used by KL (> 0)"),
    FieldSpec("item", _parse_item, _optional(str), lambda ctx: None, "an item index in the canonical order"),
    FieldSpec("seed", _parse_seed, _optional(str), lambda ctx: None, f"the seed of prior draws, 0..{SEED_LIMIT - 1}"),
)


def bool_field(name: str, default: bool = False, help: str = "") -> FieldSpec:
    """A boolean key (e.g. ``present``): reads 1/0, true/false, yes/no, on/off; written only when not default."""
    truthy = {"1", "true", "yes", "on", "y", "t"}
    falsy = {"0", "false", "no", "off", "n", "f"}

    def parse(raw: str, ctx: ParseContext) -> tuple[bool, list[str]]:
        text = raw.strip().lower()
        if text in truthy:
            return True, []
        if text in falsy:
            return False, []
        raise FieldError(f"{name}={quote(raw)} is not true/false (1/0); using {int(default)}")

    return FieldSpec(name, parse, lambda v: None if bool(v) == default else ("1" if v else "0"),
                     lambda ctx: default, help)


def choice_field(name: str, choices: Sequence[str], default: str, help: str = "") -> FieldSpec:
    """A key whose value is one of ``choices`` (e.g. a tab or a colouring); written only when not default."""
    allowed = tuple(choices)
    if default not in allowed:
        raise ValueError(f"default {default!r} for {name!r} is not one of: {', '.join(allowed)}")

    def parse(raw: str, ctx: ParseContext) -> tuple[str, list[str]]:
        text = raw.strip()
        if text in allowed:
            return text, []
        raise FieldError(f"unknown {name} {quote(raw)}; using {default!r} (choose one of: {', '.join(allowed)})")

    return FieldSpec(name, parse, lambda v: None if v == default else str(v), lambda ctx: default, help)


def int_field(name: str, low: int, high: int | Callable[[ParseContext], int], default: int | None = None,
              help: str = "") -> FieldSpec:
    """An integer key in ``low..high`` (``high`` may depend on the context, e.g. ``lambda ctx: ctx.n_items - 1``).

    Out-of-range or non-integer values are dropped with a warning (the default is used); the key is
    written only when the value is not the default. ``default`` may be None (no value).
    """
    upper = high if callable(high) else (lambda ctx: high)

    def parse(raw: str, ctx: ParseContext) -> tuple[int, list[str]]:
        try:
            value = parse_int(raw, name)
        except FieldError as exc:
            raise FieldError(f"{exc}; ignored") from None
        top = int(upper(ctx))
        if not low <= value <= top:
            shown = quote(raw.strip()) if len(raw.strip()) > _QUOTE_CHARS else str(value)
            raise FieldError(f"{name}={shown} is outside {low}..{top}; ignored")
        return value, []

    return FieldSpec(name, parse, lambda v: None if v is None or v == default else str(int(v)),
                     lambda ctx: default, help)


def index_pair_field(name: str, help: str = "") -> FieldSpec:
    """Two different latent dimensions ``i,j`` (each in 0..latent_dim-1), e.g. the axes of a 2-D view.

    Absent by default (None: the page picks its own pair); a bad pair is dropped with a warning.
    """

    def parse(raw: str, ctx: ParseContext) -> tuple[tuple[int, int], list[str]]:
        tokens = raw.split(",")
        if len(tokens) != 2:
            raise FieldError(f"{name}={quote(raw)} must be two dimensions 'i,j'; ignored")
        try:
            i, j = (parse_int(t, name) for t in tokens)
        except FieldError as exc:
            raise FieldError(f"{exc}; ignored") from None
        d = ctx.latent_dim
        if not (0 <= i < d and 0 <= j < d) or i == j:
            raise FieldError(f"{name}={quote(raw)} must be two different dimensions in 0..{d - 1}; ignored")
        return (i, j), []

    return FieldSpec(name, parse, lambda v: None if v is None else f"{int(v[0])},{int(v[1])}",
                     lambda ctx: None, help)


# --------------------------------------------------------------------------- the schema


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _last_value(raw: Any) -> tuple[str | None, int]:
    """The value used for one key (the last of repeated ones, as ``st.query_params[key]`` does) and the count."""
    if raw is None:
        return None, 0
    if isinstance(raw, (list, tuple)):
        values = [v for v in raw if v is not None]
        return (_text(values[-1]) if values else None), len(values)
    return _text(raw), 1


@dataclass(frozen=True)
class UrlSchema:
    """An immutable, ordered set of :class:`FieldSpec`; the URL's keys are written in this order.

    Extend it with :meth:`with_field`, which returns a new schema; the core keys are
    :data:`CORE_KEYS`. A page-specific schema is built once, e.g. at module level in that page's
    library module: ``ATLAS_SCHEMA = CORE_SCHEMA.with_field(bool_field("present"))``.
    """

    fields: tuple[FieldSpec, ...] = CORE_FIELDS

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate URL keys in schema: {', '.join(dupes)}")
        reserved = [n for n in names if n.lower() in RESERVED_KEYS]
        if reserved:
            raise ValueError(f"URL keys {', '.join(reserved)} are reserved by Streamlit; choose another name")
        missing = [k for k in CORE_KEYS if k not in names]
        if missing:
            raise ValueError(f"a schema must keep the core keys; missing: {', '.join(missing)}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def with_field(self, spec: FieldSpec, *, replace_existing: bool = False) -> UrlSchema:
        """A new schema with ``spec`` added (or replacing the field of that name if ``replace_existing``)."""
        if not isinstance(spec, FieldSpec):
            raise TypeError(f"with_field takes a FieldSpec; got {type(spec).__name__}")
        if spec.name in self.names:
            if not replace_existing:
                raise ValueError(
                    f"URL key {spec.name!r} is already in the schema; pass replace_existing=True to replace it"
                )
            return UrlSchema(tuple(spec if f.name == spec.name else f for f in self.fields))
        return UrlSchema((*self.fields, spec))

    def defaults(self, ctx: ParseContext) -> QueryState:
        """The state of a URL with no parameters."""
        values = {f.name: f.default(ctx) for f in self.fields}
        return _build_state(values, {})

    def parse(
        self, params: Mapping[str, Any] | Iterable[tuple[str, Any]], ctx: ParseContext, *, report_unknown: bool = True
    ) -> tuple[QueryState, list[str]]:
        """Read query parameters into a :class:`QueryState`; never raises on any parameter value.

        Args:
            params: key -> value, or key -> list of values for a repeated key (``st.query_params.to_dict()``,
                or ``{k: st.query_params.get_all(k) for k in st.query_params}``), or (key, value) pairs.
            ctx: what the values are validated against.
            report_unknown: also warn about keys that no field claims (they are kept either way).

        Returns:
            ``(state, warnings)``: each warning is one sentence naming the key, what was wrong, and what
            was done instead.
        """
        items = params.items() if isinstance(params, Mapping) else params
        grouped: dict[str, list[Any]] = {}
        for key, value in items:
            bucket = grouped.setdefault(str(key), [])
            bucket.extend(value if isinstance(value, (list, tuple)) else [value])
        warnings: list[str] = []
        values: dict[str, Any] = {}
        by_name = {f.name: f for f in self.fields}
        for spec in self.fields:
            raw, count = _last_value(grouped.get(spec.name))
            if count > 1:
                warnings.append(f"{spec.name} appears {count} times in the link; the last value is used")
            if raw is None:
                values[spec.name] = spec.default(ctx)
                continue
            try:
                value, notes = spec.parse(raw, ctx)
                warnings.extend(notes)
            except FieldError as exc:
                value = spec.default(ctx)
                warnings.append(str(exc))
            except Exception as exc:  # a faulty extension parser must not break the page
                value = spec.default(ctx)
                warnings.append(f"{spec.name}={quote(raw)} could not be read ({type(exc).__name__}); ignored")
            values[spec.name] = value
        unknown: dict[str, str] = {}
        for key, raw_values in grouped.items():
            if key in by_name or key.lower() in RESERVED_KEYS:
                continue
            raw, _ = _last_value(raw_values)
            if raw is None:
                continue
            unknown[key] = raw
            if report_unknown:
                warnings.append(f"unknown link parameter {quote(key)} is not used here; it is kept in the link")
        return _build_state(values, unknown), warnings

    def to_params(self, state: QueryState) -> dict[str, str]:
        """The query parameters for ``state``, in schema order, then the unknown keys it carried."""
        out: dict[str, str] = {}
        for spec in self.fields:
            value = getattr(state, spec.name) if spec.name in CORE_KEYS else state.extras.get(spec.name)
            if spec.name not in CORE_KEYS and spec.name not in state.extras:
                continue
            text = spec.format(value)
            if text is not None:
                out[spec.name] = text
        for key, value in state.unknown.items():
            if key not in out and key.lower() not in RESERVED_KEYS:
                out[key] = value
        return out


def _build_state(values: Mapping[str, Any], unknown: Mapping[str, str]) -> QueryState:
    core = {k: values[k] for k in CORE_KEYS}
    extras = {k: v for k, v in values.items() if k not in CORE_KEYS}
    return QueryState(**core, extras=extras, unknown=unknown)


#: The schema of the core keys; extend it with :meth:`UrlSchema.with_field`.
CORE_SCHEMA = UrlSchema()


# --------------------------------------------------------------------------- the module's API


def parse_query_params(
    params: Mapping[str, Any] | Iterable[tuple[str, Any]],
    *,
    latent_dim: int,
    bound: float,
    score_names: Sequence[str],
    n_items: int,
    k_max: int,
    default_score: str | None = None,
    default_k: int = DEFAULT_K,
    s_range: tuple[float, float] | None = None,
    schema: UrlSchema = CORE_SCHEMA,
    report_unknown: bool = True,
) -> tuple[QueryState, list[str]]:
    """Read the URL's query parameters; see :meth:`UrlSchema.parse`. Raises only for bad keyword arguments."""
    ctx = ParseContext(latent_dim=latent_dim, bound=bound, score_names=tuple(score_names), n_items=n_items,
                       k_max=k_max, default_score=default_score, default_k=default_k, s_range=s_range)
    return schema.parse(params, ctx, report_unknown=report_unknown)


def to_query_params(state: QueryState, *, schema: UrlSchema = CORE_SCHEMA) -> dict[str, str]:
    """The query parameters for ``state`` (for ``st.query_params.from_dict``); see :meth:`UrlSchema.to_params`."""
    return schema.to_params(state)


def to_query_string(state: QueryState, *, schema: UrlSchema = CORE_SCHEMA) -> str:
    """``state`` as a URL query string (without ``?``), keeping commas readable: ``z=0.1,-2&score=kl&k=8``."""
    return urllib.parse.urlencode(schema.to_params(state), safe=",", quote_via=urllib.parse.quote)


def parse_query_string(query: str) -> list[tuple[str, str]]:
    """Split a URL query string (with or without ``?``) into (key, value) pairs, keeping repeats and blanks.

    Never raises; feed the result to :func:`parse_query_params`.
    """
    text = str(query)
    if text.startswith("?"):
        text = text[1:]
    return urllib.parse.parse_qsl(text, keep_blank_values=True, errors="replace")


def slider_bound(mu: Any, default: float = DEFAULT_BOUND, step: float = 0.5) -> float:
    """The slider half-range a: ``default``, widened to the next multiple of ``step`` that covers every mean.

    ``a = max(default, ceil(max|mu| / step) * step)``, so every catalog mean lies in [-a, a] and survives
    a URL round trip without clamping.

    Args:
        mu: (N, d) finite catalog means (N may be 0).
        default: the half-range when all means fit (5 in the product).
        step: the tidy step a is rounded up to.

    Raises:
        ValueError: if ``mu`` holds NaN or inf, or ``default``/``step`` are not positive and finite.
    """
    if not (math.isfinite(default) and default > 0 and math.isfinite(step) and step > 0):
        raise ValueError(f"default and step must be positive and finite; got default={default!r}, step={step!r}")
    arr = np.asarray(mu, dtype=np.float64)
    if arr.size == 0:
        return float(default)
    if not np.isfinite(arr).all():
        raise ValueError("mu must be finite to choose a slider range; it holds NaN or inf")
    top = float(np.abs(arr).max())
    if top <= default:
        return float(default)  # every mean already fits the default range
    a = math.ceil(top / step) * step
    while a < top:  # guards float rounding for steps that are not binary fractions
        a += step
    return float(a)
