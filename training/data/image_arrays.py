"""Image files decoded into NumPy arrays without TensorFlow (Pillow), as
`training.data.images.decode_image` decodes them, for `zoo prepare` of image families.

`read_image` converts to RGB (grayscale replicated, alpha dropped, palettes expanded, the
first frame of an animation) and resizes a non-square or other-sized image to a square
with bilinear, antialiased interpolation in float, rounded back to uint8: the resize is
TensorFlow's `tf.image.resize(..., antialias=True)` to within 1e-3 of a level. JPEG
decoding is libjpeg's accurate integer IDCT, where TensorFlow's default is the fast one:
the two differ by about one level of 255 on average, at most a few levels per pixel.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def decode_size(config: dict) -> int:
    """Side at which images are decoded: `image_size`, or `image_size / eval_crop_fraction`
    when evaluation and serving take a central crop (and training a random one)."""
    size = int(config["image_size"])
    fraction = config.get("eval_crop_fraction")
    return int(round(size / float(fraction))) if fraction else size


def center_crop(images, size: int):
    """The central `size` x `size` crop of images [..., side, side, channels] (static side):
    a NumPy array, or a tensor of any backend."""
    offset = (int(images.shape[-2]) - size) // 2
    return images[..., offset : offset + size, offset : offset + size, :]


def read_image(path: str | os.PathLike, side: int) -> np.ndarray:
    """The image file at `path` as uint8 [side, side, 3] (see the module's docstring)."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
    if image.size == (side, side):
        return np.asarray(image, dtype=np.uint8)
    # each channel resized in float ("F"), as TensorFlow resizes, then rounded half to even
    channels = [
        np.asarray(channel.convert("F").resize((side, side), Image.Resampling.BILINEAR))
        for channel in image.split()
    ]
    return np.clip(np.round(np.stack(channels, axis=-1)), 0, 255).astype(np.uint8)


def read_images(
    paths: Sequence[str | os.PathLike],
    side: int,
    crop: int | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """uint8 [len(paths), s, s, 3]: each file `read_image`d at `side`, then center-cropped
    to `crop` when given (s = crop, else side); decoded in `workers` threads (Pillow
    decodes and resizes without holding the GIL; default: the CPU count, at most 8)."""
    out_side = crop or side
    out = np.empty((len(paths), out_side, out_side, 3), np.uint8)

    def fill(i: int) -> None:
        image = read_image(paths[i], side)
        out[i] = center_crop(image, crop) if crop else image

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(fill, range(len(paths))))  # list(): raise the first error here
    return out
