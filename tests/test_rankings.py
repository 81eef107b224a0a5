"""latent/rankings.py: the helpers the Compare page draws with, against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from latent.rankings import nearest_with


def test_nearest_with_is_the_n_smallest_plus_the_kept_items():
    rng = np.random.default_rng(3)
    distances = rng.integers(0, 30, 500).astype(float)  # many ties
    keep = (np.array([499, 7]), np.array([7, 250]))
    shown = nearest_with(distances, 40, keep)
    by_distance = sorted(range(500), key=lambda i: (distances[i], i))[:40]  # ties by item number
    assert shown.tolist() == sorted(set(by_distance) | {499, 7, 250})
    assert nearest_with(distances, 0).size == 0
    assert nearest_with(distances, 10_000).tolist() == list(range(500))


def test_nearest_with_rejects_bad_input():
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        nearest_with(np.zeros((3, 2)), 2)
