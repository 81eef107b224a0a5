"""latent/render.py: nearest-neighbour upscaling and PNG encoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from latent.render import png_bytes, strip, to_uint8, upscale


@given(arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 6))), st.integers(1, 5))
@settings(max_examples=40, deadline=None)
def test_upscale_makes_constant_blocks_equal_to_the_source_pixel(image, scale):
    big = upscale(image, scale)
    assert big.shape == (image.shape[0] * scale, image.shape[1] * scale)
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            assert (big[i * scale : (i + 1) * scale, j * scale : (j + 1) * scale] == image[i, j]).all()


def test_to_uint8_rounds_and_clips():
    np.testing.assert_array_equal(to_uint8(np.array([[0.0, 0.5, 1.0, 1.7, -0.2]])), [[0, 128, 255, 255, 0]])
    with pytest.raises(ValueError, match="uint8 or floats"):
        to_uint8(np.array([[1, 2]], dtype=np.int32))
    with pytest.raises(ValueError, match="positive integer"):
        upscale(np.zeros((2, 2)), 0)


def test_png_decodes_back_to_the_upscaled_pixels():
    image = np.random.default_rng(0).random((28, 28))
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(image, scale=4))))
    np.testing.assert_array_equal(decoded, upscale(to_uint8(image), 4))


def test_strip_places_tiles_with_gaps():
    tiles = np.stack([np.full((2, 2), v, np.uint8) for v in (10, 20, 30)])
    out = strip(tiles, scale=1, gap=1, background=255)
    np.testing.assert_array_equal(out, [[10, 10, 255, 20, 20, 255, 30, 30]] * 2)


def test_sheet_stacks_strips_with_gaps():
    from latent.render import sheet

    images = np.arange(2 * 3 * 2 * 2, dtype=np.uint8).reshape(2, 3, 2, 2)
    out = sheet(images, scale=2, gap=1)
    row = strip(images[0], scale=2, gap=1)
    assert out.shape == (2 * row.shape[0] + 1, row.shape[1])
    np.testing.assert_array_equal(out[: row.shape[0]], row)
    np.testing.assert_array_equal(out[row.shape[0] + 1 :], strip(images[1], scale=2, gap=1))
    assert (out[row.shape[0]] == 255).all()
