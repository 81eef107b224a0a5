"""Measuring a trained VAE for its model card: ELBO terms, active units, kNN accuracy, timings.

Every figure in ``models/README.md`` comes from :func:`evaluate_model`, run by
``python -m latent evaluate --card models/README.md``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .catalog import encode_images, file_sha256
from .data import CLASS_NAMES, FashionMNIST
from .io import atomic_writer, write_text_atomic
from .model import VAE, count_macs, count_parameters, elbo_terms, load_checkpoint
from .train import machine_description, to_tensor

ACTIVE_UNIT_THRESHOLD = 0.01  # nats: a latent dimension whose mean KL exceeds this is "active"


@torch.no_grad()
def elbo_statistics(model: VAE, images: np.ndarray, n_samples: int = 4, seed: int = 0,
                    batch_size: int = 1000) -> dict[str, Any]:
    """Mean negative ELBO per image and its terms, averaged over ``n_samples`` posterior draws.

    -ELBO(x) = E_q[-log p(x|z)] + KL(q(z|x) || p(z)); KL is exact, the reconstruction is a
    Monte Carlo estimate. Also returns the mean KL per latent dimension, (d,), in nats:
    KL_j = 1/2 (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2).
    """
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    recon_sum = kl_sum = 0.0
    kl_per_dim = torch.zeros(model.config.latent_dim, dtype=torch.float64)
    for start in range(0, len(images), batch_size):
        x = to_tensor(images[start : start + batch_size])
        mu, logvar = model.encode(x)
        kl_dims = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)  # (B, d)
        kl_per_dim += kl_dims.double().sum(0)
        for _ in range(n_samples):
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
            recon, _kl = elbo_terms(x, model.decode(z), mu, logvar)
            recon_sum += recon.double().sum().item() / n_samples
        kl_sum += kl_dims.double().sum().item()
    n = len(images)
    return {
        "neg_elbo": (recon_sum + kl_sum) / n,
        "recon": recon_sum / n,
        "kl": kl_sum / n,
        "kl_per_dim": (kl_per_dim / n).tolist(),
    }


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 k: int = 10) -> float:
    """Test accuracy of a k-nearest-neighbour classifier (Euclidean, uniform votes) fitted on train.

    Uses scikit-learn's brute-force ``KNeighborsClassifier``; features are (N, F) arrays.
    """
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute", n_jobs=-1)
    clf.fit(np.asarray(train_x, np.float32), train_y)
    return float((clf.predict(np.asarray(test_x, np.float32)) == test_y).mean())


def evaluate_model(checkpoint: str | os.PathLike[str], data: FashionMNIST, knn_k: int = 10,
                   progress: bool = False) -> dict[str, Any]:
    """All model-card figures for one checkpoint on the canonical test split."""
    def say(msg: str) -> None:
        if progress:
            print(msg, flush=True)

    model, meta = load_checkpoint(checkpoint)
    x1 = to_tensor(data.test_images[:1])
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": file_sha256(checkpoint),
        "config": dict(model.config.__dict__),
        "parameters_total": count_parameters(model),
        "parameters_encoder": count_parameters(model.encoder),
        "parameters_decoder": count_parameters(model.decoder),
        "macs_encoder": count_macs(model.encoder, x1),
        "macs_decoder": count_macs(model.decoder, torch.zeros(1, model.config.latent_dim)),
        "epochs": meta.get("epochs_done"),
        "train_seconds": meta.get("train_seconds"),
        "train_machine": meta.get("machine"),
        "eval_machine": machine_description(),
    }
    say("ELBO on the test split ...")
    stats = elbo_statistics(model, data.test_images)
    report.update({f"test_{k}": v for k, v in stats.items() if k != "kl_per_dim"})
    report["kl_per_dim"] = stats["kl_per_dim"]
    report["active_units"] = int(sum(v > ACTIVE_UNIT_THRESHOLD for v in stats["kl_per_dim"]))
    say("Encoding all items ...")
    started = time.perf_counter()
    mu, _ = encode_images(model, data.images)
    report["encode_seconds_70k"] = time.perf_counter() - started
    train, test = ~data.is_test, data.is_test
    say(f"kNN (k={knn_k}) on latent means ...")
    report["knn_k"] = knn_k
    report["knn_accuracy_latent"] = knn_accuracy(mu[train], data.labels[train], mu[test], data.labels[test], knn_k)
    say(f"kNN (k={knn_k}) on raw pixels ...")
    pixels = data.images.reshape(len(data), -1).astype(np.float32) / 255.0
    report["knn_accuracy_pixels"] = knn_accuracy(pixels[train], data.labels[train], pixels[test],
                                                 data.labels[test], knn_k)
    return report


def save_sample_sheet(checkpoint: str | os.PathLike[str], data: FashionMNIST, path: str | os.PathLike[str],
                      per_class: int = 1, n_prior: int = 10, seed: int = 0, scale: int = 3) -> Path:
    """A PNG: one test item per class (row 1), its reconstruction (row 2), prior samples (row 3)."""
    from PIL import Image

    model, _ = load_checkpoint(checkpoint)
    rng = np.random.default_rng(seed)
    test_images, test_labels = data.test_images, data.test_labels
    picks = [int(rng.choice(np.flatnonzero(test_labels == c))) for c in range(len(CLASS_NAMES))]
    originals = test_images[picks]
    with torch.no_grad():
        mu, _ = model.encode(to_tensor(originals))
        recon = model.decode_mean(mu).squeeze(1).numpy()
        prior = model.decode_mean(torch.from_numpy(rng.standard_normal((n_prior, model.config.latent_dim),
                                                                        dtype=np.float32))).squeeze(1).numpy()
    rows = [originals / 255.0, recon, prior]
    pad = 2
    side = data.images.shape[1]
    cols = max(len(r) for r in rows)
    sheet = np.ones((len(rows) * (side + pad) + pad, cols * (side + pad) + pad), np.float32)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = pad + i * (side + pad), pad + j * (side + pad)
            sheet[y : y + side, x : x + side] = 1.0 - img  # dark garments on white
    image = Image.fromarray((sheet * 255).round().astype(np.uint8), mode="L")
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    with atomic_writer(path) as fh:
        image.save(fh, format="PNG")
    return path


def _epoch_spread(history: list[dict[str, Any]]) -> str:
    """A note on per-epoch wall times when they varied a lot (a shared machine), from the history."""
    seconds = [row["seconds"] for row in history]
    if len(seconds) < 2:
        return ""
    per_epoch = np.diff([0.0, *seconds])
    lo, hi = float(np.min(per_epoch)), float(np.max(per_epoch))
    if hi < 2 * lo:
        return f" ({np.median(per_epoch):.0f} s per epoch)"
    return (f"; epochs took {lo:.0f} to {hi:.0f} s (median {np.median(per_epoch):.0f} s) because other jobs shared"
            " the CPU for part of the run")


def write_model_card(report: dict[str, Any], path: str | os.PathLike[str],
                     history_path: str | os.PathLike[str] | None = None,
                     sample_sheet: str | None = "samples.png") -> Path:
    """Render the model card (Markdown) from :func:`evaluate_model`'s report and the JSON history."""
    history: list[dict[str, Any]] = []
    if history_path and Path(history_path).is_file():
        history = json.loads(Path(history_path).read_text())["history"]
    r = report
    c = r["config"]
    kl_dims = ", ".join(f"{v:.2f}" for v in r["kl_per_dim"])
    lines = [
        "# Model card: the shipped VAE (`models/vae.pt`)",
        "",
        "Every figure below was measured by `python -m latent evaluate --card models/README.md`"
        " (with `LATENT_DATA_DIR` set), from the checkpoint and the canonical test split.",
        "",
    ]
    if sample_sheet:
        lines += [
            f"![test items, their reconstructions, and samples from the prior]({sample_sheet})",
            "",
            "Row 1: one test item per class. Row 2: decoded from its posterior mean. Row 3: decoded from"
            " z ~ N(0, I).",
            "",
        ]
    lines += [
        "## Architecture",
        "",
        f"- Convolutional VAE, latent dimension d = {c['latent_dim']}, input 28x28 grayscale in [0, 1].",
        f"- Encoder: conv 4x4/2 (1->{c['enc_channels_1']}) -> conv 4x4/2 ({c['enc_channels_1']}->"
        f"{c['enc_channels_2']}) -> dense {c['hidden']} -> (mu, log sigma^2), SiLU activations;"
        f" log sigma^2 softly bounded to [{c['logvar_min']}, {c['logvar_max']}].",
        f"- Decoder: dense {c['hidden']} -> dense {c['dec_channels']}x7x7 -> transposed conv 4x4/2 -> transposed"
        f" conv 4x4/2 -> 28x28 pixel logits, SiLU activations (smooth, for the geometry features).",
        f"- Parameters: {r['parameters_total']:,} ({r['parameters_encoder']:,} encoder,"
        f" {r['parameters_decoder']:,} decoder).",
        f"- Multiply-accumulates per image: encoder {r['macs_encoder'] / 1e6:.2f} M, decoder"
        f" {r['macs_decoder'] / 1e6:.2f} M.",
        "- Likelihood: Bernoulli on grey levels, p(x|z) = prod_i p_i^x_i (1 - p_i)^(1 - x_i) with p = sigmoid(logits).",
        "",
        "## Training",
        "",
        f"- {r['epochs']} epochs on the 60,000 training images, Adam with cosine decay, batch 128, seed 0"
        " (`python -m latent train`).",
        f"- Training time: {r['train_seconds'] / 60:.1f} min on {r['train_machine']}" + _epoch_spread(history) + ".",
        "- Per-epoch history (train and test -ELBO, reconstruction, KL): `models/vae-history.json`.",
        "",
        "## Test-set figures (10,000 test images)",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| negative ELBO per image | {r['test_neg_elbo']:.2f} nats |",
        f"| reconstruction term, E_q[-log p(x\\|z)] | {r['test_recon']:.2f} nats |",
        f"| KL(q(z\\|x) \\|\\| p(z)) | {r['test_kl']:.2f} nats |",
        f"| active latent units (mean KL > {ACTIVE_UNIT_THRESHOLD} nats) | {r['active_units']} of {c['latent_dim']} |",
        f"| kNN class accuracy, k = {r['knn_k']}, train -> test, on latent means mu | {r['knn_accuracy_latent']:.4f} |",
        f"| kNN class accuracy, k = {r['knn_k']}, train -> test, on raw pixels (baseline) "
        f"| {r['knn_accuracy_pixels']:.4f} |",
        f"| time to encode all 70,000 items | {r['encode_seconds_70k']:.1f} s on {r['eval_machine']} |",
        "",
        f"Mean KL per latent dimension (nats): {kl_dims}.",
        "",
        "**Honest labelling.** The Bernoulli likelihood is evaluated on grey levels in [0, 1], where it is not a"
        " normalised density (the continuous Bernoulli's normaliser is missing). The negative ELBO above is"
        " therefore the training objective, not an upper bound on -log p(x), and it is not comparable with"
        " likelihoods reported on binarised MNIST-style data. The reconstruction term is a Monte Carlo"
        " estimate with 4 posterior samples per image (seed 0); the KL term is exact.",
        "",
    ]
    if history:
        last = history[-1]
        lines += [
            "## Learning curve",
            "",
            "| epoch | train -ELBO | test -ELBO | test recon | test KL |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in history:
            if row["epoch"] in (1, 2, 5) or row["epoch"] % 10 == 0 or row is last:
                lines.append(
                    f"| {row['epoch']} | {row['train_neg_elbo']:.2f} | {row['test_neg_elbo']:.2f} |"
                    f" {row['test_recon']:.2f} | {row['test_kl']:.2f} |"
                )
        lines.append("")
    lines += [
        "## Re-measure",
        "",
        "```bash",
        "LATENT_DATA_DIR=/path/to/fashion-mnist .venv/bin/python -m latent evaluate --card models/README.md",
        "```",
        "",
        f"Checkpoint SHA-256: `{r['checkpoint_sha256']}`.",
        "",
    ]
    return write_text_atomic(path, "\n".join(lines))
