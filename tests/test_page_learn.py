"""The Learn page (AppTest), step by step: the widgets drive the live values, and every number and curve shown
equals an independent computation (torch.distributions, scipy.stats, the encoder and decoder called directly)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from scipy import stats
from torch.distributions import Normal, kl_divergence

from latent.render import strip, to_uint8
from tests.apptest_support import MediaSpy, captions_with, load_expected, new_app, param, plotly_array

PAGE = "pages/learn.py"
ITEM = 4242
#: A query that is no item's mean: item 4242's mean, nudged.
Z_TEXT = "0.4,-1.1,0.7,0.3,-0.2,0.9,0,0,1.2,-0.6"


@pytest.fixture(scope="module")
def expected(real_data):
    return load_expected(real_data)


@pytest.fixture(scope="module")
def catalog64(expected):
    """The catalog as float64 torch tensors (the data the page ranks)."""
    return torch.tensor(expected.catalog.mu, dtype=torch.float64), torch.tensor(expected.catalog.sigma,
                                                                                dtype=torch.float64)


@pytest.fixture
def media(monkeypatch):
    return MediaSpy(monkeypatch)


def encoded(expected, item: int) -> tuple[np.ndarray, np.ndarray]:
    """mu and sigma of one item straight from the encoder (not from the catalog)."""
    x = torch.tensor(expected.data.images[item : item + 1], dtype=torch.float32).div(255.0).unsqueeze(1)
    with torch.no_grad():
        mu, logvar = expected.model.encode(x)
    return mu[0].double().numpy(), torch.exp(0.5 * logvar[0]).double().numpy()


def decoded(expected, z: np.ndarray) -> np.ndarray:
    """Decoder means, computed here: (B, d) -> (B, 28, 28)."""
    with torch.no_grad():
        return torch.sigmoid(expected.model.decode(torch.tensor(z, dtype=torch.float32))).squeeze(1).numpy()


def figure(at, key: str) -> dict:
    (chart,) = [c for c in at.get("plotly_chart") if c.proto.id.endswith(key)]
    return json.loads(chart.proto.spec)


def traces(at, key: str, what: str) -> list[dict]:
    return [t for t in figure(at, key)["data"] if (t.get("meta") or {}).get("what") == what]


def query_z(at) -> np.ndarray:
    return np.array([float(v) for v in param(at, "z").split(",")], np.float32)


def loglik_ranking(catalog64, z: np.ndarray, k: int) -> np.ndarray:
    mu, sigma = catalog64
    values = Normal(mu, sigma).log_prob(torch.tensor(z, dtype=torch.float64)).sum(1)
    return torch.argsort(-values, stable=True)[:k].numpy()


def metric(at, label: str) -> float:
    (m,) = [m for m in at.metric if m.label == label]
    return float(m.value)


def frame_with(at, column: str):
    (frame,) = [f.value for f in at.dataframe if column in f.value.columns or column in f.value.index]
    return frame


# ----------------------------------------------------------------------------- 1. encoding


def test_step_1_shows_the_encoders_mu_and_sigma_and_decoded_samples(expected, media):
    at = new_app(PAGE, item=str(ITEM)).run()
    assert not at.exception
    mu, sigma = encoded(expected, ITEM)
    (bars,) = traces(at, "learn_bars", "posterior")
    np.testing.assert_allclose(plotly_array(bars["y"]), mu, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(plotly_array(bars["error_y"]["array"]), sigma, rtol=1e-4, atol=1e-6)

    # The samples strip: z = mu + sigma * eps, eps from numpy's PCG64 with the link's seed (0 by default).
    eps = np.random.default_rng(0).standard_normal((8, 10))
    (_, url), = captions_with(at, r"^8 samples")
    reference = strip(decoded(expected, expected.catalog.mu[ITEM] + expected.catalog.sigma[ITEM] * eps), scale=4, gap=8)
    assert np.abs(media.pixels(url).astype(int) - reference.astype(int)).max() <= 1

    # The widget drives it: another item number.
    at.number_input(key="w_learn_item").set_value(17).run()
    assert param(at, "item") == "17"
    (bars,) = traces(at, "learn_bars", "posterior")
    np.testing.assert_allclose(plotly_array(bars["y"]), encoded(expected, 17)[0], rtol=1e-4, atol=1e-5)
    # And the class box picks a random item of that class.
    at.selectbox(key="w_learn_class").set_value(8).run()
    assert expected.catalog.labels[int(param(at, "item"))] == 8


# ----------------------------------------------------------------------------- 2. reparameterisation


def test_step_2_draws_eps_live_and_z_is_mu_plus_sigma_eps(expected):
    at = new_app(PAGE, item=str(ITEM), step="reparam").run()
    mu, sigma = expected.catalog.mu[ITEM].astype(np.float64), expected.catalog.sigma[ITEM].astype(np.float64)

    def check(seed: int) -> None:
        table = frame_with(at, "ε")
        eps = np.random.default_rng(seed).standard_normal((8, 10))[0]
        np.testing.assert_allclose(table["ε"].to_numpy(), eps, rtol=1e-12)
        np.testing.assert_allclose(table["z = μ + σε"].to_numpy(), mu + sigma * eps, rtol=1e-12)

    check(0)
    at.button(key="btn_eps_again").click().run()
    seed = int(param(at, "eps"))
    assert seed != 0
    check(seed)
    latex = " ".join(el.value for el in at.latex)
    eps0 = np.random.default_rng(seed).standard_normal(10)[0]
    assert f"= {mu[0] + sigma[0] * eps0:.3f}" in latex

    # "Use sample 1 as z" makes it the query (in the link) and moves on to step 3.
    at.button(key="btn_use_sample").click().run()
    np.testing.assert_array_equal(query_z(at), (mu + sigma * np.random.default_rng(seed).standard_normal((8, 10))[0])
                                  .astype(np.float32))
    assert param(at, "step") == "nearest" and param(at, "item") is None


# ----------------------------------------------------------------------------- 3. nearest


def test_step_3_ranks_by_log_q_and_fills_the_formula_for_the_top_item(expected, catalog64):
    at = new_app(PAGE, z=Z_TEXT, step="nearest", k="6").run()
    assert not at.exception
    z = query_z(at)
    top = loglik_ranking(catalog64, z, 6)
    shown = [int(re.search(r"#(\d+)", c).group(1)) for c, _ in captions_with(at, r"^#\d+ .* · ")]
    assert shown == top.tolist()
    mu, sigma = catalog64
    logq = Normal(mu[top[0]], sigma[top[0]]).log_prob(torch.tensor(z, dtype=torch.float64))
    (formula,) = [el.value for el in at.latex if r"\log q(z" in el.value]
    assert float(re.findall(r"=\s*(-?\d+\.\d+)", formula)[-1]) == pytest.approx(float(logq.sum()), abs=5e-4)
    terms = frame_with(at, "log N(z; μ, σ²)")
    np.testing.assert_allclose(terms["log N(z; μ, σ²)"].to_numpy(), logq.numpy(), rtol=1e-9)

    # The penalty table: each item's log q and its -sum log sigma, against torch.
    penalty = frame_with(at, "log q(z|x)")
    for label in penalty.columns:
        item = int(re.search(r"#(\d+)", label).group(1))
        ref = Normal(mu[item], sigma[item]).log_prob(torch.tensor(z, dtype=torch.float64))
        assert penalty.loc["log q(z|x)", label] == pytest.approx(float(ref.sum()), rel=1e-9)
        width = -float(torch.log(sigma[item]).sum())
        assert penalty.loc["−Σ log σ (width)", label] == pytest.approx(width, rel=1e-9)

    # The 1-D picture: both densities at z are the scipy densities of the items shown, in the dimension shown.
    j = int(at.selectbox(key="w_learn_dim").value)
    b = int(at.selectbox(key="w_learn_vs").value)
    dots = [t for t in figure(at, "learn_two_gaussians")["data"] if (t.get("meta") or {}).get("at_z")]
    for dot, item in zip(dots, (int(top[0]), b), strict=True):
        m, s = expected.catalog.mu[item, j], expected.catalog.sigma[item, j]
        assert plotly_array(dot["y"])[0] == pytest.approx(stats.norm.pdf(z[j], m, s), rel=1e-5)

    # Widgets: another comparison item, another dimension, fewer neighbours.
    other = next(o for o in at.selectbox(key="w_learn_vs").options if int(o.split()[0].strip("#")) != b)
    other_item = int(other.split()[0].strip("#"))
    at.selectbox(key="w_learn_vs").set_value(other_item).run()
    assert param(at, "vs") == str(other_item)
    assert any(f"#{other_item}" in c for c in frame_with(at, "log q(z|x)").columns)
    at.selectbox(key="w_learn_dim").set_value(8).run()
    assert param(at, "dim") == "8"
    at.slider(key="w_k").set_value(3).run()
    assert len(captions_with(at, r"^#\d+ .* · ")) == 3


# ----------------------------------------------------------------------------- 4. KL


def test_step_4_kl_closed_form_identity_and_overlap_curve(expected, catalog64):
    at = new_app(PAGE, z=Z_TEXT, step="kl", k="8", s="0.1").run()
    assert not at.exception
    z = torch.tensor(query_z(at), dtype=torch.float64)
    mu, sigma = catalog64
    top = loglik_ranking(catalog64, query_z(at), 8)

    def check(nb: int, s: float) -> None:
        query = Normal(z, torch.full_like(z, s))
        kl = float(kl_divergence(query, Normal(mu[nb], sigma[nb])).sum())
        assert metric(at, "KL") == pytest.approx(kl, abs=5e-4)
        nll = -float(Normal(mu[nb], sigma[nb]).log_prob(z).sum())
        assert metric(at, "−log q(z|x)") == pytest.approx(nll, abs=5e-4)
        assert metric(at, "c(s)") == pytest.approx(-float(query.entropy().sum()), abs=5e-4)
        assert metric(at, "Σ s²/2σ²") == pytest.approx(float((s**2 / (2 * sigma[nb] ** 2)).sum()), abs=5e-4)
        (closed,) = [el.value for el in at.latex if r"\mathrm{KL}\big" in el.value]
        assert float(re.findall(r"=\s*(-?\d+\.\d+)", closed)[-1]) == pytest.approx(kl, abs=5e-4)

    check(int(top[0]), 0.1)
    at.selectbox(key="w_learn_nb").set_value(int(top[2])).run()
    assert param(at, "nb") == str(top[2])
    check(int(top[2]), 0.1)
    at.select_slider(key="w_spread").set_value(1.0).run()
    assert float(param(at, "s")) == 1.0
    check(int(top[2]), 1.0)

    # The overlap curve: at each plotted s, top-8 by KL (torch) against top-8 by log q.
    (curve,) = traces(at, "learn_overlap", "overlap")
    spreads, overlap = plotly_array(curve["x"]), plotly_array(curve["y"])
    assert spreads[0] > spreads[-1] and len(spreads) >= 8
    for s, value in zip(spreads, overlap, strict=True):
        kl_all = kl_divergence(Normal(z, torch.full_like(z, float(s))), Normal(mu, sigma)).sum(1)
        kl_top = torch.argsort(kl_all, stable=True)[:8].numpy()
        assert value == pytest.approx(len(set(kl_top) & set(top)) / 8), s
    assert overlap[-1] == 1.0


# ----------------------------------------------------------------------------- 5. prior vs aggregate posterior


def test_step_5_histograms_aggregate_and_prior_are_the_catalogs(expected, catalog64):
    at = new_app(PAGE, step="prior").run()
    assert not at.exception
    fig = figure(at, "learn_prior")
    mu_np = expected.catalog.mu.astype(np.float64)
    sigma_np = expected.catalog.sigma.astype(np.float64)
    n = len(mu_np)
    for t in fig["data"]:
        meta = t["meta"]
        j, x, y = meta["dim"], plotly_array(t["x"]).astype(np.float64), plotly_array(t["y"]).astype(np.float64)
        if meta["what"] == "histogram":
            width = float(t["width"])
            edges = np.append(x - width / 2, x[-1] + width / 2)
            counts, _ = np.histogram(mu_np[:, j], bins=edges)
            np.testing.assert_allclose(y, counts / (n * width), rtol=1e-9)
        elif meta["what"] == "prior":
            np.testing.assert_allclose(y, stats.norm.pdf(x), rtol=1e-9)
        elif meta["what"] == "aggregate":
            for g in range(0, len(x), 40):
                assert y[g] == pytest.approx(stats.norm.pdf(x[g], mu_np[:, j], sigma_np[:, j]).mean(), rel=1e-6)
    mu, sigma = catalog64
    kl = kl_divergence(Normal(mu, sigma), Normal(0.0, 1.0)).mean(0).numpy()
    titles = [a["text"] for a in fig["layout"]["annotations"] if a["text"].startswith("z")]
    assert [("unused" in title) for title in titles] == [bool(v <= 0.01) for v in kl]
    assert at.metric[0].value == f"{int((kl > 0.01).sum())} of 10"


# ----------------------------------------------------------------------------- 6. uncertainty on the map


def test_step_6_ellipses_are_the_encoders_sigma_and_coverage_is_the_chi2_test(expected, catalog64):
    at = new_app(PAGE, z=Z_TEXT, step="uncertainty", axes="2,5", k="4").run()
    assert not at.exception
    z = query_z(at)
    top = loglik_ranking(catalog64, z, 4)
    ellipses = traces(at, "learn_map", "ellipse")
    assert sorted({e["meta"]["item"] for e in ellipses}) == sorted(top.tolist())
    assert sorted(e["meta"]["r"] for e in ellipses) == [1.0] * 4 + [2.0] * 4
    for e in ellipses:
        item, r = e["meta"]["item"], e["meta"]["r"]
        mu, sigma = encoded(expected, item)
        x, y = plotly_array(e["x"]).astype(np.float64), plotly_array(e["y"]).astype(np.float64)
        assert (x.max() - x.min()) / 2 == pytest.approx(r * sigma[2], rel=1e-4)
        assert (y.max() - y.min()) / 2 == pytest.approx(r * sigma[5], rel=2e-3)  # the polygon misses the pole a bit
        assert (x.max() + x.min()) / 2 == pytest.approx(mu[2], abs=1e-4 + 1e-4 * abs(mu[2]))
        assert f"{100 * (1 - math.exp(-r * r / 2)):.0f}%" in e["name"]  # 39% and 86%: the 2-D masses
    (star,) = traces(at, "learn_map", "query")
    assert [plotly_array(star["x"])[0], plotly_array(star["y"])[0]] == pytest.approx([z[2], z[5]])
    assert not traces(at, "learn_map", "covering")

    # The coverage toggle: items whose squared Mahalanobis distance is within the chi-squared(10) quantile.
    mu, sigma = catalog64
    m2 = (((torch.tensor(z, dtype=torch.float64) - mu) / sigma) ** 2).sum(1).numpy()
    at.toggle(key="w_learn_cover").set_value(True).run()
    assert param(at, "cover") == "1"
    for level in ("0.95", "0.5"):
        if level != "0.95":
            at.selectbox(key="w_learn_level").set_value(level).run()
            assert param(at, "level") == level
        count = int((m2 <= stats.chi2.ppf(float(level), 10)).sum())
        (cover,) = traces(at, "learn_map", "covering")
        assert len(plotly_array(cover["x"])) == count
        assert any(f"{count:,} item" in m.value for m in at.markdown)

    # Choosing the x axis equal to the y axis swaps them.
    at.selectbox(key="w_learn_dx").set_value(5).run()
    assert param(at, "axes") == "5,2"


# ----------------------------------------------------------------------------- 7. interpolation


def test_step_7_straight_frames_are_decoded_along_the_line_and_the_geodesic_keeps_the_ends(expected, media):
    at = new_app(PAGE, item=str(ITEM), step="interpolate").run()
    assert not at.exception
    mu = expected.catalog.mu.astype(np.float64)
    # Default end: the most typical item (mean nearest its class's average mean) of the partner class.
    partner = (int(expected.catalog.labels[ITEM]) + 5) % 10
    members = np.flatnonzero(expected.catalog.labels == partner)
    target = int(members[np.argmin(((mu[members] - mu[members].mean(0)) ** 2).sum(1))])
    assert any(f"#{target}" in m.value for m in at.markdown)

    def check_frames(end: int) -> None:
        fig = figure(at, "learn_animation")
        ts = np.linspace(0, 1, len(fig["frames"]))
        points = (1 - ts[:, None]) * mu[ITEM] + ts[:, None] * mu[end]
        reference = decoded(expected, points)
        for frame, ref in zip(fig["frames"], reference, strict=True):
            np.testing.assert_allclose(plotly_array(frame["data"][0]["z"]), ref, atol=1e-5)

    check_frames(target)
    at.number_input(key="w_learn_to").set_value(10).run()
    assert param(at, "to") == "10"
    check_frames(10)

    # The geodesic, on request: its strip starts and ends on the same garments as the straight one.
    assert not captions_with(at, "^Geodesic")
    at.button(key="btn_geodesic").click().run()
    assert param(at, "geo") == "1"
    (caption, geo_url), = captions_with(at, "^Geodesic")
    (_, line_url), = captions_with(at, "^Straight line")
    geo, line = media.pixels(geo_url), media.pixels(line_url)
    tile = geo.shape[0]  # square tiles
    np.testing.assert_array_equal(geo[:, :tile], line[:, :tile])
    np.testing.assert_array_equal(geo[:, -tile:], line[:, -tile:])
    lengths = [float(v) for v in re.findall(r"length (\d+\.\d+)", caption)]
    (line_caption,) = [c for c, _ in captions_with(at, "^Straight line")]
    assert lengths[0] <= float(re.findall(r"length (\d+\.\d+)", line_caption)[0]) + 0.01


def test_navigation_walks_the_steps_and_keeps_them_in_the_link():
    at = new_app(PAGE).run()
    assert param(at, "step") is None  # the first step is the default
    at.button(key="btn_learn_next").click().run()
    assert param(at, "step") == "reparam"
    at.radio(key="w_learn_step").set_value("interpolate").run()
    assert param(at, "step") == "interpolate"
    assert not [b for b in at.button if b.key == "btn_learn_next"]
    at.button(key="btn_learn_prev").click().run()
    assert param(at, "step") == "uncertainty"
    bad = new_app(PAGE, step="nowhere", axes="3,3").run()
    assert param(bad, "step") is None and param(bad, "axes") is None
    assert "unknown step 'nowhere'" in bad.warning[0].value and "axes='3,3'" in bad.warning[0].value


def test_decoded_images_in_the_sidebar_and_step_3_are_the_decoder_mean(expected, media):
    at = new_app(PAGE, z=Z_TEXT, step="nearest").run()
    (_, url), = captions_with(at, "^The query z, decoded")
    image = media.pixels(url)
    scale = image.shape[0] // 28
    reference = np.repeat(np.repeat(to_uint8(decoded(expected, query_z(at)[None])[0]), scale, 0), scale, 1)
    assert np.abs(image.astype(int) - reference.astype(int)).max() <= 1
