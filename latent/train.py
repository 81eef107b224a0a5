"""Training the VAE on Fashion-MNIST: a seeded loop with a progress bar and a JSON history.

The objective is the negative ELBO per image, -ELBO = recon + KL (see :func:`latent.model.elbo_terms`),
minimised with Adam and a cosine learning-rate decay. Each epoch appends to the history the mean
train and test values of -ELBO, reconstruction and KL, in nats per image.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .io import write_json_atomic
from .model import VAE, VAEConfig, elbo_terms, save_checkpoint


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train`; saved in the checkpoint's meta."""

    epochs: int = 30  # passes over the training images
    batch_size: int = 128  # images per Adam step
    lr: float = 2e-3  # peak learning rate, decayed by a cosine to lr_final
    lr_final: float = 1e-4
    seed: int = 0  # seeds weight init, shuffling and the reparameterisation noise
    n_train: int | None = None  # use only the first n_train canonical training items (tests)
    n_test: int | None = None  # evaluate on only the first n_test test items (tests)
    device: str = "auto"  # "auto" picks cuda when present, else cpu


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).float().div_(255.0)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def evaluate_elbo(model: VAE, images: torch.Tensor, batch_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """Mean -ELBO, reconstruction and KL per image (nats), one seeded posterior sample per image.

    Args:
        images: (N, 1, 28, 28) float in [0, 1], on any device.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    recon_sum = kl_sum = 0.0
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        mu, logvar = model.encode(x)
        eps = torch.randn(mu.shape, generator=gen, device=device)
        logits = model.decode(mu + torch.exp(0.5 * logvar) * eps)
        recon, kl = elbo_terms(x, logits, mu, logvar)
        recon_sum += recon.sum().item()
        kl_sum += kl.sum().item()
    model.train(was_training)
    n = len(images)
    return {"neg_elbo": (recon_sum + kl_sum) / n, "recon": recon_sum / n, "kl": kl_sum / n}


def machine_description() -> str:
    """A one-line description of where training ran, for the model card."""
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    return (f"CPU {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def train(
    train_images: np.ndarray,
    test_images: np.ndarray,
    model_config: VAEConfig | None = None,
    config: TrainConfig | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    history_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[VAE, list[dict[str, Any]]]:
    """Train a VAE and return it with its per-epoch history.

    Args:
        train_images: (N, 28, 28) uint8 training images in canonical order.
        test_images: (M, 28, 28) uint8 test images, used only for evaluation.
        model_config, config: architecture and hyper-parameters.
        checkpoint_path: if set, the checkpoint is written there after every epoch (atomically).
        history_path: if set, the JSON history is written there after every epoch.
        progress: show a tqdm bar with the running loss terms.
        on_epoch: called with each epoch's history row.
    """
    config = config or TrainConfig()
    model_config = model_config or VAEConfig()
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    np_rng = np.random.default_rng(config.seed)

    x_train = to_tensor(train_images[: config.n_train]).to(device)
    x_test = to_tensor(test_images[: config.n_test]).to(device)
    model = VAE(model_config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    total_steps = max(1, config.epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps, eta_min=config.lr_final)

    history: list[dict[str, Any]] = []
    started = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, unit="batch", dynamic_ncols=True, desc="training", mininterval=2.0)
    try:
        for epoch in range(1, config.epochs + 1):
            model.train()
            order = torch.from_numpy(np_rng.permutation(len(x_train))).to(device)
            sums = {"neg_elbo": 0.0, "recon": 0.0, "kl": 0.0}
            for step in range(steps_per_epoch):
                idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                x = x_train[idx]
                logits, mu, logvar = model(x)
                recon, kl = elbo_terms(x, logits, mu, logvar)
                loss = (recon + kl).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                sums["recon"] += recon.sum().item()
                sums["kl"] += kl.sum().item()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=f"{epoch}/{config.epochs}", neg_elbo=f"{loss.item():.1f}",
                                    recon=f"{recon.mean().item():.1f}", kl=f"{kl.mean().item():.2f}")
            n = len(x_train)
            row = {
                "epoch": epoch,
                "train_neg_elbo": (sums["recon"] + sums["kl"]) / n,
                "train_recon": sums["recon"] / n,
                "train_kl": sums["kl"] / n,
            }
            test = evaluate_elbo(model, x_test, seed=config.seed)
            row.update({f"test_{k}": v for k, v in test.items()})
            row["seconds"] = round(time.perf_counter() - started, 2)
            history.append(row)
            if bar is not None:
                bar.write(
                    f"epoch {epoch:3d}: train -ELBO {row['train_neg_elbo']:.2f} (recon {row['train_recon']:.2f}, "
                    f"KL {row['train_kl']:.2f}) | test -ELBO {row['test_neg_elbo']:.2f} "
                    f"(recon {row['test_recon']:.2f}, KL {row['test_kl']:.2f}) | {row['seconds']:.0f} s"
                )
            meta = {
                "train_config": asdict(config),
                "epochs_done": epoch,
                "train_seconds": row["seconds"],
                "machine": machine_description(),
                "n_train": len(x_train),
            }
            if checkpoint_path is not None:
                save_checkpoint(model, checkpoint_path, meta)
            if history_path is not None:
                write_json_atomic(history_path, {"meta": meta, "history": history})
            if on_epoch is not None:
                on_epoch(row)
    finally:
        if bar is not None:
            bar.close()
    model.eval()
    return model, history
