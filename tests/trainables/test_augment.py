import math

import pytest
import torch

from trainables.augment import (
    Augmentation,
    crop_rotate_matrices,
    epoch_generator,
    flip_horizontal,
    jitter_colors,
    resize_images,
    warp,
)
from trainables.classifier import TrialConfig

ALL_ON = Augmentation(hflip=True, rotation_degrees=15.0, crop_scale=0.6, color_jitter=0.3)


def _images(n=6, size=12, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_disabled_augmentation_returns_the_batch_untouched():
    images = _images()
    assert Augmentation()(images, epoch_generator(0, 1)) is images
    assert not Augmentation().enabled and ALL_ON.enabled


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augmented_batch_is_float_on_the_same_scale_and_shape(dtype):
    images = _images().to(dtype)
    out = ALL_ON(images, epoch_generator(0, 1))
    assert out.shape == images.shape and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 255
    assert not torch.equal(out, images.float())


def test_same_seed_and_epoch_same_augmentation_other_epoch_other_one():
    images = _images()
    first = ALL_ON(images, epoch_generator(3, 2))
    assert torch.equal(first, ALL_ON(images, epoch_generator(3, 2)))
    assert not torch.equal(first, ALL_ON(images, epoch_generator(3, 3)))
    assert not torch.equal(first, ALL_ON(images, epoch_generator(4, 2)))


def test_each_part_alone_changes_the_batch():
    images = _images()
    for part in ({"hflip": True}, {"rotation_degrees": 10.0}, {"crop_scale": 0.5}, {"color_jitter": 0.5}):
        out = Augmentation(**part)(images, epoch_generator(0, 1))
        assert not torch.equal(out, images.float()), part


def test_flip_mirrors_exactly_the_flagged_images():
    images = _images(n=2).float()
    out = flip_horizontal(images, torch.tensor([True, False]))
    assert torch.equal(out[0], images[0].flip(-1)) and torch.equal(out[1], images[1])


def test_identity_matrices_warp_to_the_same_image():
    images = _images().float()
    matrices = crop_rotate_matrices(len(images), 1.0, 0.0, epoch_generator(0, 1))
    assert torch.allclose(matrices, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(len(images), 2, 3))
    assert torch.allclose(warp(images, matrices), images, atol=1e-3)


def test_crop_keeps_at_least_crop_scale_of_the_area_and_rotation_stays_in_range():
    matrices = crop_rotate_matrices(500, 0.5, 30.0, torch.Generator().manual_seed(0)).double()
    linear = matrices[:, :, :2]
    area = torch.linalg.det(linear)  # width * height shares: a rotation keeps the determinant
    assert (area >= 0.5 - 1e-6).all() and (area <= 1 + 1e-6).all()
    # angle of the first column: atan2(w sin, w cos)
    angles = torch.rad2deg(torch.atan2(linear[:, 1, 0], linear[:, 0, 0]))
    assert angles.abs().max() <= 30 + 1e-6 and angles.abs().max() > 20
    # the crop stays inside the image: centre offset + half-extent <= 1 before rotation
    width = torch.linalg.norm(linear[:, :, 0], dim=1)
    assert ((matrices[:, 0, 2].abs() + width) <= 1 + 1e-6).all()


def test_color_jitter_factors():
    images = _images().float()
    ones = torch.ones(len(images))
    assert torch.allclose(jitter_colors(images, ones, ones, ones), images, atol=1e-4)
    assert torch.allclose(jitter_colors(images, ones * 0.5, ones, ones), images * 0.5, atol=1e-4)
    grey = jitter_colors(images, ones, ones, ones * 0)
    assert torch.allclose(grey[:, 0], grey[:, 1], atol=1e-3) and torch.allclose(grey[:, 1], grey[:, 2], atol=1e-3)


def test_resize_images_keeps_uint8_and_returns_the_same_size_untouched():
    images = _images(size=16)
    small = resize_images(images, 8)
    assert small.shape == (6, 3, 8, 8) and small.dtype == torch.uint8
    assert resize_images(images, 16) is images
    flat = torch.full((1, 3, 16, 16), 200, dtype=torch.uint8)
    assert (resize_images(flat, 12) == 200).all()  # antialiased bilinear keeps a flat image flat


@pytest.mark.parametrize(
    "values, message",
    [
        ({"rotation_degrees": -5.0}, r"`rotation_degrees` is -5.0, but must be 0 <= rotation_degrees <= 180"),
        ({"crop_scale": 0.0}, r"`crop_scale` is 0.0, but must be 0 < crop_scale <= 1"),
        ({"crop_scale": 1.5}, r"`crop_scale` is 1.5"),
        ({"color_jitter": 1.0}, r"`color_jitter` is 1.0, but must be 0 <= color_jitter < 1"),
    ],
)
def test_bad_augmentation_values_are_rejected_by_the_trial_config(values, message):
    with pytest.raises(ValueError, match=message):
        TrialConfig(**values)


def test_trial_config_builds_its_augmentation():
    cfg = TrialConfig(hflip=True, rotation_degrees=7.0, crop_scale=0.8, color_jitter=0.1)
    assert Augmentation.from_config(cfg) == Augmentation(True, 7.0, 0.8, 0.1)
    assert math.isclose(Augmentation.from_config(TrialConfig()).crop_scale, 1.0)


def test_crops_read_the_stored_size_and_leave_at_the_trial_size():
    stored = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    crop = Augmentation(crop_scale=0.5, output_size=16)
    assert crop.reads_stored_size and not Augmentation(hflip=True, output_size=16).reads_stored_size
    out = crop(stored, epoch_generator(0, 1))
    assert out.shape == (6, 3, 16, 16) and out.dtype == torch.float32
    # The same crops taken from images first shrunk to 16 px lose the stored detail.
    shrunk = Augmentation(crop_scale=0.5)(resize_images(stored, 16), epoch_generator(0, 1))
    assert shrunk.shape == out.shape and not torch.allclose(shrunk, out, atol=1.0)
    # Without crops or rotations a batch is resized to the output size and augmented there.
    assert Augmentation(hflip=True, output_size=16)(stored, epoch_generator(0, 1)).shape == (6, 3, 16, 16)
    assert Augmentation(output_size=16)(stored, epoch_generator(0, 1)).shape == (6, 3, 16, 16)
