"""One image file as pixels, the preprocessing every file-based data set and ``predict`` share:
RGB, shorter side resized, centre crop; and the batched resize of in-memory arrays."""

from __future__ import annotations

import os

__all__ = ["IMAGE_SUFFIXES", "UNREADABLE_IMAGE_ERRORS", "load_image", "resize_uint8"]


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


# What reading a broken, truncated or non-image file raises (PIL's UnidentifiedImageError is an OSError).
UNREADABLE_IMAGE_ERRORS = (OSError, ValueError)


def load_image(path: str | os.PathLike, image_size: int):
    """One image file as a (3, S, S) uint8 tensor: RGB, shorter side resized to S, centre crop.

    The preprocessing of every ImageFolder image, used again by ``predict`` so that a new image is
    seen exactly as the training images were. Raises OSError/ValueError for an unreadable file.
    """
    import torchvision.transforms.functional as TF
    from PIL import Image

    with Image.open(path) as image:
        tensor = TF.pil_to_tensor(image.convert("RGB"))
    tensor = TF.resize(tensor, image_size, antialias=True)
    return TF.center_crop(tensor, [image_size, image_size])


def resize_uint8(images, image_size: int):
    """(N, 3, H, W) uint8 tensors resized to S x S (bilinear, antialiased), in chunks of 4096."""
    import torch

    out = []
    for chunk in images.split(4096):
        resized = torch.nn.functional.interpolate(
            chunk.float(), size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
        out.append(resized.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)
