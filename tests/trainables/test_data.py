import numpy as np
import pytest

from tests.conftest import write_png_folder
from trainables.data import load_dataset
from trainables.datasets import DatasetError
from trainables.split import split_indices, trial_data


def test_digits_are_upscaled_to_three_channels():
    images = load_dataset("digits", 24)
    assert images.images.shape == (1797, 3, 24, 24) and images.images.dtype == np.uint8
    assert images.classes == tuple("0123456789")
    assert images.images.max() > 200 and np.array_equal(images.images[:, 0], images.images[:, 2])


def test_split_is_disjoint_complete_and_stratified(digits_16):
    images, split = digits_16
    parts = [split.train, split.val, split.test]
    assert sum(len(p) for p in parts) == len(images.labels)
    assert len(np.unique(np.concatenate(parts))) == len(images.labels)
    counts = np.bincount(images.labels)
    for part, share in ((split.val, 0.2), (split.test, 0.2), (split.train, 0.6)):
        per_class = np.bincount(images.labels[part], minlength=10)
        assert np.all(np.abs(per_class - share * counts) <= 1.5), per_class


def test_split_is_deterministic_from_the_seed(digits_16):
    images, split = digits_16
    again = split_indices(images.labels, 0.2, 0.2, seed=0)
    other = split_indices(images.labels, 0.2, 0.2, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((split.train, split.val, split.test), (again.train, again.val, again.test)))
    assert not np.array_equal(split.test, other.test)


def test_data_fraction_keeps_every_class(digits_16):
    images, _ = digits_16
    split = split_indices(images.labels, 0.2, 0.2, seed=0, data_fraction=0.25)
    kept = np.concatenate([split.train, split.val, split.test])
    assert abs(len(kept) - 0.25 * len(images.labels)) <= 1
    assert np.all(np.bincount(images.labels[split.test], minlength=10) >= 8)


def test_trials_get_only_the_train_and_validation_indices(digits_16):
    images, split = digits_16
    data = trial_data(images, split)
    assert np.array_equal(data.train_images, images.images[split.train])
    assert np.array_equal(data.val_labels, images.labels[split.val])
    assert len(data.train_images) + len(data.val_images) + len(split.test) == len(images.labels)
    assert not hasattr(data, "test_images")


def test_fixed_test_split_is_kept(digits_16):
    images, _ = digits_16
    fixed = np.arange(1500, 1797)
    split = split_indices(images.labels, 0.2, 0.2, seed=0, fixed_test=fixed)
    assert np.array_equal(split.test, fixed)
    assert not set(split.train) & set(fixed) and not set(split.val) & set(fixed)


def test_image_folder_loads_resizes_and_skips_unreadable_files(tmp_path, digits_16):
    images, _ = digits_16
    pick = np.concatenate([np.flatnonzero(images.labels == c)[:6] for c in (3, 7)])
    root = write_png_folder(tmp_path / "data", images.images[pick], images.labels[pick], [str(i) for i in range(10)])
    (root / "3" / "broken.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="1 unreadable image file"):
        loaded = load_dataset(str(root), 20)
    assert loaded.classes == ("3", "7")
    assert loaded.images.shape == (12, 3, 20, 20)
    assert np.bincount(loaded.labels).tolist() == [6, 6]
    assert len(loaded.skipped) == 1 and "broken.png" in loaded.skipped[0]


def test_image_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(str(tmp_path / "missing"), 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class sub-folders"):
        load_dataset(str(tmp_path / "empty"), 16)
    (tmp_path / "one" / "cats").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"class folder .*cats' holds no images"):
        load_dataset(str(tmp_path / "one"), 16)


def test_unknown_dataset_names_the_closest():
    with pytest.raises(DatasetError, match="did you mean 'cifar10'"):
        load_dataset("cifar01", 16)


@pytest.mark.parametrize("name, archive", [("cifar10", "cifar-10-python.tar.gz"), ("food101", "food-101.tar.gz"),
                                           ("oxford_pets", "oxford-iiit-pet/images.tar.gz"), ("stl10", "stl10_binary.tar.gz"),
                                           ("flowers102", "flowers-102/102flowers.tgz")])  # fmt: skip
def test_a_named_set_offline_says_where_its_archive_goes(tmp_path, monkeypatch, name, archive):
    monkeypatch.setenv("IMAGE_SEARCH_OFFLINE", "1")  # never downloads, even online
    with pytest.raises(DatasetError, match="could not be downloaded") as error:
        load_dataset(name, 32, data_root=tmp_path)
    assert f"place {archive}" in str(error.value) and str(tmp_path) in str(error.value)


def test_a_class_too_small_to_split_is_a_clear_error():
    labels = np.array([0] * 30 + [1])
    with pytest.raises(DatasetError, match="smallest class has 1 images"):
        split_indices(labels, 0.2, 0.2, seed=0)


def test_load_image_resizes_the_shorter_side_and_crops_the_centre(tmp_path):
    from PIL import Image

    from trainables.images import load_image

    pixels = np.zeros((20, 40, 3), dtype=np.uint8)  # 20 high, 40 wide; the centre half is white
    pixels[:, 10:30] = 255
    Image.fromarray(pixels).convert("L").save(tmp_path / "wide.png")  # grayscale file: becomes RGB
    image = load_image(tmp_path / "wide.png", 10)
    assert tuple(image.shape) == (3, 10, 10) and str(image.dtype) == "torch.uint8"
    assert image.min() > 200  # 40x20 -> 20x10, the centre 10x10 is the white band
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(OSError):
        load_image(tmp_path / "broken.png", 10)


def test_digits_longtail_is_imbalanced_ten_to_one_and_splits_every_class():
    images = load_dataset("digits_longtail", 8)
    counts = np.bincount(images.labels)
    assert counts[0] == 178 and counts[-1] == 18  # 10 ** (-k / 9) of each class, k = 0..9
    assert (np.diff(counts) < 0).all()
    split = split_indices(images.labels, 0.2, 0.2, seed=0)
    for part in (split.train, split.val, split.test):
        assert (np.bincount(images.labels[part], minlength=10) >= 3).all()
