"""Tests of latent/geodesic.py: continuous geodesics, the catalog kNN graph and the slice grid graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import dijkstra

from latent.geodesic import (
    LatentGraph,
    continuous_geodesic,
    grid_geodesic,
    resample_polyline,
    straight_line,
)
from latent.geometry import (
    MEASURES,
    Decoder,
    curve_length,
    decode_grid,
    decode_means,
    fisher_rao_metric,
    make_slice,
    torch_threads,
    vae_decoder,
)
from latent.model import VAE
from tests.geometry_oracles import (
    cylinder,
    great_circle,
    linear,
    mlp_logits,
    orthonormal,
    readonly,
    sphere,
    sphere_point,
)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


# --------------------------------------------------------------------------- continuous geodesic


def test_linear_geodesic_is_the_straight_line_from_a_bent_start():
    dec, A = linear()
    rng = np.random.default_rng(0)
    za, zb = readonly(rng.standard_normal(10)), readonly(rng.standard_normal(10))
    t = np.linspace(0, 1, 20)[:, None]
    bent = readonly((1 - t) * za + t * zb + np.sin(np.pi * t) * rng.standard_normal(10))
    res = continuous_geodesic(dec, za, zb, n_points=16, init=bent)
    exact = np.linalg.norm(A @ (zb - za))
    assert curve_length(dec, bent) > 1.2 * exact  # the start really is bent
    assert res.length == pytest.approx(exact, rel=1e-6)
    assert res.straight_length == pytest.approx(exact, rel=1e-12)
    # the decoded points sit on the decoded straight line, evenly spaced
    deviation = np.linalg.norm((res.curve - straight_line(za, zb, 16)) @ A.T, axis=1)
    assert deviation.max() < 1e-3 * exact
    assert np.array_equal(res.curve[0], za) and np.array_equal(res.curve[-1], zb)


@pytest.fixture(scope="module")
def sphere_runs():
    dec = sphere()
    za, zb, zc = np.array([0.6, -1.0]), np.array([2.3, 1.2]), np.array([1.2, 2.4])
    with torch_threads(1):
        runs = {
            "ab": continuous_geodesic(dec, za, zb, n_points=32),
            "ba": continuous_geodesic(dec, zb, za, n_points=32),
            "ab64": continuous_geodesic(dec, za, zb, n_points=64),
            "bc": continuous_geodesic(dec, zb, zc, n_points=32),
            "ac": continuous_geodesic(dec, za, zc, n_points=32),
        }
    return dec, (za, zb, zc), runs


def test_sphere_geodesic_is_the_great_circle(sphere_runs):
    dec, (za, zb, _), runs = sphere_runs
    res = runs["ab"]
    gc = great_circle(za, zb)
    assert res.length == pytest.approx(gc, rel=1e-3)
    assert res.length <= res.straight_length
    assert res.straight_length > 1.01 * gc  # the straight latent line is measurably longer here
    chord = np.linalg.norm(sphere_point(za[None]) - sphere_point(zb[None]))
    assert chord <= res.length
    # the same check on the 4x resampled curves
    assert curve_length(dec, res.curve, subdivide=4) <= curve_length(dec, straight_line(za, zb, 32), subdivide=4)
    # constant speed: L^2 ~ E
    assert res.energy == pytest.approx(res.length**2, rel=1e-3)
    # every point lies on the great circle through the two end points
    n = np.cross(sphere_point(za[None])[0], sphere_point(zb[None])[0])
    assert np.abs(sphere_point(res.curve) @ n / np.linalg.norm(n)).max() < 2e-3


def test_sphere_geodesic_is_symmetric_stable_in_K_and_a_metric(sphere_runs):
    _, _, runs = sphere_runs
    assert runs["ba"].length == pytest.approx(runs["ab"].length, rel=1e-2)
    assert runs["ab64"].length == pytest.approx(runs["ab"].length, rel=1e-2)
    assert runs["ac"].length <= 1.02 * (runs["ab"].length + runs["bc"].length)


def test_cylinder_geodesic_length_is_the_arc_not_the_chord():
    R = 0.5
    dec = cylinder(R=R)
    za, zb = np.array([0.0, 0.0]), np.array([2.5, 1.0])
    res = continuous_geodesic(dec, za, zb, n_points=32)
    exact = np.hypot(2.5, 1.0)
    chord = np.hypot(2 * R * np.sin(2.5 / (2 * R)), 1.0)
    assert chord < 0.8 * exact
    assert res.length == pytest.approx(exact, rel=2e-3)


def test_bernoulli_geodesic_length_matches_fisher_rao_length():
    dec, _ = mlp_logits()
    rng = np.random.default_rng(1)
    za, zb = rng.standard_normal(10), rng.standard_normal(10)
    res = continuous_geodesic(dec, za, zb, n_points=24, measure="bernoulli_kl")
    assert res.measure == "bernoulli_kl"
    assert res.length <= res.straight_length and res.energy <= res.straight_energy
    # independent reference: sum_k sqrt(dz^T G_FR(midpoint) dz) along the optimised curve
    c = res.curve
    mid = 0.5 * (c[1:] + c[:-1])
    dz = np.diff(c, axis=0)
    G = fisher_rao_metric(dec, mid)
    fr = np.sqrt(np.einsum("ni,nij,nj->n", dz, G, dz)).sum()
    assert res.length == pytest.approx(fr, rel=1e-2)


def test_adam_also_lowers_the_energy():
    dec = sphere()
    za, zb = np.array([0.6, -1.0]), np.array([2.3, 1.2])
    res = continuous_geodesic(dec, za, zb, n_points=16, optimizer="adam", max_iter=300, lr=2e-2)
    assert res.energy < res.straight_energy
    assert res.length == pytest.approx(great_circle(za, zb), rel=1e-2)


def test_geodesic_validation():
    dec = sphere()
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'; choose one of: lbfgs, adam"):
        continuous_geodesic(dec, [1.0, 0.0], [2.0, 1.0], optimizer="sgd")
    with pytest.raises(ValueError, match="n_points must be >= 3"):
        continuous_geodesic(dec, [1.0, 0.0], [2.0, 1.0], n_points=2)
    with pytest.raises(ValueError, match=r"za must have shape \(2,\)"):
        continuous_geodesic(dec, [1.0, 0.0, 3.0], [2.0, 1.0])
    with pytest.raises(ValueError, match="unknown measure"):
        continuous_geodesic(dec, [1.0, 0.0], [2.0, 1.0], measure="cosine")


def test_resample_polyline_keeps_ends_and_spacing():
    P = readonly(np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 3.0]]))
    R = resample_polyline(P, 5)
    np.testing.assert_allclose(R, [[0, 0], [1, 0], [1, 1], [1, 2], [1, 3]], atol=1e-12)


def test_vae_geodesic_leaves_the_model_untouched():
    torch.manual_seed(0)
    model = VAE().eval()
    dec = vae_decoder(model)
    rng = np.random.default_rng(2)
    res = continuous_geodesic(dec, rng.standard_normal(10), rng.standard_normal(10), n_points=8, max_iter=5)
    assert res.curve.shape == (8, 10) and np.isfinite(res.length)
    assert res.energy <= res.straight_energy * (1 + 1e-5)
    assert all(p.grad is None for p in model.parameters())


# --------------------------------------------------------------------------- catalog graph


def _reference_graph_distances(F, Z, q_out, q, k, pair_weight):
    """Brute force: kNN by argsort of all latent distances, dense weight matrix, scipy Dijkstra."""
    N = len(Z)
    W = np.zeros((N + 1, N + 1))
    order = np.argsort(np.linalg.norm(Z[:, None] - Z[None], axis=-1), axis=1)
    for i in range(N):
        for j in order[i][order[i] != i][:k]:
            W[i, j] = W[j, i] = pair_weight(i, j)
    for j in np.argsort(np.linalg.norm(Z - q, axis=1))[:k]:
        W[N, j] = W[j, N] = pair_weight(N, j)
    return dijkstra(W, directed=False, indices=N)[:N]


@pytest.mark.parametrize("measure", ["l2", "bernoulli_kl"])
def test_graph_distances_match_brute_force(measure):
    dec, _ = mlp_logits(d=3, seed=5)
    rng = np.random.default_rng(3)
    Z = readonly(rng.standard_normal((60, 3)))
    q = readonly(rng.standard_normal(3))
    g = LatentGraph(k=4, measure=measure, prune_quantile=None).fit(dec, Z)
    res = g.query(dec, q)
    F = decode_means(dec, np.concatenate([Z, q[None]]))
    m = MEASURES[measure]
    Ft = torch.tensor(F)

    def w(i, j):
        return float(m.symmetric_distance(Ft[i], Ft[j]))

    ref = _reference_graph_distances(F, Z, F[-1], q, 4, w)
    assert g.n_bridges_ == 0, "this random cloud should be connected by its 4-NN graph"
    np.testing.assert_allclose(res.distances, ref, rtol=1e-10)


def test_graph_sub_segments_match_brute_force():
    dec, _ = mlp_logits(d=3, seed=6)
    rng = np.random.default_rng(4)
    Z = readonly(rng.standard_normal((40, 3)))
    q = readonly(rng.standard_normal(3))
    n_sub = 3
    g = LatentGraph(k=5, n_sub=n_sub, prune_quantile=None).fit(dec, Z)
    P = np.concatenate([Z, q[None]])

    def w(i, j):
        seg = P[i] + np.linspace(0, 1, n_sub + 1)[:, None] * (P[j] - P[i])
        X = decode_means(dec, seg)
        return float(np.linalg.norm(np.diff(X, axis=0), axis=1).sum())

    ref = _reference_graph_distances(None, Z, None, q, 5, w)
    np.testing.assert_allclose(g.query(dec, q).distances, ref, rtol=1e-10)


@pytest.fixture(scope="module")
def sphere_graph():
    dec = sphere()
    rng = np.random.default_rng(5)
    N = 2000
    theta = np.arccos(rng.uniform(np.cos(2.9), np.cos(0.25), N))  # uniform in area between the polar caps
    phi = rng.uniform(-2.8, 2.8, N)
    Z = readonly(np.stack([theta, phi], axis=1))
    calls = []
    with torch_threads(1):
        g = LatentGraph(k=10).fit(dec, Z, progress=lambda done, total: calls.append((done, total)))
    return dec, Z, g, calls


def test_graph_distance_on_the_sphere_is_close_to_and_above_the_great_circle(sphere_graph):
    dec, Z, g, _ = sphere_graph
    q = np.array([1.5, -1.2])
    res = g.query(dec, q)
    gc = np.array([great_circle(q, z) for z in Z])
    inside = _arc_stays_in_sampled_region(q, Z)  # else the graph must detour around the caps or the seam
    assert inside.mean() > 0.5
    far = (gc > 0.8) & inside
    ratio = res.distances[far] / gc[far]
    assert ratio.min() >= 1 - 1e-3, ratio.min()
    assert np.median(ratio) < 1.08, np.median(ratio)
    # ranks by graph distance follow the true geodesic ranks
    from scipy.stats import spearmanr

    assert spearmanr(res.distances[inside], gc[inside]).statistic > 0.99
    # and the graph distance is not below the continuous geodesic
    for target in np.flatnonzero(far)[:3]:
        cont = continuous_geodesic(dec, q, Z[target], n_points=32)
        assert res.distances[target] >= cont.length * (1 - 1e-3)


def _arc_stays_in_sampled_region(q, Z):
    """Whether the great-circle arc from q to each row of Z stays in theta in [0.25, 2.9], |phi| <= 2.8."""
    a = sphere_point(q[None])[0]
    B = sphere_point(Z)
    omega = np.arccos(np.clip(B @ a, -1, 1))
    ok = np.ones(len(Z), dtype=bool)
    for s in np.linspace(0, 1, 41):
        w1 = np.sin((1 - s) * omega) / np.maximum(np.sin(omega), 1e-12)
        w2 = np.sin(s * omega) / np.maximum(np.sin(omega), 1e-12)
        p = w1[:, None] * a + w2[:, None] * B
        theta = np.arccos(np.clip(p[:, 2], -1, 1))
        phi = np.arctan2(p[:, 1], p[:, 0])
        ok &= (theta >= 0.25) & (theta <= 2.9) & (np.abs(phi) <= 2.8)
    return ok


def test_graph_path_is_a_chain_of_edges_summing_to_the_distance(sphere_graph):
    dec, Z, g, _ = sphere_graph
    q = readonly(np.array([1.0, 0.5]))
    res = g.query(dec, q)
    target = int(np.argmax(np.where(np.isfinite(res.distances), res.distances, -1)))
    pts = g.path_points(res, target)
    assert np.array_equal(pts[0], q) and np.allclose(pts[-1], Z[target])
    assert curve_length(dec, pts) == pytest.approx(res.distances[target], rel=1e-9)


def test_graph_progress_is_monotone_and_complete(sphere_graph):
    _, _, _g, calls = sphere_graph
    done = [c[0] for c in calls]
    assert len(calls) >= 2 and done == sorted(done)
    assert calls[-1][0] == calls[-1][1] and len({c[1] for c in calls}) == 1


def test_graph_pruning_and_bridging_keep_one_component():
    dec, _ = linear(d=2)
    rng = np.random.default_rng(6)
    Z = readonly(np.concatenate([rng.standard_normal((50, 2)) * 0.1, rng.standard_normal((30, 2)) * 0.1 + 8.0,
                                 [[0.0, -5.0]]]))  # two far clusters and a lone point
    full = LatentGraph(k=5, prune_quantile=None).fit(dec, Z)
    assert full.n_pruned_ == 0 and full.n_bridges_ == 1  # kNN never links the two clusters
    g = LatentGraph(k=5, prune_quantile=0.95).fit(dec, Z)
    threshold = np.quantile(full.weights_[: len(full.weights_) - full.n_bridges_], 0.95)
    assert g.threshold_ == pytest.approx(threshold)
    assert g.n_pruned_ == int((full.weights_[: len(full.weights_) - full.n_bridges_] > threshold).sum()) > 0
    kept = g.weights_[: len(g.weights_) - g.n_bridges_]
    assert kept.max() <= g.threshold_
    assert g.n_bridges_ >= 2  # the lone point's long edges were pruned, so it needed a bridge too
    res = g.query(dec, Z[0])
    assert np.all(np.isfinite(res.distances))
    # the far cluster is reached through a bridge, so it is farther than anything in the near cluster
    assert res.distances[50:80].min() > res.distances[:50].max()


def test_graph_save_load_roundtrip(tmp_path, sphere_graph):
    dec, _Z, g, _ = sphere_graph
    key = g.cache_key("modelhash123")
    assert "modelhash123" in key and "l2" in key
    path = g.save(tmp_path / "graph.npz", key)
    h = LatentGraph.load(path, key)
    assert h is not None and h.params() == g.params()
    q = np.array([2.0, 1.0])
    # the loaded graph holds the saved float64 weights bit for bit, and both queries run the same code
    np.testing.assert_array_equal(h.query(dec, q).distances, g.query(dec, q).distances)
    assert LatentGraph.load(path, "other-key") is None
    assert LatentGraph.load(tmp_path / "missing.npz", key) is None
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert LatentGraph.load(tmp_path / "bad.npz", key) is None


def test_graph_validation():
    dec, _ = linear(d=2)
    with pytest.raises(ValueError, match="unknown measure 'ssim'"):
        LatentGraph(measure="ssim").fit(dec, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="not fitted"):
        LatentGraph().query(dec, np.zeros(2))
    with pytest.raises(ValueError, match="prune_quantile"):
        LatentGraph(prune_quantile=1.5).fit(dec, np.zeros((5, 2)))


# --------------------------------------------------------------------------- slice grid graph


def test_grid_geodesic_on_a_flat_map_is_the_octile_distance():
    c = 2.0
    Q = orthonormal(2, 7)
    dec = Decoder(lambda z: c * z @ Q.T, 2)  # isometry times c
    sl = make_slice([0.0, 0.0], [1.0, 0.0], [0.0, 1.0], extent=1.0, resolution=11)
    h = sl.spacing[0]
    out = decode_grid(dec, sl)
    for target in ((9, 5), (0, 10), (8, 0)):  # all four kinds of step get used
        res = grid_geodesic(out, (1, 2), target)
        dr, dc = abs(target[0] - 1), abs(target[1] - 2)
        octile = c * h * (max(dr, dc) - min(dr, dc) + np.sqrt(2) * min(dr, dc))
        assert res.length == pytest.approx(octile, rel=1e-12)
        assert c * h * np.hypot(dr, dc) <= res.length <= 1.09 * c * h * np.hypot(dr, dc)
    res = grid_geodesic(out, (1, 2), (9, 5))
    assert tuple(res.path[0]) == (1, 2) and tuple(res.path[-1]) == (9, 5)
    steps = np.abs(np.diff(res.path, axis=0))
    assert steps.max() == 1 and np.all(steps.sum(1) >= 1)
    assert res.distances.shape == (11, 11) and res.distances[1, 2] == 0
    with pytest.raises(ValueError, match="target must be a"):
        grid_geodesic(out, (0, 0), (11, 0))


def test_grid_geodesic_on_the_sphere_is_close_to_the_great_circle():
    dec = sphere()
    sl = make_slice([1.57, 0.0], [1.0, 0.0], [0.0, 1.0], extent=1.0, resolution=41)
    res = grid_geodesic(decode_grid(dec, sl), (5, 5), (35, 30))
    a = sl.to_latent(np.array([[sl.s[5], sl.t[5]]]))[0]
    b = sl.to_latent(np.array([[sl.s[30], sl.t[35]]]))[0]
    gc = great_circle(a, b)
    assert gc * (1 - 1e-3) <= res.length <= 1.09 * gc
