"""Tests for latent/urlstate.py: exact round trips, every kind of bad value, fuzzing, schema extension."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from latent.urlstate import (
    CORE_KEYS,
    CORE_SCHEMA,
    SEED_LIMIT,
    FieldSpec,
    ParseContext,
    QueryState,
    bool_field,
    choice_field,
    format_float32,
    parse_query_params,
    parse_query_string,
    slider_bound,
    to_query_params,
    to_query_string,
)

SCORES = ("likelihood", "euclidean", "kl")
D = 10
N_ITEMS = 70_000
K_MAX = 50
CTX = dict(latent_dim=D, bound=5.0, score_names=SCORES, n_items=N_ITEMS, k_max=K_MAX)
PRESENT_SCHEMA = CORE_SCHEMA.with_field(bool_field("present")).with_field(
    choice_field("colour", ("class", "sigma"), "class")
)


def parse(params, **overrides):
    return parse_query_params(params, **{**CTX, **overrides})


def origin() -> tuple[float, ...]:
    return (0.0,) * D


def z_text(*values: str) -> str:
    """A z of D entries: the given ones first, zeros after."""
    return ",".join(list(values) + ["0"] * (D - len(values)))


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]  # float32 rounding, independent of numpy


# --------------------------------------------------------------------------- float formatting


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_format_float32_round_trips_exactly(x):
    text = format_float32(x)
    assert f32(float(text)) == x and math.copysign(1, f32(float(text))) == math.copysign(1, x)
    assert "+" not in text and " " not in text


def test_format_float32_round_trips_random_bit_patterns_and_stays_short():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**32, size=20_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    values = values[np.isfinite(values)]
    for v in values:
        assert np.float32(float(format_float32(v))).view(np.uint32) == v.view(np.uint32), v
    typical = rng.normal(scale=2.0, size=2000).astype(np.float32)
    lengths = [len(format_float32(v)) for v in typical]
    assert max(lengths) <= 14 and np.mean(lengths) <= 11, "z entries should stay short in links"
    assert format_float32(0.1) == "0.1" and format_float32(-2.5) == "-2.5" and format_float32(3.0) == "3"


# --------------------------------------------------------------------------- round trips

STATE_Z = st.lists(st.floats(min_value=-5, max_value=5, width=32), min_size=D, max_size=D)
OPT_S = st.none() | st.floats(min_value=0, exclude_min=True, allow_infinity=False)
UNKNOWN_KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-.", min_size=1, max_size=8).filter(
    lambda k: k not in PRESENT_SCHEMA.names and k.lower() not in ("embed", "embed_options")
)
VALUES = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=20)


@st.composite
def states(draw):
    return QueryState(
        z=tuple(draw(STATE_Z)),
        score=draw(st.sampled_from(SCORES)),
        k=draw(st.integers(1, K_MAX)),
        s=draw(OPT_S),
        item=draw(st.none() | st.integers(0, N_ITEMS - 1)),
        seed=draw(st.none() | st.integers(0, SEED_LIMIT - 1)),
        extras={"present": draw(st.booleans()), "colour": draw(st.sampled_from(["class", "sigma"]))},
        unknown=draw(st.dictionaries(UNKNOWN_KEYS, VALUES, max_size=3)),
    )


@settings(max_examples=150)
@given(states())
def test_state_round_trips_through_params_and_query_string(state):
    params = to_query_params(state, schema=PRESENT_SCHEMA)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())
    back, warnings = parse(params, schema=PRESENT_SCHEMA, report_unknown=False)
    assert back == state and warnings == []
    back2, warnings2 = parse(parse_query_string(to_query_string(state, schema=PRESENT_SCHEMA)),
                             schema=PRESENT_SCHEMA, report_unknown=False)
    assert back2 == state and warnings2 == []


def test_catalog_means_survive_a_round_trip_without_clamping():
    rng = np.random.default_rng(1)
    mu = (rng.standard_t(3, size=(5000, D)) * 1.5).astype(np.float32)  # heavy tails: some |mu| > 5
    assert np.abs(mu).max() > 5
    bound = slider_bound(mu)
    for i in [*rng.choice(len(mu), 300, replace=False).tolist(), int(np.abs(mu).max(axis=1).argmax())]:
        state = QueryState(z=tuple(mu[i].tolist()), score="kl", k=8, item=i)
        back, warnings = parse(to_query_params(state), bound=bound)
        assert warnings == []
        np.testing.assert_array_equal(back.z_array, mu[i])
        assert back.item == i


def test_empty_params_give_the_defaults():
    state, warnings = parse({})
    assert warnings == []
    assert state == QueryState(z=origin(), score="likelihood", k=8)
    assert parse({}, default_score="kl", default_k=80)[0].k == K_MAX
    assert parse({}, score_names=())[0].score is None


def test_query_string_keeps_commas_readable():
    state = QueryState(z=(0.5, -1.25) + (0.0,) * (D - 2), score="kl", k=5, s=0.25, seed=42)
    assert to_query_string(state) == "z=0.5,-1.25,0,0,0,0,0,0,0,0&score=kl&k=5&s=0.25&seed=42"


# --------------------------------------------------------------------------- bad values

BAD = [
    # (params, words expected in one warning, attribute, expected value)
    ({"z": z_text("0", "0", "0", "12")}, "z[3]=12 is outside [-5, 5]; clamped to 5", "z",
     (0.0, 0.0, 0.0, 5.0) + (0.0,) * 6),
    ({"z": z_text("5.25")}, "z[0]=5.25 is outside [-5, 5]; clamped to 5", "z", (5.0,) + (0.0,) * 9),
    ({"z": z_text("-1e9")}, "z[0]=-1e+09 is outside [-5, 5]; clamped to -5", "z", (-5.0,) + (0.0,) * 9),
    ({"z": z_text("1", "nan")}, "z[1]='nan' is not a finite number; set to 0", "z", (1.0,) + (0.0,) * 9),
    ({"z": z_text("inf")}, "z[0]='inf' is not a finite number", "z", origin()),
    ({"z": z_text("-Infinity")}, "is not a finite number", "z", origin()),
    ({"z": z_text("1e999")}, "too large to be a finite number", "z", origin()),
    ({"z": z_text("abc")}, "z[0]='abc' is not a number; set to 0", "z", origin()),
    ({"z": z_text("0x10")}, "is not a number", "z", origin()),
    ({"z": z_text("1_000")}, "is not a number", "z", origin()),
    ({"z": z_text("\u0661")}, "is not a number", "z", origin()),  # an Arabic-Indic digit, which float() accepts
    ({"z": z_text("2", "")}, "z[1] is empty; set to 0", "z", (2.0,) + (0.0,) * 9),
    ({"z": "1,2,3"}, "z has 3 values but the model has 10 latent dimensions; using the origin", "z", origin()),
    ({"z": z_text() + ",0"}, "z has 11 values", "z", origin()),
    ({"z": ""}, "z is empty", "z", origin()),
    ({"z": "   "}, "z is empty", "z", origin()),
    ({"score": "kll"}, "unknown score 'kll'; using 'likelihood' (choose one of: likelihood, euclidean, kl)", "score",
     "likelihood"),
    ({"score": ""}, "unknown score ''", "score", "likelihood"),
    ({"k": "-3"}, "k=-3 is outside [1, 50]; clamped to 1", "k", 1),
    ({"k": "0"}, "k=0 is outside [1, 50]; clamped to 1", "k", 1),
    ({"k": "999"}, "k=999 is outside [1, 50]; clamped to 50", "k", 50),
    ({"k": "9" * 5000}, "is outside [1, 50]; clamped to 50", "k", 50),
    ({"k": "-" + "9" * 5000}, "is outside [1, 50]; clamped to 1", "k", 1),
    ({"k": "3.5"}, "k='3.5' is not a whole number; using k=8", "k", 8),
    ({"k": "abc"}, "k='abc' is not a number; using k=8", "k", 8),
    ({"k": "nan"}, "k='nan' is not a whole number", "k", 8),
    ({"k": ""}, "k is empty; using k=8", "k", 8),
    ({"s": "0"}, "s=0 must be positive; ignored", "s", None),
    ({"s": "-0.5"}, "s=-0.5 must be positive", "s", None),
    ({"s": "nan"}, "s='nan' is not a finite number", "s", None),
    ({"s": "inf"}, "s='inf' is not a finite number", "s", None),
    ({"s": "1e400"}, "too large", "s", None),
    ({"s": "wide"}, "s='wide' is not a number", "s", None),
    ({"item": "-1"}, "item=-1 is outside 0..69999; ignored", "item", None),
    ({"item": "70000"}, "item=70000 is outside 0..69999; ignored", "item", None),
    ({"item": "1" * 100}, "is outside 0..69999; ignored", "item", None),
    ({"item": "1.0"}, "item='1.0' is not a whole number; ignored", "item", None),
    ({"item": ""}, "item is empty; ignored", "item", None),
    ({"seed": "-1"}, "seed=-1 is outside 0..4294967295; ignored", "seed", None),
    ({"seed": str(2**32)}, "seed=4294967296 is outside 0..4294967295", "seed", None),
    ({"seed": "lucky"}, "seed='lucky' is not a number; ignored", "seed", None),
]


@pytest.mark.parametrize("params, words, attr, expected", BAD, ids=[repr(p)[:40] for p, *_ in BAD])
def test_each_bad_value_gives_its_warning(params, words, attr, expected):
    state, warnings = parse(params)
    assert any(words in w for w in warnings), f"no warning containing {words!r} in {warnings}"
    assert getattr(state, attr) == expected
    # The rest of the state keeps its defaults.
    defaults = QueryState(z=origin(), score="likelihood", k=8)
    for other in CORE_KEYS:
        if other != attr:
            assert getattr(state, other) == getattr(defaults, other)


def test_repeated_keys_use_the_last_value_and_say_so():
    state, warnings = parse({"k": ["3", "5"], "score": ["kl"], "seed": []})
    assert state.k == 5 and state.score == "kl" and state.seed is None
    assert warnings == ["k appears 2 times in the link; the last value is used"]
    state, warnings = parse([("k", "3"), ("z", z_text("1")), ("k", "7")])
    assert state.k == 7 and state.z[0] == 1.0 and len(warnings) == 1


def test_a_well_formed_link_gives_no_warnings():
    state, warnings = parse({"z": z_text("1.5", "-0.25"), "score": "euclidean", "k": "12", "s": "0.3",
                             "item": "69999", "seed": "4294967295"})
    assert warnings == []
    assert state == QueryState(z=(1.5, -0.25) + (0.0,) * 8, score="euclidean", k=12, s=0.3, item=69999,
                               seed=4294967295)


def test_lenient_spellings_are_accepted():
    # A "+" typed unescaped into a URL arrives as a space; whitespace around values; score case.
    state, warnings = parse({"z": z_text(" 1e 0", "2.5e-1 "), "score": "KL", "k": " 4 "})
    assert warnings == [] and state.z[:2] == (1.0, 0.25) and state.score == "kl" and state.k == 4


def test_clamping_to_a_bound_that_float32_cannot_hold_stays_within_it():
    assert f32(5.3) > 5.3  # float32 rounds this bound up
    state, warnings = parse({"z": z_text("9", "-9", "5.3")}, bound=5.3)
    assert len(warnings) == 2
    assert -5.3 <= state.z[1] < state.z[0] <= 5.3 and state.z[2] <= 5.3
    again, warnings = parse(to_query_params(state), bound=5.3)
    assert again == state and warnings == []


def test_s_range_clamps():
    state, warnings = parse({"s": "100"}, s_range=(0.01, 10.0))
    assert state.s == 10.0 and warnings == ["s=100 is outside [0.01, 10]; clamped to 10"]


def test_unknown_and_reserved_keys():
    state, warnings = parse({"utm_source": "talk", "embed": "true", "EMBED_OPTIONS": "x", "k": "4"})
    assert dict(state.unknown) == {"utm_source": "talk"}
    assert warnings == ["unknown link parameter 'utm_source' is not used here; it is kept in the link"]
    params = to_query_params(state)
    assert params["utm_source"] == "talk" and "embed" not in params and "EMBED_OPTIONS" not in params
    assert parse({"utm_source": "talk"}, report_unknown=False)[1] == []


def test_values_of_other_types_do_not_crash():
    state, _warnings = parse({"k": 7, "seed": b"12", "item": None, "score": ["kl", None]})
    assert state.k == 7 and state.seed == 12 and state.item is None and state.score == "kl"


# --------------------------------------------------------------------------- fuzzing

ANY_TEXT = st.text(max_size=40) | st.sampled_from(["nan", "-inf", "1e999", "-0", "", " ", ",", "1,2", "9" * 60])
KEYS = st.sampled_from([*CORE_KEYS, "present", "colour", "embed", "other"]) | st.text(max_size=6)


def assert_valid(state: QueryState) -> None:
    assert len(state.z) == D and all(math.isfinite(v) and abs(v) <= 5.0 and f32(v) == v for v in state.z)
    assert state.score in SCORES
    assert 1 <= state.k <= K_MAX
    assert state.s is None or (math.isfinite(state.s) and state.s > 0)
    assert state.item is None or 0 <= state.item < N_ITEMS
    assert state.seed is None or 0 <= state.seed < SEED_LIMIT
    assert isinstance(state.extras["present"], bool) and state.extras["colour"] in ("class", "sigma")


@settings(max_examples=300)
@given(st.dictionaries(KEYS, ANY_TEXT | st.lists(ANY_TEXT, max_size=3), max_size=8))
def test_fuzzed_params_never_raise_and_give_a_valid_state(params):
    state, warnings = parse(params, schema=PRESENT_SCHEMA)
    assert isinstance(warnings, list) and all(isinstance(w, str) and w for w in warnings)
    assert_valid(state)
    # What we write back is clean: reading it again changes nothing and warns about nothing.
    again, warnings2 = parse(to_query_params(state, schema=PRESENT_SCHEMA), schema=PRESENT_SCHEMA, report_unknown=False)
    assert again == state and warnings2 == []


@settings(max_examples=200)
@given(st.lists(st.text(max_size=12) | st.floats().map(repr), min_size=0, max_size=12))
def test_fuzzed_z_never_raises(tokens):
    text = ",".join(tokens)
    state, warnings = parse({"z": text})
    assert_valid(state.with_extra("present", False).with_extra("colour", "class"))
    if len(text.split(",")) != D:
        assert state.z == origin() and warnings


@given(st.text(max_size=200))
def test_fuzzed_query_strings_never_raise(text):
    state, _ = parse(parse_query_string(text), schema=PRESENT_SCHEMA)
    assert_valid(state)


# --------------------------------------------------------------------------- extending the schema


def test_a_page_can_register_a_new_key():
    state, warnings = parse({"present": "1", "colour": "sigma", "k": "3"}, schema=PRESENT_SCHEMA)
    assert warnings == [] and state.extras == {"present": True, "colour": "sigma"} and state.k == 3
    assert to_query_params(state, schema=PRESENT_SCHEMA) == {
        "z": "0,0,0,0,0,0,0,0,0,0", "score": "likelihood", "k": "3", "present": "1", "colour": "sigma"}
    state, warnings = parse({"present": "maybe", "colour": "rainbow"}, schema=PRESENT_SCHEMA)
    assert state.extras == {"present": False, "colour": "class"}
    assert warnings == ["present='maybe' is not true/false (1/0); using 0",
                        "unknown colour 'rainbow'; using 'class' (choose one of: class, sigma)"]
    # Defaults are left out of the link, and a page without the field keeps it as an unknown key.
    assert "present" not in to_query_params(state, schema=PRESENT_SCHEMA)
    plain, _ = parse({"present": "1"})
    assert plain.unknown == {"present": "1"} and to_query_params(plain)["present"] == "1"


def test_schema_rules():
    with pytest.raises(ValueError, match="already in the schema"):
        CORE_SCHEMA.with_field(bool_field("k"))
    with pytest.raises(ValueError, match="reserved by Streamlit"):
        CORE_SCHEMA.with_field(bool_field("Embed"))
    with pytest.raises(ValueError, match="not one of"):
        choice_field("colour", ("a", "b"), "c")
    with pytest.raises(TypeError, match="FieldSpec"):
        CORE_SCHEMA.with_field("present")
    assert CORE_SCHEMA.names == CORE_KEYS, "with_field must not change the schema it was called on"
    k_as_bool = CORE_SCHEMA.with_field(
        FieldSpec("k", lambda raw, ctx: (int(raw) * 2, []), str, lambda ctx: 4), replace_existing=True)
    assert parse({"k": "3"}, schema=k_as_bool)[0].k == 6


def test_a_faulty_extension_parser_is_contained():
    def broken(raw, ctx):
        raise RuntimeError("bug")

    schema = CORE_SCHEMA.with_field(FieldSpec("view", broken, str, lambda ctx: "grid"))
    state, warnings = parse({"view": "list"}, schema=schema)
    assert state.extras["view"] == "grid"
    assert warnings == ["view='list' could not be read (RuntimeError); ignored"]


# --------------------------------------------------------------------------- state and context


def test_query_state_is_immutable_hashable_and_float32():
    state = QueryState(z=[0.1, 1 / 3], extras={"present": True})
    assert state.z == (f32(0.1), f32(1 / 3))
    with pytest.raises(AttributeError):
        state.k = 3
    with pytest.raises(TypeError):
        state.extras["present"] = False
    assert hash(state) == hash(QueryState(z=[0.1, 1 / 3], extras={"present": True}))
    assert state.with_extra("present", False).extras["present"] is False and state.extras["present"] is True
    assert state.replace(k=3).k == 3 and state.k == 8
    assert state.z_array.dtype == np.float32


@pytest.mark.parametrize(
    "bad, words",
    [
        (dict(latent_dim=0), "latent_dim must be an integer >= 1"),
        (dict(bound=float("nan")), "bound must be a positive finite number"),
        (dict(bound=-1.0), "bound"),
        (dict(k_max=0), "k_max"),
        (dict(n_items=-1), "n_items"),
        (dict(default_score="kll"), "default_score 'kll' is not one of: likelihood, euclidean, kl"),
        (dict(s_range=(1.0, 0.5)), "s_range"),
    ],
)
def test_bad_context_arguments_raise(bad, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        ParseContext(**{**CTX, "score_names": SCORES, **bad})


# --------------------------------------------------------------------------- slider_bound


@given(
    mu=hnp.arrays(np.float32, st.tuples(st.integers(0, 30), st.integers(1, 4)),
                  elements=st.floats(-40, 40, width=32)),
    default=st.sampled_from([5.0, 1.0, 3.25]),
    step=st.sampled_from([0.5, 0.25, 0.1, 1.0]),
)
def test_slider_bound_covers_every_mean_with_a_tidy_step(mu, default, step):
    a = slider_bound(mu, default=default, step=step)
    top = float(np.abs(mu).max()) if mu.size else 0.0
    assert a >= default and a >= top
    if top > default:
        assert a < top + step + 1e-9, "widened by more than one step"
        assert abs(a / step - round(a / step)) < 1e-6, "not a multiple of the step"
    else:
        assert a == default
    if mu.size:
        _, warnings = parse({"z": ",".join(format_float32(v) for v in mu[0])}, latent_dim=mu.shape[1], bound=a)
        assert warnings == []


def test_slider_bound_examples_and_errors():
    assert slider_bound(np.array([[0.1, -4.9]])) == 5.0
    assert slider_bound(np.array([[0.1, -5.01]])) == 5.5
    assert slider_bound(np.array([[7.5]])) == 7.5
    assert slider_bound(np.zeros((0, 10))) == 5.0
    mu = np.array([[1.0, 6.2]], dtype=np.float32)
    before = mu.copy()
    assert slider_bound(mu) == 6.5
    np.testing.assert_array_equal(mu, before)
    with pytest.raises(ValueError, match="finite"):
        slider_bound(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="positive"):
        slider_bound(np.zeros((1, 1)), step=0)


# --------------------------------------------------------------------------- integer and dimension-pair keys


def test_int_and_index_pair_fields_round_trip_and_reject_bad_values():
    from latent.urlstate import index_pair_field, int_field

    schema = (CORE_SCHEMA.with_field(int_field("to", 0, lambda ctx: ctx.n_items - 1))
              .with_field(int_field("eps", 0, SEED_LIMIT - 1, default=0))
              .with_field(index_pair_field("dims")))
    state, warnings = parse({"to": "69999", "eps": "7", "dims": "3,0"}, schema=schema)
    assert warnings == [] and state.extras == {"to": 69999, "eps": 7, "dims": (3, 0)}
    written = to_query_params(state, schema=schema)
    assert (written["to"], written["eps"], written["dims"]) == ("69999", "7", "3,0")
    assert parse(written, schema=schema)[0] == state
    # Defaults stay out of the link.
    state, warnings = parse({}, schema=schema)
    assert state.extras == {"to": None, "eps": 0, "dims": None} and warnings == []
    assert not {"to", "eps", "dims"} & set(to_query_params(state, schema=schema))
    bad = {"to": str(N_ITEMS), "eps": "-1", "dims": "2,2"}
    state, warnings = parse(bad, schema=schema)
    assert state.extras == {"to": None, "eps": 0, "dims": None}
    assert warnings == [f"to={N_ITEMS} is outside 0..{N_ITEMS - 1}; ignored",
                        f"eps=-1 is outside 0..{SEED_LIMIT - 1}; ignored",
                        f"dims='2,2' must be two different dimensions in 0..{D - 1}; ignored"]
    for text in ("1", "1,2,3", "a,b", f"0,{D}", "1.5,2"):
        state, warnings = parse({"dims": text}, schema=schema)
        assert state.extras["dims"] is None and len(warnings) == 1 and warnings[0].startswith("dims"), text
