"""Command line: ``python -m latent {download,warm-up,train,encode,map,evaluate}``.

Every command takes ``--data-dir`` and ``--data-url``; ``--checkpoint`` (``--out`` for ``train``)
defaults to ``$LATENT_CHECKPOINT``. A flag overrides the environment, which overrides the default
(:class:`latent.config.Settings`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from . import paths
from .config import ConfigError, Settings, parse_path, parse_url


def _tqdm_progress():
    """A ``progress(label, done, total)`` callback that drives one tqdm bar per label."""
    from tqdm.auto import tqdm

    bars: dict[str, tqdm] = {}

    def progress(label: str, done: int, total: int | None) -> None:
        bar = bars.get(label)
        if bar is None:
            bar = bars[label] = tqdm(total=total, desc=label, unit="B", unit_scale=True, leave=True)
        bar.update(done - bar.n)
        if total is not None and done >= total:
            bar.close()

    return progress


def resolve_settings(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """The environment's settings with the command's flags put over them.

    Raises:
        ConfigError: a variable or a flag holds a value that is not allowed.
    """
    settings = Settings.from_env(environ)
    overrides: dict[str, object] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = parse_path(args.data_dir, "--data-dir")
    if args.data_url is not None:
        overrides["data_url"] = parse_url(args.data_url, "--data-url")
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint is not None:
        overrides["checkpoint"] = parse_path(checkpoint, "--checkpoint" if args.command != "train" else "--out")
    return replace(settings, **overrides)  # type: ignore[arg-type]


def _load_data(settings: Settings):
    from .data import load_fashion_mnist

    return load_fashion_mnist(settings.data_dir, download=True, base_url=settings.data_url,
                              progress=_tqdm_progress())


def cmd_download(args: argparse.Namespace, settings: Settings) -> int:
    data = _load_data(settings)
    print(f"Fashion-MNIST ready in {data.source}: {len(data)} items, fingerprint {data.fingerprint[:16]}")
    return 0


def cmd_warm_up(args: argparse.Namespace, settings: Settings) -> int:
    from .warmup import warm_up

    warm_up(settings)
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from .model import VAEConfig
    from .train import TrainConfig, train

    data = _load_data(settings)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         n_train=args.n_train, device=args.device)
    model_config = VAEConfig(latent_dim=args.latent_dim)
    out = settings.checkpoint
    history = paths.history_path(out) if args.history is None else Path(args.history)
    print(f"Training {config.epochs} epochs on {min(config.n_train or len(data.train_labels), len(data.train_labels))} "
          f"images -> {out} (history: {history})")
    train(data.train_images, data.test_images, model_config, config, checkpoint_path=out, history_path=history)
    print(f"Wrote {out} and {history}")
    return 0


def cmd_encode(args: argparse.Namespace, settings: Settings) -> int:
    from .catalog import load_or_build_catalog
    from .model import load_checkpoint

    data = _load_data(settings)
    model, _ = load_checkpoint(settings.checkpoint)
    started = time.perf_counter()
    catalog = load_or_build_catalog(model, settings.checkpoint, data, cache_dir=settings.cache_dir,
                                    rebuild=args.rebuild, progress=True)
    print(f"Catalog: {len(catalog)} items, d={catalog.mu.shape[1]}, {catalog.path} "
          f"({'built' if catalog.built else 'loaded from cache'} in {time.perf_counter() - started:.2f} s)")
    if args.ship:
        from .catalog import SHIPPED_CATALOG, save_catalog

        print(f"Wrote {save_catalog(catalog, SHIPPED_CATALOG)} (ships with the repository)")
    return 0


def cmd_map(args: argparse.Namespace, settings: Settings) -> int:
    from .catalog import load_or_build_catalog
    from .io import write_json_atomic
    from .model import load_checkpoint
    from .projection import MapProjector, measure_placement_agreement, save_map

    data = _load_data(settings)
    model, _ = load_checkpoint(settings.checkpoint)
    catalog = load_or_build_catalog(model, settings.checkpoint, data, cache_dir=settings.cache_dir, progress=True)

    def progress(stage: str, done: int, total: int | None) -> None:
        print(f"  {stage}", flush=True)

    print(f"Fitting the UMAP map of all {len(catalog)} means ...", flush=True)
    projector = MapProjector().fit(catalog.mu, progress=progress)
    save_map(projector, args.out, catalog.key)
    print(f"Wrote {args.out} (fit {projector.fit_seconds_:.1f} s)")
    if args.agreement:
        print("Measuring kNN placement against umap's transform: fit on train means, place the test means ...")
        train, test = ~catalog.is_test, catalog.is_test
        report = measure_placement_agreement(catalog.mu[train], catalog.mu[test], labels_train=catalog.labels[train],
                                             labels_heldout=catalog.labels[test], progress=progress)
        report["catalog_key"] = catalog.key
        write_json_atomic(args.agreement, report)
        for key, value in report.items():
            print(f"  {key}: {value}")
        print(f"Wrote {args.agreement}")
    return 0


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from .evaluate import evaluate_model, save_sample_sheet, write_model_card

    data = _load_data(settings)
    report = evaluate_model(settings.checkpoint, data, progress=True)
    for key, value in report.items():
        print(f"{key}: {value}")
    if args.card:
        from .io import write_json_atomic

        history = paths.history_path(settings.checkpoint) if args.history is None else Path(args.history)
        sheet = save_sample_sheet(settings.checkpoint, data, Path(args.card).with_name("samples.png"))
        write_model_card(report, args.card, history, sample_sheet=sheet.name)
        write_json_atomic(Path(args.card).with_name("evaluation.json"), report)
        print(f"Wrote {args.card}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m latent", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (default: $LATENT_DATA_DIR, "
                       "else the per-user cache folder; files missing there are downloaded)")
        p.add_argument("--data-url", default=None, help="http(s) mirror to download missing files from "
                       "(default: $LATENT_DATA_URL, else Zalando Research's mirror)")
        return p

    checkpoint_help = "the VAE checkpoint (default: $LATENT_CHECKPOINT, else models/vae.pt)"
    add("download", "download and verify Fashion-MNIST").set_defaults(func=cmd_download)
    add("warm-up", "compile the search kernels and fill the cache folder, so that no first visit waits"
        ).set_defaults(func=cmd_warm_up)

    p = add("train", "train the VAE with a fixed seed")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--n-train", type=int, default=None, help="train on the first N canonical items only")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    p.add_argument("--out", dest="checkpoint", default=None,
                   help="checkpoint path (default: $LATENT_CHECKPOINT, else models/vae.pt)")
    p.add_argument("--history", default=None, help="JSON history path (default: beside the checkpoint)")
    p.set_defaults(func=cmd_train)

    p = add("encode", "encode all 70,000 items into the cached catalog")
    p.add_argument("--checkpoint", default=None, help=checkpoint_help)
    p.add_argument("--rebuild", action="store_true", help="ignore the cache and encode again")
    p.add_argument("--ship", action="store_true", help="also write models/catalog.npz (for the shipped model)")
    p.set_defaults(func=cmd_encode)

    p = add("map", "fit the Atlas's UMAP map of all catalog means (ships as models/umap.npz)")
    p.add_argument("--checkpoint", default=None, help=checkpoint_help)
    p.add_argument("--out", default=str(paths.MODELS_DIR / "umap.npz"))
    p.add_argument("--agreement", default=None, help="also measure kNN placement against umap's transform "
                   "on held-out test means; write the JSON report here")
    p.set_defaults(func=cmd_map)

    p = add("evaluate", "measure the model card's figures")
    p.add_argument("--checkpoint", default=None, help=checkpoint_help)
    p.add_argument("--history", default=None, help="the checkpoint's training history (default: beside it)")
    p.add_argument("--card", default=None, help="write the model card (Markdown) to this path")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .data import DataError
    from .model import CheckpointError

    try:
        return args.func(args, resolve_settings(args))
    except (ConfigError, DataError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
