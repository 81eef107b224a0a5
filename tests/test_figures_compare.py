"""ui/figures/compare.py: the agreement heatmaps and the distance-likelihood scatter."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ui.figures.compare import agreement_heatmap, distance_likelihood


def test_agreement_heatmap_shows_the_table_with_its_names():
    names = ["likelihood", "kl", "euclidean"]
    frame = pd.DataFrame([[1.0, 0.5, 0.25], [0.5, 1.0, 0.125], [0.25, 0.125, 1.0]], index=names, columns=names)
    fig = agreement_heatmap(frame, "Top-8 overlap", -1)
    heat = fig.data[0]
    np.testing.assert_array_equal(heat.z, frame.to_numpy())
    assert list(heat.x) == names and list(heat.y) == names and (heat.zmin, heat.zmax) == (-1, 1)
    assert heat.text[1][2] == 0.12  # two decimals on the cells (0.125 rounds to even)
    assert fig.layout.title.text == "Top-8 overlap"


def test_distance_likelihood_places_each_item_at_its_two_scores():
    rng = np.random.default_rng(4)
    euclid, loglik = rng.uniform(0, 3, 100), rng.normal(0, 5, 100)
    shown = np.array([2, 5, 9, 40])
    tops = [(np.array([5, 9]), "top-k likelihood", "diamond-open"), (np.array([40]), "top-k Euclidean", "square-open")]
    fig = distance_likelihood(euclid, loglik, shown, np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 1, 2, 3]), tops)
    items = fig.data[0]
    np.testing.assert_array_equal(np.c_[items.x, items.y], np.c_[euclid[shown], loglik[shown]])
    np.testing.assert_array_equal(np.asarray(items.customdata)[:, 0], shown)
    assert [t.name for t in fig.data] == ["items", "top-k likelihood", "top-k Euclidean"]
    np.testing.assert_array_equal(fig.data[1].x, euclid[[5, 9]])
    assert fig.data[2].marker.symbol == "square-open"
