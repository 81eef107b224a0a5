"""Turning decoder outputs and dataset images into crisp pictures (PNG) for the UI and downloads.

Images are shown as in Fashion-MNIST itself: light garments on a dark background. Upscaling is
nearest-neighbour (each pixel becomes a ``scale x scale`` block), so no blur is invented.
"""

from __future__ import annotations

import io

import numpy as np


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W) float intensities in [0, 1] (decoder means) or uint8 -> (H, W) uint8."""
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"images must be uint8 or floats in [0, 1]; got dtype {array.dtype}")
    return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling: (H, W) -> (H * scale, W * scale), same dtype."""
    if int(scale) < 1:
        raise ValueError(f"scale must be a positive integer; got {scale!r}")
    array = np.asarray(image)
    return np.repeat(np.repeat(array, int(scale), axis=0), int(scale), axis=1)


def png_bytes(image: np.ndarray, scale: int = 1, compress_level: int = 1) -> bytes:
    """Encode an (H, W) image (uint8 or floats in [0, 1]) as a grayscale PNG, upscaled by ``scale``.

    PNG is lossless at every ``compress_level`` (0-9); the default 1 is the fastest that still compresses
    the large flat blocks of an upscaled image well, which matters because pages encode on every rerun.
    """
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(upscale(to_uint8(image), scale), mode="L").save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def strip(images: np.ndarray, scale: int = 1, gap: int = 2, background: int = 255) -> np.ndarray:
    """Lay (n, H, W) images side by side with ``gap`` pixels between them: (H*scale, n*(W*scale+gap)-gap)."""
    tiles = [upscale(to_uint8(img), scale) for img in np.asarray(images)]
    if not tiles:
        raise ValueError("strip needs at least one image")
    h, w = tiles[0].shape
    out = np.full((h, len(tiles) * (w + gap) - gap), background, np.uint8)
    for i, tile in enumerate(tiles):
        out[:, i * (w + gap) : i * (w + gap) + w] = tile
    return out


def sheet(images: np.ndarray, scale: int = 1, gap: int = 2, background: int = 255) -> np.ndarray:
    """Rows of images, (r, n, H, W) -> one picture: each row a :func:`strip`, ``gap`` pixels between rows."""
    rows = [strip(row, scale=scale, gap=gap, background=background) for row in np.asarray(images)]
    if not rows:
        raise ValueError("sheet needs at least one row")
    h, w = rows[0].shape
    out = np.full((len(rows) * (h + gap) - gap, w), background, np.uint8)
    for i, row in enumerate(rows):
        out[i * (h + gap) : i * (h + gap) + h] = row
    return out
