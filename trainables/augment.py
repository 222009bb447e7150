"""Training-batch augmentation on the device, per batch, airbench style (no DataLoader, no PIL).

Small pure functions (``flip_horizontal``, ``crop_rotate_matrices``, ``warp``, ``jitter_colors``)
and one ``Augmentation`` built from a trial's config that applies them to a batch. Every random
draw comes from a ``torch.Generator`` the caller seeds with (seed, epoch) (``epoch_generator``), so
a resumed trial replays the same augmentation. Only training batches are augmented: validation,
test and prediction never call this module.

Images arrive as (N, 3, S, S) uint8 or float tensors on the 0..255 scale; an enabled augmentation
returns float32 on the same scale (``trainables.classifier.numerics.Normalizer`` takes either), a disabled
one returns its input untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

__all__ = [
    "Augmentation",
    "crop_rotate_matrices",
    "epoch_generator",
    "flip_horizontal",
    "jitter_colors",
    "resize_images",
    "warp",
]

# Aspect ratios (width / height) of a random resized crop, as torchvision's RandomResizedCrop.
CROP_ASPECT = (3 / 4, 4 / 3)
# Luma weights (ITU-R BT.601) for the grey image that saturation jitter blends towards.
_LUMA = (0.299, 0.587, 0.114)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator for one epoch's augmentation; differs from the shuffling's stream."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch + 7_919_000_000)


def flip_horizontal(images: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """``images`` with those where ``flags`` (N bools) is true mirrored left-right."""
    flags = flags.to(images.device).view(-1, 1, 1, 1)
    return torch.where(flags, images.flip(-1), images)


def crop_rotate_matrices(
    count: int, crop_scale: float, rotation_degrees: float, generator: torch.Generator
) -> torch.Tensor:
    """(count, 2, 3) affine matrices for ``F.affine_grid``: a random crop of at least ``crop_scale``
    of the image's area (aspect ratio in CROP_ASPECT as far as the crop still fits, anywhere
    inside the image), rotated by a
    random angle in [-rotation_degrees, rotation_degrees]; the output grid covers the crop, so
    sampling it resizes the crop back to the input size."""
    area = crop_scale + (1 - crop_scale) * torch.rand(count, generator=generator, dtype=torch.float64)
    # Aspect ratios whose crop of this area fits the image (both sides <= 1): r in [area, 1/area].
    low = torch.log(area).clamp(min=math.log(CROP_ASPECT[0]))
    high = (-torch.log(area)).clamp(max=math.log(CROP_ASPECT[1]))
    aspect = torch.exp(low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64))
    # Half-widths in normalised coordinates ([-1, 1] spans the image): the crop's side shares.
    width = torch.sqrt(area * aspect).clamp(max=1.0)
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    centre_x = (1 - width) * (2 * torch.rand(count, generator=generator, dtype=torch.float64) - 1)
    centre_y = (1 - height) * (2 * torch.rand(count, generator=generator, dtype=torch.float64) - 1)
    angle = math.radians(rotation_degrees) * (2 * torch.rand(count, generator=generator, dtype=torch.float64) - 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    matrices = torch.stack(
        [
            torch.stack([width * cos, -height * sin, centre_x], 1),
            torch.stack([width * sin, height * cos, centre_y], 1),
        ],
        1,
    )
    return matrices.float()


def warp(images: torch.Tensor, matrices: torch.Tensor, size: int = 0) -> torch.Tensor:
    """Resample float ``images`` through affine ``matrices`` (bilinear; reflection at the borders,
    so a rotated corner shows image content rather than a black wedge), at ``size`` px a side
    (0: the input's size): a crop of a larger stored image is sampled straight to the output size."""
    shape = list(images.shape[:2]) + ([size, size] if size else list(images.shape[2:]))
    grid = F.affine_grid(matrices.to(images.device), shape, align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def jitter_colors(
    images: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor
) -> torch.Tensor:
    """Float 0..255 ``images`` with per-image brightness, contrast and saturation factors (N each;
    1 leaves the image unchanged), applied in that order, clamped to 0..255."""
    shape = (-1, 1, 1, 1)
    images = images * brightness.to(images.device).view(shape)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * contrast.to(images.device).view(shape) + mean
    grey = (images * torch.tensor(_LUMA, device=images.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    images = (images - grey) * saturation.to(images.device).view(shape) + grey
    return images.clamp(0.0, 255.0)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, S, S) images resized to ``size`` pixels (bilinear, antialiased), in their own dtype;
    uint8 images are rounded back to uint8. Returned as they are when already that size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if images.dtype == torch.uint8:
        return resized.round_().clamp_(0, 255).to(torch.uint8)
    return resized.to(images.dtype)


@dataclass(frozen=True)
class Augmentation:
    """The training-batch augmentation of one trial; every part off by default."""

    hflip: bool = False  # mirror half the images left-right
    rotation_degrees: float = 0.0  # rotate by a uniform angle in [-d, d] degrees; 0 = off
    crop_scale: float = 1.0  # random resized crop of at least this share of the area; 1 = off
    color_jitter: float = 0.0  # brightness, contrast, saturation factors in [1 - j, 1 + j]; 0 = off
    # Side in px of the batches it returns (a trial's image_size); 0: the size they come at. Crops
    # and rotations then read the stored (larger) images and sample them at this size.
    output_size: int = 0

    def __post_init__(self) -> None:
        rules = [
            (0 <= self.rotation_degrees <= 180, "rotation_degrees", "0 <= rotation_degrees <= 180 (degrees; 0 = off)"),
            (0 < self.crop_scale <= 1, "crop_scale", "0 < crop_scale <= 1 (share of the image's area; 1 = off)"),
            (0 <= self.color_jitter < 1, "color_jitter", "0 <= color_jitter < 1 (0 = off)"),
        ]
        for ok, name, rule in rules:
            if not ok:
                raise ValueError(f"The value of `{name}` is {getattr(self, name)!r}, but must be {rule}.")

    @classmethod
    def from_config(cls, cfg) -> "Augmentation":
        """The augmentation a ``TrialConfig`` (or anything with the same fields) asks for."""
        return cls(
            hflip=cfg.hflip,
            rotation_degrees=cfg.rotation_degrees,
            crop_scale=cfg.crop_scale,
            color_jitter=cfg.color_jitter,
            output_size=getattr(cfg, "image_size", 0),
        )

    @property
    def reads_stored_size(self) -> bool:
        """Whether batches should come at the stored size: crops or rotations resample them anyway,
        and sampling the stored image at ``output_size`` keeps its detail (as ImageNet training
        stores 256 px for 224 px crops)."""
        return self.output_size > 0 and (self.rotation_degrees > 0 or self.crop_scale < 1)

    @property
    def enabled(self) -> bool:
        return self.hflip or self.rotation_degrees > 0 or self.crop_scale < 1 or self.color_jitter > 0

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One training batch, augmented with draws from ``generator`` (a fixed number per image
        and part, so the stream stays aligned whatever the batch holds)."""
        size = self.output_size or images.shape[-1]
        if not self.enabled:
            return resize_images(images, size)
        count = len(images)
        x = images.float()
        if self.rotation_degrees > 0 or self.crop_scale < 1:
            x = warp(x, crop_rotate_matrices(count, self.crop_scale, self.rotation_degrees, generator), size)
        elif x.shape[-1] != size:
            x = resize_images(x, size)
        if self.hflip:
            x = flip_horizontal(x, torch.rand(count, generator=generator) < 0.5)
        if self.color_jitter > 0:
            factors = 1 + self.color_jitter * (2 * torch.rand(3, count, generator=generator) - 1)
            x = jitter_colors(x, factors[0], factors[1], factors[2])
        elif self.rotation_degrees > 0 or self.crop_scale < 1:
            x = x.clamp(0.0, 255.0)  # bilinear resampling stays in range; keep the contract exact
        return x
