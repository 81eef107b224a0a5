"""The Model page (AppTest): it shows the model and the catalog that were loaded."""

from __future__ import annotations

import numpy as np
import torch
from streamlit.testing.v1 import AppTest
from torch.distributions import Normal, kl_divergence

from latent import paths
from latent.model import load_checkpoint


def test_model_page_shows_what_was_loaded(real_data):
    at = AppTest.from_file(str(paths.REPO_ROOT / "app.py"), default_timeout=300)
    at.switch_page("pages/model.py").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    model, meta = load_checkpoint(paths.DEFAULT_CHECKPOINT)
    assert metrics["Latent dimensions"] == str(model.config.latent_dim)
    assert metrics["Catalog items"] == "70,000"
    assert metrics["Epochs trained"] == str(meta["epochs_done"])
    table = at.dataframe[0].value
    # The KL column equals an independent computation from the encoder on a sample of items.
    with torch.no_grad():
        x = torch.tensor(real_data.images[::7]).float().unsqueeze(1) / 255
        mu, logvar = model.encode(x)
        kl = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).mean(0).numpy()
    np.testing.assert_allclose(table["mean KL (nats)"].to_numpy(), kl, rtol=0.05, atol=0.01)
