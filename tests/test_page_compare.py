"""The Compare page (AppTest): every score's top-k, and the agreement shown, against independent computations."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import stats

from latent.scores import SCORES
from tests.apptest_support import captions_with, load_expected, new_app, param, plotly_array

PAGE = "pages/compare.py"


@pytest.fixture(scope="module")
def expected(real_data):
    return load_expected(real_data)


def test_every_score_is_ranked_and_matches_the_index(expected):
    at = new_app(PAGE, z="1,-1,0.5,0,2,0,0,0,-0.5,0.25", k="6").run()
    assert not at.exception
    z = np.array([float(v) for v in param(at, "z").split(",")], np.float32)
    strips = [c for c, _ in captions_with(at, r"^#\d+ ")]
    assert len(strips) == len(SCORES)
    for caption, name in zip(strips, SCORES, strict=True):
        shown = [int(v) for v in re.findall(r"#(\d+)", caption)]
        items, _ = expected.index.search(z, score=name, k=6)
        assert shown == items.tolist(), name
    assert [m.value for m in at.markdown if m.value.startswith("**") and m.value.endswith("**")] == \
        [f"**{n}**" for n in SCORES]


def test_agreement_heatmaps_equal_brute_force(expected):
    k = 10
    at = new_app(PAGE, z="0,0,1,1,0,0,0,0,0,0", k=str(k)).run()
    z = np.array([float(v) for v in param(at, "z").split(",")], np.float32)
    charts = {c.proto.id.split("-")[-1]: c for c in at.get("plotly_chart")}
    import json

    overlap = plotly_array(json.loads(charts["overlap"].proto.spec)["data"][0]["z"]).astype(float)
    tau = plotly_array(json.loads(charts["tau"].proto.spec)["data"][0]["z"]).astype(float)
    names = list(SCORES)
    mu, sigma = expected.catalog.mu.astype(np.float64), expected.catalog.sigma.astype(np.float64)
    # Brute force, in float64, from the formulas (not from the index).
    s = np.maximum(np.median(sigma, axis=0), 1e-3)
    full = {n: SCORES[n].fn(z.astype(np.float64), mu, sigma, s) for n in names}
    near = {n: full[n] if SCORES[n].higher_is_nearer else -full[n] for n in names}
    top = {n: np.lexsort((np.arange(len(mu)), -near[n]))[:k] for n in names}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i == j:
                continue
            assert overlap[i, j] == pytest.approx(len(np.intersect1d(top[a], top[b])) / k)
            union = np.union1d(top[a], top[b])
            assert tau[i, j] == pytest.approx(stats.kendalltau(near[a][union], near[b][union]).statistic, abs=1e-9)
