"""Tests of latent/geometry.py against analytic oracles (docs/geometry.md section 8) and torch references."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import jacfwd, vmap

from latent.geometry import (
    MEASURES,
    METRICS,
    Decoder,
    axis_slice,
    bernoulli_kl,
    curve_energy,
    curve_length,
    decode_grid,
    decode_means,
    exact_slice_log_magnification,
    finite_difference_measure,
    fisher_rao_metric,
    get_measure,
    grid_magnification,
    jacobian,
    log_magnification,
    log_magnification_at,
    make_slice,
    metric_tensor,
    pullback_metric,
    segment_lengths,
    slice_log_magnification,
    slice_metric,
    slice_through,
    torch_threads,
    vae_decoder,
)
from latent.model import VAE
from tests.geometry_oracles import cylinder, function_graph, linear, mlp_logits, readonly, sphere

# torch warns once, from inside its own forward-mode AD set-up, that torch.jit.script is deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensor operations are far faster on one thread on a busy 2-core machine."""
    with torch_threads(1):
        yield


def rand_points(n: int, d: int, seed: int, scale: float = 1.0) -> np.ndarray:
    return readonly(np.random.default_rng(seed).standard_normal((n, d)) * scale)


# --------------------------------------------------------------------------- linear oracle


def test_linear_metric_is_AtA_everywhere():
    dec, A = linear()
    Z = rand_points(7, 10, 0, scale=3.0)
    G = pullback_metric(dec, Z)
    assert G.shape == (7, 10, 10) and G.dtype == np.float64
    np.testing.assert_allclose(G, np.broadcast_to(A.T @ A, G.shape), rtol=1e-12, atol=1e-14)


def test_linear_log_magnification_is_exact():
    dec, A = linear()
    Z = rand_points(5, 10, 1)
    expected = 0.5 * np.log(np.linalg.det(A.T @ A))
    np.testing.assert_allclose(log_magnification_at(dec, Z), expected, rtol=1e-12)


def test_linear_slice_metric_and_grid_estimate_are_exact():
    dec, A = linear()
    rng = np.random.default_rng(2)
    u, v = readonly(rng.standard_normal(10)), readonly(rng.standard_normal(10))
    B = np.stack([u, v], axis=1)
    G2 = B.T @ A.T @ A @ B
    sl = make_slice(rand_points(1, 10, 3)[0], u, v, extent=(-2.0, 2.0, -1.0, 0.5), resolution=(9, 6))
    assert sl.spacing[0] != sl.spacing[1]
    got = slice_metric(dec, sl.nodes().reshape(-1, 10), u, v)
    np.testing.assert_allclose(got, np.broadcast_to(G2, got.shape), rtol=1e-12)
    mf = grid_magnification(decode_grid(dec, sl), sl.spacing)
    assert mf.shape == (5, 8)
    # The decoded grid of a linear map is a lattice of identical parallelograms: exact, not just a limit.
    np.testing.assert_allclose(mf, np.sqrt(np.linalg.det(G2)), rtol=1e-9)


def test_linear_finite_difference_measure_is_mean_column_norm():
    dec, A = linear()
    Z = rand_points(4, 10, 4)
    m = finite_difference_measure(dec, Z, "l2", eps=0.3)
    np.testing.assert_allclose(m, np.linalg.norm(A, axis=0).mean(), rtol=1e-12)
    U = readonly(np.random.default_rng(5).standard_normal((3, 10)))
    m = finite_difference_measure(dec, Z, "l2", eps=0.01, directions=U)
    np.testing.assert_allclose(m, np.linalg.norm(A @ U.T, axis=0).mean(), rtol=1e-12)


def test_linear_curve_length_and_energy():
    dec, A = linear()
    za, zb = rand_points(2, 10, 6)
    t = np.linspace(0, 1, 11)[:, None]
    curve = readonly((1 - t) * za + t * zb)
    L = np.linalg.norm(A @ (zb - za))
    assert curve_length(dec, curve) == pytest.approx(L, rel=1e-12)
    assert curve_length(dec, curve, subdivide=4) == pytest.approx(L, rel=1e-12)
    # constant speed: E = L^2 exactly; a non-uniform parametrisation of the same path has E > L^2
    assert curve_energy(dec, curve) == pytest.approx(L**2, rel=1e-12)
    uneven = readonly((1 - t**2) * za + t**2 * zb)
    assert curve_length(dec, uneven) == pytest.approx(L, rel=1e-12)
    assert curve_energy(dec, uneven) > 1.1 * L**2
    assert segment_lengths(dec, curve, subdivide=3).shape == (30,)


# --------------------------------------------------------------------------- curved oracles


def test_function_graph_metric_and_magnification():
    dec, grad_g = function_graph()
    Z = rand_points(6, 10, 7)
    gg = grad_g(Z)
    expected = np.eye(10)[None] + gg[:, :, None] * gg[:, None, :]
    np.testing.assert_allclose(pullback_metric(dec, Z), expected, atol=1e-12)
    np.testing.assert_allclose(log_magnification_at(dec, Z), 0.5 * np.log1p((gg**2).sum(1)), atol=1e-12)


def test_sphere_metric_and_magnification():
    dec = sphere(radius=1.7)
    rng = np.random.default_rng(8)
    Z = readonly(np.stack([rng.uniform(0.2, 2.9, 9), rng.uniform(-3, 3, 9)], axis=1))
    G = pullback_metric(dec, Z)
    r2 = 1.7**2
    np.testing.assert_allclose(G[:, 0, 0], r2, rtol=1e-12)
    np.testing.assert_allclose(G[:, 1, 1], r2 * np.sin(Z[:, 0]) ** 2, rtol=1e-10)
    np.testing.assert_allclose(G[:, 0, 1], 0.0, atol=1e-12)
    np.testing.assert_allclose(log_magnification(G), np.log(r2 * np.sin(Z[:, 0])), rtol=1e-10)
    # the (theta, phi) plane is the whole latent space: the slice MF equals the full MF
    np.testing.assert_allclose(slice_log_magnification(dec, Z, [1.0, 0.0], [0.0, 1.0]), log_magnification(G),
                               rtol=1e-12)


def test_cylinder_metric_is_identity():
    dec = cylinder(R=0.5)
    Z = rand_points(6, 2, 9, scale=2.0)
    np.testing.assert_allclose(pullback_metric(dec, Z), np.broadcast_to(np.eye(2), (6, 2, 2)), atol=1e-12)
    np.testing.assert_allclose(log_magnification_at(dec, Z), 0.0, atol=1e-12)


def test_grid_magnification_tends_to_exact_slice_mf_on_the_sphere():
    dec = sphere()
    errs = []
    for res in (9, 17, 33):
        sl = make_slice([1.2, 0.4], [1.0, 0.0], [0.3, 1.0], extent=0.4, resolution=res)
        est = grid_magnification(decode_grid(dec, sl), sl.spacing)
        exact = np.exp(exact_slice_log_magnification(dec, sl))
        # independent reference: MF_2 = sqrt(det(B^T G B)) with G = diag(1, sin^2 theta) at the cell centres
        th = sl.cell_centres()[..., 0]
        B = np.stack([sl.u, sl.v], axis=1)
        ref = np.sqrt(np.linalg.det(np.einsum("ia,...ij,jb->...ab", B, _sphere_G(th), B)))
        np.testing.assert_allclose(exact, ref, rtol=1e-10)
        errs.append(np.abs(est / exact - 1).max())
    assert errs[2] < 1e-3, errs
    assert errs[1] < errs[0] / 3 and errs[2] < errs[1] / 3, f"not second order: {errs}"


def _sphere_G(theta: np.ndarray) -> np.ndarray:
    G = np.zeros((*theta.shape, 2, 2))
    G[..., 0, 0] = 1.0
    G[..., 1, 1] = np.sin(theta) ** 2
    return G


# --------------------------------------------------------------------------- Jacobians


def test_jacobian_jvp_matches_jacfwd_autograd_and_finite_differences():
    dec, net = mlp_logits()
    Z = rand_points(5, 10, 10)
    J = jacobian(dec, Z)  # (5, 784, 10)
    assert J.shape == (5, 784, 10)
    Zt = torch.tensor(Z)
    J_fwd = vmap(jacfwd(lambda z: torch.sigmoid(net(z))))(Zt).detach().numpy()
    np.testing.assert_allclose(J, J_fwd, rtol=1e-10, atol=1e-13)
    J_ref = np.stack([
        torch.autograd.functional.jacobian(lambda z: torch.sigmoid(net(z[None]))[0], Zt[n]).numpy() for n in range(5)
    ])
    np.testing.assert_allclose(J, J_ref, rtol=1e-10, atol=1e-13)
    h = 1e-5
    eye = np.eye(10)
    J_fd = np.stack([(decode_means(dec, Z + h * eye[i]) - decode_means(dec, Z - h * eye[i])) / (2 * h)
                     for i in range(10)], axis=-1)
    np.testing.assert_allclose(J, J_fd, atol=1e-8)
    # logits Jacobian and batching
    J_l = jacobian(dec, Z, output="logits", batch_size=2)
    J_l_ref = vmap(jacfwd(net))(Zt).detach().numpy()
    np.testing.assert_allclose(J_l, J_l_ref, rtol=1e-10, atol=1e-13)


def test_metric_batching_does_not_change_results():
    dec, _ = mlp_logits()
    Z = rand_points(7, 10, 11)
    calls = []
    G = pullback_metric(dec, Z, batch_size=3, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(3, 7), (6, 7), (7, 7)]
    # Blocking changes only the rounding: BLAS and torch may pick other kernels (summation orders) for another
    # batch shape. In float64 a length-n dot product is within n * eps * sum|a_i b_i| of the exact value for any
    # order (Higham 2002, section 3.1), so two orders differ by at most 2 n eps sum|a_i b_i|. Here the JVPs are
    # sums of length <= 64 + 10 and each G_ij a sum of 784 products with sum|J_i J_j| <= sqrt(G_ii G_jj), so
    # the entries differ by well under 2 * (784 + 2 * 74) * 2.2e-16 ~ 4e-13 times the largest entry. Near-zero
    # off-diagonal entries make a purely relative bound meaningless, so the bound is 1e-10 of the largest
    # entry: about 250x that estimate, and still far below any real error (a wrong row or a missing block).
    G_ref = pullback_metric(dec, Z)
    np.testing.assert_allclose(G, G_ref, rtol=0, atol=1e-10 * np.abs(G_ref).max())
    F_ref = fisher_rao_metric(dec, Z)
    np.testing.assert_allclose(fisher_rao_metric(dec, Z, batch_size=2), F_ref, rtol=0, atol=1e-10 * np.abs(F_ref).max())


# --------------------------------------------------------------------------- Bernoulli Fisher-Rao


def test_fisher_rao_matches_reference_and_kl():
    dec, net = mlp_logits()
    Z = rand_points(3, 10, 12)
    G = fisher_rao_metric(dec, Z)
    for n in range(3):
        z = torch.tensor(Z[n])
        J_l = torch.autograd.functional.jacobian(lambda x: net(x[None])[0], z).numpy()  # (784, 10)
        p = torch.sigmoid(net(z[None]))[0].detach().numpy()
        np.testing.assert_allclose(G[n], J_l.T @ np.diag(p * (1 - p)) @ J_l, rtol=1e-10, atol=1e-14)
    # 2 KL(p_z || p_{z + delta}) / delta^T G delta -> 1, with an error of order |delta|
    rng = np.random.default_rng(13)
    direction = rng.standard_normal(10)
    direction /= np.linalg.norm(direction)
    z0 = torch.tensor(Z[:1])
    for size in (1e-2, 1e-3, 1e-4):
        delta = size * direction
        kl2 = 2 * bernoulli_kl(dec.mean(z0), dec.mean(z0 + torch.tensor(delta))).item()
        ratio = kl2 / (delta @ G[0] @ delta)
        assert abs(ratio - 1) < 20 * size, (size, ratio)


def test_fisher_rao_slice_matches_projection_of_full_metric():
    dec, _ = mlp_logits()
    Z = rand_points(4, 10, 14)
    rng = np.random.default_rng(15)
    u, v = rng.standard_normal(10), rng.standard_normal(10)
    B = np.stack([u, v], axis=1)
    for kind in METRICS:
        G = metric_tensor(dec, Z, kind)
        G2 = slice_metric(dec, Z, u, v, kind)
        np.testing.assert_allclose(G2, np.einsum("ia,nij,jb->nab", B, G, B), rtol=1e-10)
        np.testing.assert_allclose(np.linalg.det(G2), np.linalg.det(B.T @ G @ B), rtol=1e-10)


def test_bernoulli_grid_estimate_tends_to_fisher_rao_slice_mf():
    dec, _ = mlp_logits()
    z0 = rand_points(1, 10, 16)[0]
    sl = axis_slice(z0, 2, 5, extent=0.02, resolution=5)
    est = grid_magnification(decode_grid(dec, sl), sl.spacing, "bernoulli_kl")
    exact = np.exp(exact_slice_log_magnification(dec, sl, "fisher_rao"))
    np.testing.assert_allclose(est, exact, rtol=2e-3)


# --------------------------------------------------------------------------- invariances


def test_scaling_the_decoder_scales_length_by_c_and_mf2_by_c_squared():
    dec, _ = function_graph()
    c = 3.5
    scaled = Decoder(lambda z: c * dec.mean_fn(z), 10)
    rng = np.random.default_rng(17)
    curve = readonly(np.cumsum(rng.standard_normal((6, 10)) * 0.3, axis=0))
    assert curve_length(scaled, curve) == pytest.approx(c * curve_length(dec, curve), rel=1e-12)
    sl = make_slice(curve[0], rng.standard_normal(10), rng.standard_normal(10), extent=0.5, resolution=6)
    np.testing.assert_allclose(grid_magnification(decode_grid(scaled, sl), sl.spacing),
                               c**2 * grid_magnification(decode_grid(dec, sl), sl.spacing), rtol=1e-10)
    np.testing.assert_allclose(exact_slice_log_magnification(scaled, sl),
                               exact_slice_log_magnification(dec, sl) + 2 * np.log(c), rtol=1e-12)


def test_reparametrisation_transforms_metric_by_P():
    dec, _ = function_graph()
    rng = np.random.default_rng(18)
    P = rng.standard_normal((10, 10))
    Pt = torch.tensor(P)
    dec_w = Decoder(lambda w: dec.mean_fn(w @ Pt.T), 10)
    W = rand_points(5, 10, 19, scale=0.5)
    Z = W @ P.T
    G = pullback_metric(dec, Z)
    G_w = pullback_metric(dec_w, W)
    np.testing.assert_allclose(G_w, np.einsum("ia,nij,jb->nab", P, G, P), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(log_magnification(G_w),
                               log_magnification(G) + np.log(abs(np.linalg.det(P))), rtol=1e-9)


# --------------------------------------------------------------------------- measures


def test_measure_registry_rejects_unknown_names_and_lists_valid_ones():
    assert set(MEASURES) >= {"l2", "bernoulli_kl"}
    with pytest.raises(ValueError, match=r"unknown measure 'kll'.*l2.*bernoulli_kl"):
        get_measure("kll")
    assert get_measure(MEASURES["l2"]) is MEASURES["l2"]
    with pytest.raises(ValueError, match="unknown metric 'riemann'; choose one of: pullback, fisher_rao"):
        metric_tensor(linear()[0], np.zeros((1, 10)), "riemann")


def test_l2_measure_matches_scipy_euclidean():
    from scipy.spatial.distance import euclidean

    rng = np.random.default_rng(20)
    x, y = rng.random(784), rng.random(784)
    assert MEASURES["l2"].distance(torch.tensor(x), torch.tensor(y)).item() == pytest.approx(euclidean(x, y))


def test_bernoulli_kl_matches_torch_distributions():
    rng = np.random.default_rng(21)
    p, q = torch.tensor(rng.uniform(0.01, 0.99, 784)), torch.tensor(rng.uniform(0.01, 0.99, 784))
    ref = torch.distributions.kl_divergence(torch.distributions.Bernoulli(probs=p),
                                            torch.distributions.Bernoulli(probs=q)).sum()
    assert bernoulli_kl(p, q).item() == pytest.approx(ref.item(), rel=1e-12)
    assert MEASURES["bernoulli_kl"].squared(p, q).item() == pytest.approx(2 * ref.item(), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3), st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3))
def test_measure_properties(p, q):
    p, q = torch.tensor(p, dtype=torch.float64), torch.tensor(q, dtype=torch.float64)
    kl = MEASURES["bernoulli_kl"]
    assert kl.squared(p, q).item() >= -1e-12
    assert kl.squared(p, p).item() == pytest.approx(0.0, abs=1e-9)
    assert kl.symmetric_distance(p, q).item() == pytest.approx(kl.symmetric_distance(q, p).item(), rel=1e-12)
    l2 = MEASURES["l2"]
    assert l2.distance(p, q).item() == l2.distance(q, p).item()


def test_bernoulli_finite_difference_measure_tends_to_fisher_rao_norm():
    dec, _ = mlp_logits()
    Z = rand_points(2, 10, 22)
    G = fisher_rao_metric(dec, Z)
    expected = np.sqrt(np.diagonal(G, axis1=1, axis2=2)).mean(1)  # mean_j sqrt(e_j^T G e_j)
    np.testing.assert_allclose(finite_difference_measure(dec, Z, "bernoulli_kl", eps=1e-4), expected, rtol=1e-3)


# --------------------------------------------------------------------------- slices


def test_slice_geometry_and_validation():
    o = readonly(np.arange(10.0))
    rng = np.random.default_rng(23)
    a, b = readonly(o + rng.standard_normal(10)), readonly(o + rng.standard_normal(10))
    sl = slice_through(o, a, b, resolution=(8, 5))
    assert sl.shape == (5, 8) and sl.nodes().shape == (5, 8, 10) and sl.cell_centres().shape == (4, 7, 10)
    np.testing.assert_allclose([sl.u @ sl.u, sl.v @ sl.v, sl.u @ sl.v], [1, 1, 0], atol=1e-12)
    st_ab = sl.project(np.stack([a, b]))
    np.testing.assert_allclose(sl.to_latent(st_ab), np.stack([a, b]), atol=1e-12)  # both lie in the plane
    assert np.all(np.abs(st_ab) <= sl.extent[1])
    nodes = sl.nodes()
    np.testing.assert_allclose(nodes[2, 3], o + sl.s[3] * sl.u + sl.t[2] * sl.v)  # [row=t, col=s]
    with pytest.raises(ValueError, match="linearly independent"):
        make_slice(o, np.ones(10), 2 * np.ones(10))
    with pytest.raises(ValueError, match="collinear"):
        slice_through(o, a, o + 2 * (a - o))
    with pytest.raises(ValueError, match="distinct latent dimensions"):
        axis_slice(o, 3, 3)
    with pytest.raises(ValueError, match="resolution"):
        make_slice(o, np.eye(10)[0], np.eye(10)[1], resolution=1)
    with pytest.raises(ValueError, match=r"shape \(N, 10\)"):
        pullback_metric(linear()[0], np.zeros((3, 9)))
    with pytest.raises(ValueError, match="no logits_fn"):
        fisher_rao_metric(linear()[0], np.zeros((1, 10)))


def test_log_magnification_of_singular_metric_is_minus_inf():
    G = np.zeros((2, 3, 3))
    G[1] = np.diag([1.0, 4.0, 9.0])
    out = log_magnification(G)
    assert out[0] == -np.inf and out[1] == pytest.approx(np.log(6.0))


# --------------------------------------------------------------------------- the real VAE


def test_vae_adapter_shapes_and_jacobian():
    torch.manual_seed(0)
    model = VAE().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dec = vae_decoder(model)
    assert dec.latent_dim == 10 and dec.dtype == torch.float32
    Z = rand_points(3, 10, 24)
    assert dec.mean(Z).shape == (3, 784) and dec.logits(Z).shape == (3, 784)
    with torch.no_grad():
        np.testing.assert_allclose(dec.mean(Z).numpy(), model.decode_mean(torch.tensor(Z, dtype=torch.float32))
                                   .flatten(1).numpy(), rtol=1e-6)
    # float64 copy for a tight comparison with finite differences and autograd
    dec64 = vae_decoder(copy.deepcopy(model).double())
    assert dec64.dtype == torch.float64
    J = jacobian(dec64, Z)
    h = 1e-6
    eye = np.eye(10)
    J_fd = np.stack([(decode_means(dec64, Z + h * eye[i]) - decode_means(dec64, Z - h * eye[i])) / (2 * h)
                     for i in range(10)], axis=-1)
    np.testing.assert_allclose(J, J_fd, atol=1e-7 * np.abs(J).max())
    m64 = copy.deepcopy(model).double()
    J_ref = torch.autograd.functional.jacobian(lambda z: m64.decode_mean(z[None]).flatten(), torch.tensor(Z[0]),
                                               vectorize=True)  # reverse mode, batched over the 784 outputs
    np.testing.assert_allclose(J[0], J_ref.numpy(), rtol=1e-9, atol=1e-12)
    # float32 Jacobian agrees with the float64 one to float32 accuracy
    np.testing.assert_allclose(jacobian(dec, Z), J, atol=1e-4 * np.abs(J).max())
    with torch_threads(1):
        G = fisher_rao_metric(dec, Z)
    assert G.shape == (3, 10, 10) and np.all(np.linalg.eigvalsh(G) > -1e-6)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} was modified"
    assert all(p.grad is None for p in model.parameters())


def test_torch_threads_restores_setting():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError), torch_threads(0):
        pass


def test_importing_does_no_work_and_never_pulls_in_streamlit():
    code = (
        "import sys, torch; n = torch.get_num_threads(); "
        "import latent.geometry, latent.geodesic, latent.cartogram; "
        "assert 'streamlit' not in sys.modules; assert torch.get_num_threads() == n; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
