"""Tests for latent/projection.py: placement against brute force, the disk cache, and UMAP quality floors.

Only the ``umap`` tests fit umap-learn, once per module on a small seeded blob set (the first fit in a
process pays numba's start-up; a few tens of seconds on a shared 2-core machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial.distance import cdist

from latent import projection
from latent.projection import (
    MapLoad,
    MapProjector,
    NotFittedError,
    load_map,
    load_or_fit,
    measure_placement_agreement,
    place_points,
    placement_agreement,
    save_map,
)

REPO = Path(__file__).resolve().parent.parent
KEY = "ckpt:abc123|data:def456"


def reference_placement(z: np.ndarray, catalog: np.ndarray, embedding: np.ndarray, k: int, power: float) -> np.ndarray:
    """Brute force, written independently: scipy distances, stable argsort, plain 1/d^p weights."""
    z = np.atleast_2d(np.asarray(z, dtype=np.float64))
    d = cdist(z, np.asarray(catalog, dtype=np.float64))           # (B, N)
    out = np.empty((len(z), 2))
    for b in range(len(z)):
        order = np.argsort(d[b], kind="stable")[:k]
        dist = d[b, order]
        pos = np.asarray(embedding, dtype=np.float64)[order]
        if dist[0] == 0.0:
            out[b] = pos[dist == 0.0].mean(axis=0)
        else:
            w = 1.0 / dist**power
            out[b] = (w[:, None] * pos).sum(axis=0) / w.sum()
    return out


def blobs(n: int, seed: int, n_classes: int = 6, d: int = 10, spread: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded Gaussian clusters in d dimensions: (n, d) float32 points and (n,) int labels."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, spread, size=(n_classes, d))
    labels = rng.integers(0, n_classes, size=n)
    return (centers[labels] + rng.normal(size=(n, d))).astype(np.float32), labels


@pytest.fixture(scope="module")
def synthetic():
    """A precomputed 'map' for umap-free tests: random catalog (400, 10) and positions (400, 2)."""
    rng = np.random.default_rng(7)
    mu = rng.normal(size=(400, 10)).astype(np.float32)
    emb = rng.normal(scale=3.0, size=(400, 2)).astype(np.float32)
    return mu, emb


# --------------------------------------------------------------------------- placement


@pytest.mark.parametrize("k", [1, 3, 10, 25])
@pytest.mark.parametrize("power", [0.0, 1.0, 2.0])
def test_placement_matches_bruteforce_weighted_knn(synthetic, k, power):
    mu, emb = synthetic
    z = np.random.default_rng(k).normal(size=(30, 10))
    got = place_points(z, mu, emb, k=k, power=power)
    want = reference_placement(z, mu, emb, k, power)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    proj = MapProjector.from_embedding(mu, emb, placement_k=k, placement_power=power)
    np.testing.assert_allclose(proj.place(z), want, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(z=hnp.arrays(np.float64, (3, 10), elements=st.floats(-6, 6)), k=st.integers(1, 12))
def test_placement_property_against_bruteforce_and_inside_neighbour_hull(synthetic, z, k):
    mu, emb = synthetic
    got = place_points(z, mu, emb, k=k)
    np.testing.assert_allclose(got, reference_placement(z, mu, emb, k, 1.0), rtol=1e-5, atol=1e-5)
    # A convex combination of the k neighbours' positions lies inside their bounding box.
    order = np.argsort(cdist(z, mu), axis=1, kind="stable")[:, :k]
    lo, hi = emb[order].min(axis=1), emb[order].max(axis=1)
    assert np.all(got >= lo - 1e-5) and np.all(got <= hi + 1e-5)


def test_placing_a_catalog_point_returns_its_own_position(synthetic):
    mu, emb = synthetic
    proj = MapProjector.from_embedding(mu, emb)
    np.testing.assert_array_equal(proj.place(mu[:50]), emb[:50])
    np.testing.assert_array_equal(proj.place(mu[17]), emb[17])


def test_exact_duplicates_in_catalog_average_their_positions():
    mu = np.array([[0, 0], [1, 1], [1, 1], [5, 5]], dtype=np.float32)
    emb = np.array([[0, 0], [2, 0], [4, 0], [9, 9]], dtype=np.float32)
    np.testing.assert_array_equal(place_points([1, 1], mu, emb, k=3), [3.0, 0.0])


def test_tiny_distances_do_not_overflow():
    # 1/d^4 overflows float64 here; the weights' ratios do not: 1 : 9^-4 : ~0.
    mu = np.array([[0.0, 0.0], [1e-100, 0.0], [1.0, 0.0]])
    emb = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    got = place_points(np.array([1e-101, 0.0]), mu, emb, k=3, power=4.0)
    w = np.array([1.0, 9.0**-4, 0.0])
    np.testing.assert_allclose(got, [(w @ emb[:, 0]) / w.sum(), 0.0], rtol=1e-6)


def test_placement_is_equivariant_to_shifting_the_map(synthetic):
    mu, emb = synthetic
    z = np.random.default_rng(3).normal(size=(10, 10))
    shift = np.array([100.0, -50.0], dtype=np.float32)
    np.testing.assert_allclose(place_points(z, mu, emb + shift), place_points(z, mu, emb) + shift, atol=1e-4)


def test_shapes_dtypes_and_k_larger_than_catalog(synthetic):
    mu, emb = synthetic
    proj = MapProjector.from_embedding(mu[:5], emb[:5], placement_k=50)
    one = proj.place(np.zeros(10))
    many = proj.place(np.zeros((4, 10), dtype=np.float32))
    assert one.shape == (2,) and many.shape == (4, 2)
    assert one.dtype == np.float32 and many.dtype == np.float32
    np.testing.assert_allclose(one, reference_placement(np.zeros(10), mu[:5], emb[:5], 5, 1.0)[0], rtol=1e-5)
    assert proj.place(np.zeros((0, 10))).shape == (0, 2)


@pytest.mark.parametrize(
    "z, message",
    [
        (np.zeros(9), "shape"),
        (np.zeros((2, 11)), "shape"),
        (np.zeros((2, 2, 10)), "shape"),
        (np.array([np.nan] + [0.0] * 9), "finite"),
        (np.array([np.inf] + [0.0] * 9), "finite"),
        ("abc", "numeric"),
    ],
)
def test_bad_queries_raise_clear_errors(synthetic, z, message):
    mu, emb = synthetic
    proj = MapProjector.from_embedding(mu, emb)
    with pytest.raises(ValueError, match=message):
        proj.place(z)


def test_bad_parameters_and_unfitted_use_raise():
    with pytest.raises(NotFittedError, match="not fitted"):
        MapProjector().place(np.zeros(10))
    with pytest.raises(ValueError, match="placement_k must be an integer >= 1"):
        MapProjector.from_embedding(np.zeros((3, 2)), np.zeros((3, 2)), placement_k=0)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        place_points(np.zeros(2), np.zeros((3, 2)), np.zeros((3, 2)), k=0)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        place_points(np.zeros(2), np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="finite"):
        MapProjector.from_embedding(np.array([[np.nan, 0.0]] * 3), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"unknown parameter 'n_neighbours'.*n_neighbors"):
        MapProjector().set_params(n_neighbours=5)
    with pytest.raises(ValueError, match="more rows than n_neighbors"):
        MapProjector(n_neighbors=15).fit(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="min_dist"):
        MapProjector(min_dist=-1.0).fit(np.zeros((30, 3)))


def test_inputs_are_not_mutated_and_fitted_arrays_are_read_only(synthetic):
    mu, emb = synthetic
    mu_copy, emb_copy = mu.copy(), emb.copy()
    z = np.ones((2, 10))
    proj = MapProjector.from_embedding(mu, emb)
    proj.place(z)
    place_points(z, mu, emb)
    np.testing.assert_array_equal(mu, mu_copy)
    np.testing.assert_array_equal(emb, emb_copy)
    np.testing.assert_array_equal(z, np.ones((2, 10)))
    assert not proj.embedding_.flags.writeable and not proj.mu_.flags.writeable
    assert not np.shares_memory(proj.mu_, mu) and not np.shares_memory(proj.embedding_, emb)


def test_estimator_contract():
    from sklearn.base import clone

    proj = MapProjector(n_neighbors=7, placement_k=4)
    assert proj.get_params()["n_neighbors"] == 7
    assert not [name for name in vars(proj) if name.endswith("_")], "__init__ must not set fitted state"
    copy = clone(proj)
    assert copy.get_params() == proj.get_params() and copy is not proj
    assert proj.set_params(min_dist=0.3) is proj and proj.min_dist == 0.3
    assert "n_neighbors=7" in repr(proj)


def test_placement_at_70k_matches_brute_force():
    """The catalog size the app uses, where placement computes distances in blocks; its latency is measured
    in bench/bench_geometry.py ("kNN placement of one query on the UMAP map")."""
    rng = np.random.default_rng(0)
    # float32 like the stored catalog, so the reference sees the very same numbers.
    mu, emb = rng.normal(size=(70_000, 10)).astype(np.float32), rng.normal(size=(70_000, 2)).astype(np.float32)
    proj = MapProjector.from_embedding(mu, emb)
    queries = rng.normal(size=(25, 10))
    expected = reference_placement(queries, mu, emb, proj.placement_k, proj.placement_power)
    # Both sides compute in float64 from the same inputs, in different orders (einsum against scipy's cdist),
    # which agree to ~1e-14; place() then rounds its result to float32, half an ulp: 2**-24 relative, below
    # 3e-7 for these positions (|x| < 5). 1e-6 covers that and is far below the 0.1-scale move that one wrong
    # neighbour among the ten would cause.
    np.testing.assert_allclose(proj.place(queries), expected, rtol=0, atol=1e-6)
    for z, want in zip(queries[:3], expected[:3], strict=True):  # one query at a time, a (1, d) block
        np.testing.assert_allclose(proj.place(z), want, rtol=0, atol=1e-6)


def test_importing_the_module_does_not_import_umap():
    code = (
        "import sys, latent.projection, latent.urlstate; "
        "bad = [m for m in ('umap', 'numba', 'pynndescent', 'streamlit', 'sklearn') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"importing latent.projection imported {done.stdout.strip()} {done.stderr[-500:]}"


# --------------------------------------------------------------------------- disk cache


def test_save_then_load_round_trips(tmp_path, synthetic):
    mu, emb = synthetic
    proj = MapProjector.from_embedding(mu, emb, n_neighbors=12, min_dist=0.2, seed=3, placement_k=7)
    path = save_map(proj, tmp_path / "sub" / "umap.npz", KEY)
    assert [p.name for p in path.parent.iterdir()] == ["umap.npz"], "a temporary file was left behind"
    result = load_map(path, mu, KEY)
    assert result.status == "loaded" and result.ok, result.reason
    loaded = result.projector
    np.testing.assert_array_equal(loaded.embedding_, emb)
    assert loaded.embedding_.dtype == np.float32
    assert loaded.embedding_params() == proj.embedding_params()
    z = np.random.default_rng(1).normal(size=(5, 10))
    # Placement parameters come from `like`, the embedding from the file.
    like = MapProjector(n_neighbors=12, min_dist=0.2, seed=3, placement_k=7)
    np.testing.assert_array_equal(load_map(path, mu, KEY, like=like).projector.place(z), proj.place(z))


def test_file_is_plain_npz_without_pickles(tmp_path, synthetic):
    mu, emb = synthetic
    path = save_map(MapProjector.from_embedding(mu, emb), tmp_path / "umap.npz", KEY)
    with np.load(path, allow_pickle=False) as npz:
        assert npz["embedding"].shape == (400, 2)
        assert str(npz["key"][()]) == KEY
        assert json.loads(str(npz["params"][()]))["n_neighbors"] == 15
        assert all(npz[name].dtype != object for name in npz.files)


@pytest.mark.parametrize(
    "change, status, words",
    [
        (lambda mu, key, like: (mu, "another-key", like), "stale", "key"),
        (lambda mu, key, like: (mu[:-1], key, like), "stale", "399 points"),
        (lambda mu, key, like: (mu[:, :9], key, like), "stale", "d=9"),
        (lambda mu, key, like: (mu, key, MapProjector(n_neighbors=30)), "stale", "made with"),
    ],
)
def test_stale_files_are_refused_with_a_reason(tmp_path, synthetic, change, status, words):
    mu, emb = synthetic
    path = save_map(MapProjector.from_embedding(mu, emb), tmp_path / "umap.npz", KEY)
    mu2, key2, like2 = change(mu, KEY, None)
    result = load_map(path, mu2, key2, like=like2)
    assert result.status == status and result.projector is None
    assert words in result.reason and str(path) in result.reason


def _write(path: Path, **arrays) -> Path:
    with open(path, "wb") as out:
        np.savez(out, **arrays)
    return path


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.write_bytes(b""),
        lambda p: p.write_bytes(b"not a zip file at all"),
        lambda p: p.write_bytes(os.urandom(4096)),
        lambda p: _write(p, embedding=np.zeros((400, 2), np.float32)),  # lacks the other fields
        lambda p: _write(p, format=np.array([{"a": 1}], dtype=object), version=1, key=KEY, params="{}",
                         n_features=10, umap_version="x", embedding=np.zeros((400, 2))),  # a pickle
    ],
    ids=["empty", "text", "random-bytes", "missing-fields", "pickled-object"],
)
def test_corrupt_files_are_reported_not_raised(tmp_path, synthetic, make):
    mu, _ = synthetic
    path = tmp_path / "umap.npz"
    make(path)
    result = load_map(path, mu, KEY)
    assert result.status == "corrupt" and result.projector is None, result
    assert str(path) in result.reason


def test_truncated_and_nonfinite_files_are_corrupt(tmp_path, synthetic):
    mu, emb = synthetic
    good = save_map(MapProjector.from_embedding(mu, emb), tmp_path / "good.npz", KEY)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert load_map(truncated, mu, KEY).status == "corrupt"
    with np.load(good, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["embedding"] = arrays["embedding"].copy()
    arrays["embedding"][3, 1] = np.nan
    assert load_map(_write(tmp_path / "nan.npz", **arrays), mu, KEY).status == "corrupt"


def test_missing_file(tmp_path, synthetic):
    mu, _ = synthetic
    result = load_map(tmp_path / "nope.npz", mu, KEY)
    assert result == MapLoad("missing", f"{tmp_path / 'nope.npz'} does not exist", tmp_path / "nope.npz")


def test_failed_save_leaves_old_file_intact_and_no_temp(tmp_path, synthetic, monkeypatch):
    mu, emb = synthetic
    path = save_map(MapProjector.from_embedding(mu, emb), tmp_path / "umap.npz", KEY)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(projection.np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        save_map(MapProjector.from_embedding(mu, emb * 2), path, "other")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["umap.npz"]


def test_save_rejects_empty_key_and_unfitted(tmp_path, synthetic):
    mu, emb = synthetic
    with pytest.raises(ValueError, match="key must be a non-empty string"):
        save_map(MapProjector.from_embedding(mu, emb), tmp_path / "m.npz", "")
    with pytest.raises(NotFittedError):
        save_map(MapProjector(), tmp_path / "m.npz", KEY)


def test_a_70k_map_loads_again_from_its_file(tmp_path):
    """Its warm load time is measured in bench/bench_geometry.py ("warm load of the 70,000-point UMAP map")."""
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(70_000, 10)).astype(np.float32)
    emb = rng.normal(size=(70_000, 2)).astype(np.float32)
    path = save_map(MapProjector.from_embedding(mu, emb), tmp_path / "umap.npz", KEY)
    for _ in range(2):  # cold, then warm (page cache)
        result = load_map(path, mu, KEY)
        assert result.ok, result.reason
        np.testing.assert_array_equal(result.projector.embedding_, emb)  # stored bytes, read back: no arithmetic


def test_load_or_fit_prefers_a_valid_shipped_file_and_never_writes_it(tmp_path, synthetic):
    mu, emb = synthetic
    shipped = save_map(MapProjector.from_embedding(mu, emb), tmp_path / "models" / "umap.npz", KEY)
    stamp = shipped.stat().st_mtime_ns
    cache = tmp_path / "cache" / "umap.npz"
    result = load_or_fit(mu, KEY, cache, also_try=[shipped])
    assert result.status == "loaded" and result.path == shipped
    assert shipped.stat().st_mtime_ns == stamp and not cache.exists()


# --------------------------------------------------------------------------- UMAP itself (slow: fits umap-learn)


@pytest.fixture(scope="module")
def fitted_blobs():
    """One seeded fit on 800 clustered points; 200 more are held out."""
    x, y = blobs(1000, seed=0)
    stages: list[tuple[str, int, int | None]] = []
    proj = MapProjector(seed=0, keep_umap=True).fit(x[:800], progress=lambda *a: stages.append(a))
    return proj, x, y, stages


@pytest.mark.slow
def test_umap_map_is_trustworthy(fitted_blobs):
    from sklearn.manifold import trustworthiness

    proj, x, _, _ = fitted_blobs
    assert proj.embedding_.shape == (800, 2) and proj.embedding_.dtype == np.float32
    trust = trustworthiness(x[:800], proj.embedding_, n_neighbors=10)
    assert trust >= 0.9, f"Insufficiently trustworthy embedding: trustworthiness {trust:.3f} < 0.9"


@pytest.mark.slow
def test_fit_reports_stages_in_order(fitted_blobs):
    *_, stages = fitted_blobs
    assert [s[1] for s in stages] == [0, 1, 2, 3] and all(s[2] == 3 for s in stages)
    assert "ready" in stages[-1][0]


@pytest.mark.slow
def test_placement_agrees_with_umap_transform_on_heldout(fitted_blobs):
    proj, x, y, _ = fitted_blobs
    report = placement_agreement(proj, x[800:], labels_train=y[:800], labels_heldout=y[800:])
    lo, hi = proj.embedding_.min(axis=0).astype(np.float64), proj.embedding_.max(axis=0).astype(np.float64)
    assert report["extent"] == pytest.approx(float(np.hypot(*(hi - lo))))
    assert report["median_offset_rel"] == pytest.approx(report["median_offset"] / report["extent"])
    assert report["n_heldout"] == 200 and report["n_train"] == 800
    assert 0.0 <= report["within_transform_radius"] <= 1.0 and 0.0 <= report["map_neighbour_overlap"] <= 1.0
    # Well-separated clusters: placement must land in the same cluster as transform, close by.
    assert report["class_agreement"] >= 0.95, f"placement and transform disagree on class: {report}"
    assert report["median_offset_rel"] <= 0.05, f"placement is far from transform: {report}"
    json.dumps(report)  # plain numbers, ready for the README


@pytest.mark.slow
def test_seeded_fit_is_reproducible_and_cli_writes_json(tmp_path, capsys):
    x, y = blobs(150, seed=1)
    a = MapProjector(seed=5, n_epochs=30).fit(x).embedding_
    b = MapProjector(seed=5, n_epochs=30).fit(x).embedding_
    np.testing.assert_array_equal(a, b)

    np.save(tmp_path / "mu.npy", x)
    np.save(tmp_path / "labels.npy", y)
    out = tmp_path / "agreement.json"
    code = projection.main([str(tmp_path / "mu.npy"), "--labels", str(tmp_path / "labels.npy"),
                            "--n-heldout", "30", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["n_heldout"] == 30 and report["n_train"] == 120 and "fit_s" in report and "class_agreement" in report
    assert "[3/3]" in capsys.readouterr().out


@pytest.mark.slow
def test_load_or_fit_rebuilds_stale_cache_and_saves(tmp_path):
    x, _ = blobs(120, seed=2)
    cache = tmp_path / "umap.npz"
    cache.write_bytes(b"garbage")
    like = MapProjector(n_neighbors=8, n_epochs=20)
    result = load_or_fit(x, KEY, cache, like=like)
    assert result.status == "fitted" and result.projector is not None
    assert "corrupt" in result.reason and "saved" in result.reason
    again = load_or_fit(x, KEY, cache, like=like)
    assert again.status == "loaded"
    np.testing.assert_array_equal(again.projector.embedding_, result.projector.embedding_)


@pytest.mark.slow
def test_measure_placement_agreement_requires_nothing_but_arrays():
    x, _y = blobs(160, seed=3)
    report = measure_placement_agreement(x[:130], x[130:], like=MapProjector(n_neighbors=8, n_epochs=30))
    assert report["n_heldout"] == 30 and "class_agreement" not in report


def test_placement_agreement_needs_the_umap_model(synthetic):
    mu, emb = synthetic
    with pytest.raises(ValueError, match="keep_umap=True"):
        placement_agreement(MapProjector.from_embedding(mu, emb), mu[:3])
