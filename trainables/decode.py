"""One image file to stored pixels: the preprocessing of every file-based image (cache and predict).

RGB, shorter side resized to S (bilinear, antialiased), centre crop to S x S: torchvision's
``resize`` + ``center_crop`` rule, computed by PIL at the speed of the decoder:

- A JPEG is decoded at a reduced scale (1/2, 1/4 or 1/8, in the DCT: ``Image.draft``), the
  smallest one that still leaves ``DRAFT_MARGIN`` x S pixels on each side; other formats are
  decoded whole. The margin keeps the antialiased resize doing at least a 2:1 reduction after
  the decoder's own, so the pixels stay within a fraction of a grey level of a full decode
  (``benchmarks/decode_pixels.py`` prints the differences; a margin of 1 strays by over one
  grey level on average at 32-64 px, 2 by under half of one).
- The resize covers only the crop (PIL's ``box``): the pixels of resize-then-crop, without
  resizing the part the crop throws away.

``PREPROCESSING`` names this rule in every cache key, so a cache decoded by another rule (the
full-size torchvision decode before version 2) is never mixed with this one: it is decoded again.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["DRAFT_MARGIN", "PREPROCESSING", "decode_image", "resized_size"]

# Part of the cache key: change the rule below, and change this (caches then rebuild).
PREPROCESSING = (
    "v2: rgb; JPEG decoded at the smallest DCT scale keeping >= 2x the size; shorter side resized "
    "(bilinear, antialiased), centre crop; PIL"
)
# A JPEG is reduced on decode only while each side keeps at least this many times the stored size.
DRAFT_MARGIN = 2


def resized_size(width: int, height: int, image_size: int) -> tuple[int, int]:
    """(width, height) after the shorter side is resized to ``image_size`` (torchvision's rule:
    the longer side is truncated, ``int(S * long / short)``)."""
    if width <= height:
        return image_size, int(image_size * height / width)
    return int(image_size * width / height), image_size


def decode_image(
    path: str | os.PathLike, image_size: int, draft_margin: int = DRAFT_MARGIN, out: np.ndarray | None = None
) -> np.ndarray:
    """One image file as a (3, S, S) uint8 array: RGB, shorter side resized to S, centre crop.

    ``draft_margin``: keep the default (the cache key names it); other values are for measuring
    it (benchmarks/decode_pixels.py), 0 decodes at full size. ``out``: a (3, S, S) uint8 array to
    write the pixels into (a slot of a chunk's array: no copy of its own), returned. Raises
    OSError/ValueError for an unreadable file (PIL's UnidentifiedImageError is an OSError).
    """
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        # The decoded image spans the same picture at a reduced scale: ``reduced`` is its extent in
        # decoded pixels (Pillow's draft returns it), so a box in original pixels maps by a factor.
        drafted = image.draft("RGB", (draft_margin * image_size,) * 2) if draft_margin else None
        reduced = drafted[1][2:] if drafted else (width, height)
        image.load()
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        new_width, new_height = resized_size(width, height, image_size)
        top = round((new_height - image_size) / 2.0)  # torchvision's center_crop
        left = round((new_width - image_size) / 2.0)
        # The crop in decoded pixels: the resized image spans ``reduced`` decoded pixels.
        x_scale, y_scale = reduced[0] / new_width, reduced[1] / new_height
        box = (left * x_scale, top * y_scale, (left + image_size) * x_scale, (top + image_size) * y_scale)
        resized = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR, box=box)
    planes = np.asarray(resized).transpose(2, 0, 1)  # (S, S, 3) as PIL holds it, to (3, S, S)
    if out is None:
        return np.ascontiguousarray(planes)
    out[...] = planes
    return out
