"""Tests for latent/numpy_decoder.py: the numpy forward pass against torch, the exported file, no torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from latent import paths
from latent.model import VAE, VAEConfig, decode_images, load_checkpoint
from latent.numpy_decoder import FORMAT_VERSION, NumpyDecoder

#: Agreement with torch, in grey levels of [0, 1] (argued in test_numpy_decoder_equals_torch_to_float32_rounding).
TOLERANCE = 1e-4


def random_model(config: VAEConfig, seed: int) -> VAE:
    torch.manual_seed(seed)
    model = VAE(config).eval()
    with torch.no_grad():  # larger weights than the default init, so that every layer matters
        for param in model.decoder.parameters():
            param.mul_(3.0)
    return model


@pytest.mark.parametrize(
    "config",
    [VAEConfig(), VAEConfig(latent_dim=3, image_side=12, dec_channels=5, hidden=17)],
    ids=["default", "small"],
)
def test_numpy_decoder_equals_torch_to_float32_rounding(config: VAEConfig) -> None:
    model = random_model(config, seed=1)
    decoder = NumpyDecoder.from_model(model, "sha")
    rng = np.random.default_rng(2)
    z = (3.0 * rng.normal(size=(33, config.latent_dim))).astype(np.float32)
    expected = decode_images(model, z)  # torch: sigmoid(decoder(z)), (B, side, side)
    got = decoder.decode_mean(z)
    assert got.shape == expected.shape == (33, config.image_side, config.image_side) and got.dtype == np.float32
    # Both sides are float32 forward passes of four layers (dot products of up to 256 terms), through
    # different BLAS kernels (numpy's OpenBLAS and einsum against torch's MKL/oneDNN) that CPUs pick by
    # instruction set and batch shape: each layer adds about sqrt(n) 2^-24 sum |w h| (1e-6..1e-5 on the
    # logits) and the sigmoid is 1/4-Lipschitz. 1e-4 leaves about 20x the worst difference measured over
    # five BLAS/ISA settings (4.9e-6); a wrong layer is off by about 0.1.
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(decoder.decode_mean(z[5]), expected[5], rtol=0, atol=TOLERANCE)  # one z: (side, side)
    assert decoder.latent_dim == config.latent_dim and decoder.image_side == config.image_side


def test_shipped_model_decodes_the_same_in_numpy() -> None:
    model, _ = load_checkpoint(paths.DEFAULT_CHECKPOINT)
    decoder = NumpyDecoder.from_model(model, "sha")
    z = np.random.default_rng(3).normal(size=(16, model.config.latent_dim)) * 2
    np.testing.assert_allclose(decoder.decode_mean(z), decode_images(model, z), rtol=0, atol=TOLERANCE)


def test_bad_z_is_refused() -> None:
    decoder = NumpyDecoder.from_model(random_model(VAEConfig(latent_dim=4), 0), "sha")
    with pytest.raises(ValueError, match="z must have 4 values per point; got shape"):
        decoder.decode_mean(np.zeros(5))


def test_saved_file_round_trips_and_bad_files_are_ignored(tmp_path) -> None:
    decoder = NumpyDecoder.from_model(random_model(VAEConfig(latent_dim=3, image_side=8, dec_channels=4), 4), "abc")
    path = decoder.save(tmp_path / "decoder.npz")
    loaded = NumpyDecoder.load(path, "abc")
    assert loaded is not None and loaded.checkpoint_sha256 == "abc"
    z = np.random.default_rng(5).normal(size=(4, 3))
    np.testing.assert_array_equal(loaded.decode_mean(z), decoder.decode_mean(z))
    assert not loaded.weights["fc1_weight"].flags.writeable

    assert NumpyDecoder.load(path, "another checkpoint") is None
    assert NumpyDecoder.load(tmp_path / "missing.npz", "abc") is None
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte: the zip CRC-32 check catches it
    (tmp_path / "flipped.npz").write_bytes(bytes(raw))
    assert NumpyDecoder.load(tmp_path / "flipped.npz", "abc") is None
    weights = dict(decoder.weights)
    np.savez(tmp_path / "old.npz", format_version=np.array(FORMAT_VERSION + 1), checkpoint_sha256=np.array("abc"),
             **weights)
    assert NumpyDecoder.load(tmp_path / "old.npz", "abc") is None
    weights["deconv2_weight"] = weights["deconv2_weight"][:, :, :3]  # not a 4x4 kernel
    np.savez(tmp_path / "shape.npz", format_version=np.array(FORMAT_VERSION), checkpoint_sha256=np.array("abc"),
             **weights)
    assert NumpyDecoder.load(tmp_path / "shape.npz", "abc") is None


def test_loading_and_decoding_never_imports_torch(tmp_path) -> None:
    path = NumpyDecoder.from_model(random_model(VAEConfig(latent_dim=2, image_side=8), 6), "s").save(tmp_path / "d.npz")
    code = (
        "import sys, numpy as np\n"
        "from latent.numpy_decoder import NumpyDecoder\n"
        f"d = NumpyDecoder.load({str(path)!r}, 's')\n"
        "print(d.decode_mean(np.zeros(2)).shape, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=paths.REPO_ROOT).stdout
    assert out.strip() == "(8, 8) False"
