"""Neighbour rankings under several scores, as tables, and how much the scores agree.

The search itself is :class:`latent.search.SearchIndex`; this module turns its results into the
tables the UI shows and downloads, and measures agreement between two rankings:

- top-k overlap: |A_k ∩ B_k| / k for the two top-k sets;
- Kendall's tau-b between the two scores over the union of both top-k sets (scipy), with each
  score oriented so that larger means nearer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .catalog import Catalog
from .data import CLASS_NAMES
from .scores import SCORES
from .search import SearchIndex


def neighbour_table(index: SearchIndex, catalog: Catalog, z: np.ndarray, score_names: Sequence[str], k: int,
                    s: float | np.ndarray | None = None) -> pd.DataFrame:
    """The top-k items under each score, long format.

    Returns:
        One row per (score, rank) with columns: score, rank (1-based), item, class, label, split, value
        (the score in its natural units, exactly as ``index.search`` returns it).
    """
    frames = []
    for name in score_names:
        items, values = index.search(z, score=name, k=k, s=s)
        frames.append(pd.DataFrame({
            "score": name,
            "rank": np.arange(1, len(items) + 1),
            "item": items.astype(np.int64),
            "class": [CLASS_NAMES[int(c)] for c in catalog.labels[items]],
            "label": catalog.labels[items].astype(np.int64),
            "split": np.where(catalog.is_test[items], "test", "train"),
            "value": np.asarray(values, dtype=np.float64),
        }))
    return pd.concat(frames, ignore_index=True)


def nearness(name: str, values: np.ndarray) -> np.ndarray:
    """Orient a score so that larger means nearer (negates distances and divergences)."""
    return np.asarray(values, np.float64) if SCORES[name].higher_is_nearer else -np.asarray(values, np.float64)


def topk_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """|A ∩ B| / max(|A|, |B|) for two top-k index arrays (1.0 when both are empty)."""
    size = max(len(a), len(b))
    return 1.0 if size == 0 else len(np.intersect1d(a, b)) / size


def agreement(index: SearchIndex, z: np.ndarray, score_names: Sequence[str], k: int,
              s: float | np.ndarray | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pairwise top-k overlap and Kendall's tau-b over the union of the two top-k sets.

    Returns:
        (overlap, tau): two square DataFrames indexed and columned by ``score_names``.
    """
    from scipy import stats  # only the Compare page needs it; keeps start-up light

    names = list(score_names)
    full = {n: nearness(n, index.scores_all(z, score=n, s=s)) for n in names}
    tops = {n: index.search(z, score=n, k=k, s=s)[0] for n in names}
    overlap = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    tau = overlap.copy()
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            overlap.loc[a, b] = overlap.loc[b, a] = topk_overlap(tops[a], tops[b])
            union = np.union1d(tops[a], tops[b])
            t = stats.kendalltau(full[a][union], full[b][union]).statistic if len(union) > 1 else 1.0
            tau.loc[a, b] = tau.loc[b, a] = float(t) if np.isfinite(t) else 0.0
    return overlap, tau


def nearest_with(distances: np.ndarray, n: int, keep: Sequence[np.ndarray] = ()) -> np.ndarray:
    """The ``n`` items with the smallest ``distances`` (N,) (ties by item number) together with every item of
    the ``keep`` arrays: sorted unique item numbers, e.g. what a scatter of the neighbourhood should show."""
    d = np.asarray(distances)
    if d.ndim != 1 or n < 0:
        raise ValueError(f"distances must have shape (N,) and n must be >= 0; got {d.shape} and n={n}")
    extra = [np.asarray(a, dtype=np.int64).ravel() for a in keep]
    return np.union1d(np.argsort(d, kind="stable")[:n], np.concatenate(extra) if extra else np.zeros(0, np.int64))
