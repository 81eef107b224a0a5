"""latent/interpolation.py: straight and geodesic latent paths, and their decoded frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latent.interpolation import decoded_length, geodesic_path, straight_path
from latent.model import VAE, VAEConfig


@pytest.fixture(scope="module")
def model() -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig(latent_dim=3, hidden=32, enc_channels_1=4, enc_channels_2=8, dec_channels=4)).eval()


def decode(model: VAE, z: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(model.decoder(torch.tensor(z, dtype=torch.float32))).squeeze(1).numpy()


def test_straight_path_is_evenly_spaced_and_decoded(model):
    za, zb = np.array([-1.0, 0.5, 2.0]), np.array([1.5, -0.5, 0.0])
    path = straight_path(model, za, zb, 7)
    assert path.kind == "straight" and path.points.shape == (7, 3) and path.frames.shape == (7, 28, 28)
    np.testing.assert_array_equal(path.points[0], za)
    np.testing.assert_array_equal(path.points[-1], zb)
    np.testing.assert_allclose(np.diff(path.points, axis=0), np.tile((zb - za) / 6, (6, 1)), atol=1e-12)
    np.testing.assert_allclose(path.frames, decode(model, path.points), atol=1e-6)
    steps = [np.linalg.norm((path.frames[k + 1] - path.frames[k]).ravel()) for k in range(6)]
    assert path.length == pytest.approx(sum(steps), rel=1e-6)


def test_geodesic_keeps_the_ends_is_no_longer_than_the_line_and_leaves_the_model_alone(model):
    za, zb = np.array([-2.0, 0.5, 1.0]), np.array([2.0, -1.0, 0.0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    line = straight_path(model, za, zb, 8)
    geo = geodesic_path(model, za, zb, 8, max_iter=30)
    assert geo.kind == "geodesic" and geo.points.shape == (8, 3)
    np.testing.assert_allclose(geo.points[0], za)
    np.testing.assert_allclose(geo.points[-1], zb)
    np.testing.assert_allclose(geo.frames, decode(model, geo.points), atol=1e-6)
    assert geo.length <= line.length * (1 + 1e-6)
    chord = np.linalg.norm((line.frames[-1] - line.frames[0]).ravel())
    assert geo.length >= chord * (1 - 1e-6)  # no path is shorter than the straight line between its ends
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_paths_validate(model):
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        straight_path(model, np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="n_points must be >= 3"):
        straight_path(model, np.zeros(3), np.ones(3), 2)
    with pytest.raises(ValueError, match="finite"):
        geodesic_path(model, np.array([np.nan, 0, 0]), np.zeros(3))
    assert decoded_length(np.zeros((3, 2, 2))) == 0.0
