"""The Model page: what was loaded, how it was trained, and how well it does (the model card)."""

import numpy as np
import pandas as pd
import streamlit as st

from latent.catalog import kl_per_dimension
from latent.data import CLASS_NAMES
from ui.navigation import require_app
from ui.resources import get_resources

require_app()

res = get_resources()
cfg = res.model.config
st.title("The model and its catalog")
st.caption(f"Checkpoint `{res.checkpoint.name}` · SHA-256 `{res.checkpoint_sha256[:12]}`")

c1, c2, c3, c4 = st.columns(4)
c1.metric("Latent dimensions", cfg.latent_dim)
c2.metric("Parameters", f"{sum(p.numel() for p in res.model.parameters()):,}")
c3.metric("Epochs trained", res.model_meta.get("epochs_done", "?"))
c4.metric("Catalog items", f"{len(res.catalog):,}")

kl = kl_per_dimension(res.catalog)
frame = pd.DataFrame({"dimension": [f"z{j}" for j in range(cfg.latent_dim)], "mean KL (nats)": kl,
                      "mean sigma": res.catalog.sigma.mean(0), "spread of mu (std)": res.catalog.mu.std(0)})
st.subheader("Latent dimensions")
st.bar_chart(frame, x="dimension", y="mean KL (nats)", height=220)
st.dataframe(frame.style.format(precision=3), hide_index=True, width="stretch")

st.subheader("Catalog")
counts = pd.DataFrame({"class": CLASS_NAMES,
                       "train": np.bincount(res.catalog.labels[~res.catalog.is_test], minlength=10),
                       "test": np.bincount(res.catalog.labels[res.catalog.is_test], minlength=10)})
st.dataframe(counts, hide_index=True, width="stretch")
st.caption(f"Cache key `{res.catalog.key[:16]}` · encoded in {res.catalog.encode_seconds:.1f} s · "
           f"training on {res.model_meta.get('machine', 'unknown machine')}")
