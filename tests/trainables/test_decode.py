"""The decode (trainables/decode.py): JPEGs reduced on decode, then PIL's antialiased resize of the
crop, against the full-size torchvision decode that the cache stored before (preprocessing v2),
on real photos (scikit-learn's two sample photos saved as JPEGs at a few sizes)."""

from __future__ import annotations

import numpy as np
import pytest

import trainables.data as data_module
from trainables.data import chunk_images, load_dataset
from trainables.decode import decode_image, resized_size

# Mean |difference| in grey levels (0-255) on these photos: measured 0.33 (32 px), 0.23 (64 px),
# 0.15 (128 px), plus 0.12 for another libjpeg build; never above 1.0 (the limit for stored caches).
BOUND = {32: 0.45, 64: 0.35, 128: 0.27}
SIDES = (1280, 640, 320)  # longer side of each saved photo, px (1280: upscaled; 640: their own size)


def full_decode(path, image_size: int) -> np.ndarray:
    """The decode before v2 (reference only): full size, torchvision's resize, centre crop."""
    import torchvision.transforms.functional as TF
    from PIL import Image

    with Image.open(path) as image:
        tensor = TF.pil_to_tensor(image.convert("RGB"))
    return TF.center_crop(TF.resize(tensor, image_size, antialias=True), [image_size, image_size]).numpy()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from PIL import Image
    from sklearn.datasets import load_sample_images

    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for k, pixels in enumerate(load_sample_images().images):
        photo = Image.fromarray(pixels)
        for side in SIDES:
            paths.append(folder / f"photo{k}-{side}.jpg")
            photo.resize((side, round(side * photo.height / photo.width)), Image.Resampling.LANCZOS).save(
                paths[-1], quality=90
            )
    return paths


@pytest.mark.parametrize("size", sorted(BOUND))
def test_photos_decode_within_a_fraction_of_a_grey_level_of_a_full_decode(photos, size):
    total, count = 0, 0
    for path in photos:
        new, old = decode_image(path, size), full_decode(path, size)
        assert new.shape == old.shape == (3, size, size) and new.dtype == np.uint8
        difference = np.abs(new.astype(np.int16) - old.astype(np.int16))
        total, count = total + int(difference.sum()), count + difference.size
    assert BOUND[size] <= 1.0
    assert total / count <= BOUND[size], (size, total / count)


def test_large_jpegs_are_reduced_on_decode(photos):
    # The 1280 px photo at 32 px is decoded at 1/8 (854 px high / 8 >= 2 x 32): other pixels than
    # a full decode gives (the speed comes from there), yet close to them.
    path = photos[0]
    reduced, whole = decode_image(path, 32), decode_image(path, 32, draft_margin=0)
    difference = np.abs(reduced.astype(np.int16) - whole.astype(np.int16))
    assert difference.max() > 0 and difference.mean() < 1.0


def test_decoding_into_a_slot_gives_the_pixels_of_a_decode_of_its_own(photos):
    chunk = np.zeros((len(photos), 3, 48, 48), dtype=np.uint8)
    for slot, path in zip(chunk, photos):
        assert decode_image(path, 48, out=slot) is slot
    assert np.array_equal(chunk, np.stack([decode_image(path, 48) for path in photos]))


def test_without_reduction_the_resize_of_the_crop_is_torchvision_s_to_one_grey_level(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for width, height, size in (
        (37, 23, 16),
        (23, 37, 16),
        (200, 120, 48),
        (40, 40, 64),
    ):  # down, down, down, up
        path = tmp_path / f"{width}x{height}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        difference = np.abs(
            decode_image(path, size).astype(np.int16) - full_decode(path, size).astype(np.int16)
        )
        assert difference.max() <= 1, (width, height, size)  # rounding: PIL in integers, torch in floats


def test_resized_size_is_torchvision_s_rule():
    import torch
    import torchvision.transforms.functional as TF

    for width, height in ((640, 427), (427, 640), (100, 100), (333, 129), (129, 333)):
        resized = TF.resize(torch.zeros(3, height, width, dtype=torch.uint8), 64, antialias=True)
        assert resized_size(width, height, 64) == (resized.shape[2], resized.shape[1])


def test_shards_follow_the_set_size_so_every_cpu_gets_decode_tasks():
    def shards(count):
        return -(-count // chunk_images(count))

    assert shards(60) == 1  # tasks of at least 64 images: a smaller one is not worth its overhead
    assert shards(1000) == 16 and shards(5000) == 64  # 4 tasks for each of 16 workers
    assert shards(101_000) == 99 and chunk_images(101_000) == 1024  # Food-101: at most 1024 a shard


def test_a_cache_decoded_by_another_preprocessing_is_not_reused(tmp_path, monkeypatch):
    from tests.conftest import write_png_folder

    images = np.random.default_rng(0).integers(0, 256, (4, 3, 20, 20), dtype=np.uint8)
    folder = write_png_folder(tmp_path / "data", images, np.array([0, 0, 1, 1]), ["a", "b"])
    lines: list[str] = []
    monkeypatch.setattr(data_module, "PREPROCESSING", "v1: the decode before")
    load_dataset(str(folder), 12, cache=tmp_path / "cache", out=lines.append)
    monkeypatch.undo()
    load_dataset(str(folder), 12, cache=tmp_path / "cache", out=lines.append)
    assert "decoded 4 images" in lines[0] and "decoded 4 images" in lines[1], lines  # not "reusing"
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 2
