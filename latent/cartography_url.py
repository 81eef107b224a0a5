"""The Cartography page's URL keys: their choices, parsers and schema fields (maths: docs/cartography.md).

Kept apart from :mod:`latent.cartography` so that the URL schema, which every page reads at start-up,
does not import torch or scipy; :mod:`latent.cartography` re-exports these names.
"""

from __future__ import annotations

from collections.abc import Sequence

from .urlstate import FieldError, FieldSpec, ParseContext, choice_field, parse_int, quote

#: The measures D on decoded outputs, by name: the keys of :data:`latent.geometry.MEASURES` (a test
#: keeps the two equal).
MEASURE_NAMES: tuple[str, ...] = ("l2", "bernoulli_kl")
#: How the slice is spanned: by two latent dimensions, or by the directions to two catalog items.
SPANS: tuple[str, ...] = ("dims", "neighbours")
#: Half-widths of the slice window offered ("auto": 3 for dimensions, 1.25 x the farther item for items).
EXTENTS: tuple[str, ...] = ("auto", "0.5", "1", "1.5", "2", "3", "4", "5", "6")
#: Nodes per side of the magnification grid (32: interactive; 64: finer, about four times slower).
GRIDS: tuple[str, ...] = ("32", "64")
#: What the cartogram stretches: the slice, or the UMAP map of the catalog.
VIEWS: tuple[str, ...] = ("slice", "map")
# --------------------------------------------------------------------------- URL keys


def _item_list(raw: str, ctx: ParseContext, name: str, count: int) -> tuple[int, ...]:
    """``count`` distinct item numbers in 0..n_items-1, comma-separated; FieldError otherwise."""
    tokens = raw.split(",")
    example = ",".join(str(7 * (i + 1)) for i in range(count))
    what = "one item number" if count == 1 else f"{count} different item numbers"
    usage = f"{name} must be {what} in 0..{max(ctx.n_items - 1, 0)}, like {name}={example}; ignored"
    if len(tokens) != count:
        raise FieldError(f"{name}={quote(raw)}: {usage}")
    values = []
    for token in tokens:
        try:
            values.append(parse_int(token, name))
        except FieldError:
            raise FieldError(f"{name}={quote(raw)}: {usage}") from None
    if len(set(values)) != count or not all(0 <= v < ctx.n_items for v in values):
        raise FieldError(f"{name}={quote(raw)}: {usage}")
    return tuple(values)


def _parse_dims(raw: str, ctx: ParseContext) -> tuple[tuple[int, int], list[str]]:
    d = ctx.latent_dim
    usage = (f"dims={quote(raw)}: dims must be two different latent dimensions in 0..{d - 1}, like dims=0,3; "
             "using the two most active")
    tokens = raw.split(",")
    if len(tokens) != 2:
        raise FieldError(usage)
    try:
        i, j = (parse_int(t, "dims") for t in tokens)
    except FieldError:
        raise FieldError(usage) from None
    if i == j or not (0 <= i < d and 0 <= j < d):
        raise FieldError(usage)
    return (i, j), []


def _parse_via(raw: str, ctx: ParseContext) -> tuple[tuple[int, int], list[str]]:
    a, b = _item_list(raw, ctx, "via", 2)
    return (a, b), []


def _parse_target(raw: str, ctx: ParseContext) -> tuple[int, list[str]]:
    (item,) = _item_list(raw, ctx, "target", 1)
    return item, []


def _join(values: Sequence[int] | None) -> str | None:
    return None if values is None else ",".join(str(int(v)) for v in values)


#: What weighs each item when the map is stretched: its graph stretch squared, or the magnification factor.
MAP_WEIGHTS = ("stretch", "mf")


def url_fields() -> tuple[FieldSpec, ...]:
    """The Cartography page's URL keys (all optional; absent means the default shown in brackets).

    ``measure`` (l2) the measure D; ``span`` (dims) what spans the slice; ``dims`` (the two most active) the
    slice's two latent dimensions ``i,j``; ``via`` (the two nearest items by likelihood) the slice's two items
    ``a,b``; ``extent`` (auto) the window's half-width; ``grid`` (32) nodes per side; ``target`` (the nearest
    item) the end of the geodesic; ``view`` (slice) what the cartogram stretches; ``weight`` (stretch) what
    weighs each item on the map.
    """
    return (
        choice_field("measure", MEASURE_NAMES, "l2", "the measure D on decoded outputs"),
        choice_field("span", SPANS, "dims", "what spans the slice: two latent dimensions or two items"),
        FieldSpec("dims", _parse_dims, _join, lambda ctx: None, "the slice's two latent dimensions, i,j"),
        FieldSpec("via", _parse_via, _join, lambda ctx: None, "the slice's two items, a,b"),
        choice_field("extent", EXTENTS, "auto", "half-width of the slice window"),
        choice_field("grid", GRIDS, "32", "nodes per side of the magnification grid"),
        FieldSpec("target", _parse_target, lambda v: None if v is None else str(int(v)), lambda ctx: None,
                  "the item at the far end of the geodesic"),
        choice_field("view", VIEWS, "slice", "what the cartogram stretches"),
        choice_field("weight", MAP_WEIGHTS, "stretch", "what weighs each item on the map cartogram"),
    )
