"""latent/model.py: shapes, loss terms against torch.distributions, checkpoint safety."""

from __future__ import annotations

import pickle
from dataclasses import asdict

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from latent.model import (
    VAE,
    CheckpointError,
    VAEConfig,
    count_macs,
    count_parameters,
    elbo_terms,
    load_checkpoint,
    save_checkpoint,
)


@pytest.mark.parametrize("d", [10, 3])
def test_shapes(d):
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=d))
    x = torch.rand(5, 1, 28, 28)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, d)
    assert model.decode(mu).shape == (5, 1, 28, 28)
    logits, mu2, _logvar2 = model(x)
    assert logits.shape == (5, 1, 28, 28) and mu2.shape == (5, d)
    p = model.decode_mean(torch.randn(4, d))
    assert ((p > 0) & (p < 1)).all()


def test_logvar_is_bounded_even_for_extreme_inputs():
    model = VAE()
    with torch.no_grad():
        for param in model.encoder.parameters():
            param.mul_(50.0)
    _, logvar = model.encode(torch.rand(8, 1, 28, 28))
    c = model.config
    assert (logvar >= c.logvar_min).all() and (logvar <= c.logvar_max).all()


def test_elbo_terms_match_independent_references():
    torch.manual_seed(1)
    x = torch.rand(4, 1, 28, 28)
    logits = torch.randn(4, 1, 28, 28) * 3
    mu, logvar = torch.randn(4, 10), torch.randn(4, 10)
    recon, kl = elbo_terms(x, logits, mu, logvar)
    p = torch.sigmoid(logits.double())
    reference_recon = -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(-1)
    prior = Normal(torch.zeros(10, dtype=torch.double), torch.ones(10, dtype=torch.double))
    reference_kl = kl_divergence(Normal(mu.double(), (0.5 * logvar.double()).exp()), prior).sum(-1)
    torch.testing.assert_close(recon.double(), reference_recon, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(kl.double(), reference_kl, rtol=1e-5, atol=1e-5)


def test_count_macs_by_hand():
    layer = torch.nn.Sequential(torch.nn.Linear(10, 7), torch.nn.Conv2d(1, 4, 3, padding=1))
    assert count_macs(layer[0], torch.zeros(1, 10)) == 70
    assert count_macs(layer[1], torch.zeros(1, 1, 5, 5)) == 5 * 5 * 4 * 9
    assert count_parameters(layer[0]) == 77


def test_decoder_is_small_enough_for_the_geometry_features():
    """The geometry features take Jacobians interactively (docs/geometry.md section 4), so the decoder stays small."""
    model = VAE()
    assert count_macs(model.decoder, torch.zeros(1, 10)) < 2_000_000


def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(2)
    model = VAE(VAEConfig(latent_dim=6, hidden=64))
    path = save_checkpoint(model, tmp_path / "m.pt", meta={"epochs_done": 3, "note": "x"})
    loaded, meta = load_checkpoint(path)
    assert loaded.config == model.config and meta == {"epochs_done": 3, "note": "x"}
    z = torch.randn(3, 6)
    model.eval()
    torch.testing.assert_close(loaded.decode(z), model.decode(z), rtol=0, atol=0)
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(loaded.encode(x)[0], model.encode(x)[0], rtol=0, atol=0)


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_holding_a_pickled_object_is_refused(tmp_path):
    model = VAE()
    payload = {"format": "latent-explorer-vae", "format_version": 1, "config": asdict(model.config),
               "state_dict": model.state_dict(), "meta": {"evil": Payload()}}
    path = tmp_path / "evil.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="refused by the safe loader"):
        load_checkpoint(path)


def test_a_plain_pickle_file_is_refused(tmp_path):
    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@pytest.mark.parametrize("cut", [0, 100, 5000])
def test_corrupt_or_truncated_checkpoint_is_a_clear_error(tmp_path, cut):
    path = save_checkpoint(VAE(), tmp_path / "m.pt")
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut else b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"corrupt|refused"):
        load_checkpoint(path)


def test_missing_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(CheckpointError, match="python -m latent train"):
        load_checkpoint(tmp_path / "none.pt")


def test_shape_mismatch_between_config_and_weights(tmp_path):
    path = save_checkpoint(VAE(VAEConfig(latent_dim=4)), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"]["latent_dim"] = 10
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"do not match the saved config.*shape"):
        load_checkpoint(path)


def test_unknown_config_field_and_wrong_version(tmp_path):
    path = save_checkpoint(VAE(), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"]["depth"] = 3
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"unknown config fields \['depth'\]"):
        load_checkpoint(path)
    payload["config"].pop("depth")
    payload["format_version"] = 99
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(path)


def test_not_our_format(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a Latent Explorer checkpoint"):
        load_checkpoint(path)
