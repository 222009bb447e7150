"""The data cache (trainables/cache.py), streaming (trainables/streaming.py), --classes, named file
sets and the split's file record, on small generated image folders."""

import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

import trainables.data as data_module
from tests.conftest import write_png_folder
from trainables.cache import CachedImages, CacheError, check_writable, open_cache
from trainables.data import load_dataset
from trainables.datasets import DatasetError
from trainables.split import DataChanged, check_unchanged, file_record, split_indices, trial_data
from trainables.streaming import StreamedImages, device_images, epoch_batches, quasi_random_order


@pytest.fixture()
def folder(tmp_path, digits_16):
    """60 digit PNGs (6 per class) at 16 px in an ImageFolder."""
    images, _ = digits_16
    pick = np.concatenate([np.flatnonzero(images.labels == k)[:6] for k in range(10)])
    return write_png_folder(tmp_path / "data", images.images[pick], images.labels[pick], [f"d{k}" for k in range(10)])


@pytest.fixture()
def small_chunks(monkeypatch):
    monkeypatch.setattr(data_module, "CHUNK_IMAGES", 16)  # 60 images -> 4 shards


def _shards(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/shard-*.npy"))


def test_the_cache_is_built_once_and_reused_without_decoding(folder, tmp_path, small_chunks):
    lines = []
    first = load_dataset(str(folder), 12, cache=tmp_path / "cache", out=lines.append)
    assert isinstance(first.images, CachedImages) and first.images.shape == (60, 3, 12, 12)
    assert "decoded 60 images into 4 shard(s)" in lines[-1]
    shards = _shards(tmp_path / "cache")
    manifest = json.loads((shards[0].parent / "manifest.json").read_text())
    assert len(shards) == 4 and manifest["count"] == 60 and len(manifest["content_hash"]) == 64
    stamps = [p.stat().st_mtime_ns for p in shards]
    again = load_dataset(str(folder), 12, cache=tmp_path / "cache", out=lines.append)
    assert "reusing" in lines[-1] and "0 decoded" in lines[-1]
    assert [p.stat().st_mtime_ns for p in _shards(tmp_path / "cache")] == stamps
    assert np.array_equal(np.asarray(first.images), np.asarray(again.images))
    assert np.array_equal(first.labels, np.repeat(np.arange(10), 6))
    # Another stored size is another cache.
    load_dataset(str(folder), 8, cache=tmp_path / "cache", out=lines.append)
    assert "decoded 60 images" in lines[-1] and len(list((tmp_path / "cache").glob("*/manifest.json"))) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_truncated_or_corrupted_shard_is_rebuilt(folder, tmp_path, small_chunks, damage):
    lines = []
    good = np.asarray(load_dataset(str(folder), 12, cache=tmp_path / "cache", out=lines.append).images)
    shard = _shards(tmp_path / "cache")[2]
    raw = bytearray(shard.read_bytes())
    if damage == "truncate":
        shard.write_bytes(raw[: len(raw) // 2])
    else:
        raw[-100] ^= 0xFF  # one pixel byte: same size, same header
        shard.write_bytes(raw)
    assert open_cache(shard.parent, verify="hash") is None
    again = load_dataset(str(folder), 12, cache=tmp_path / "cache", out=lines.append)
    assert "1 truncated or corrupted shard(s)" in lines[-1] and "shard-00002.npy" in lines[-1]
    assert np.array_equal(np.asarray(again.images), good)
    assert open_cache(shard.parent, verify="hash") is not None


def _build_slowly(folder: str, cache: str) -> list[str]:
    """One builder process: decodes chunk by chunk with a pause, so two builders overlap."""
    import trainables.data as module

    module.CHUNK_IMAGES = 16

    def slow_map(function, items):
        for item in items:
            time.sleep(0.3)
            yield function(item)

    lines: list[str] = []
    images = module.load_dataset(folder, 12, cache=cache, decode_map=slow_map, out=lines.append)
    return lines + [str(int(np.asarray(images.images, dtype=np.int64).sum()))]


def test_a_shard_is_written_byte_for_byte_as_numpy_saves_it_and_hashed_as_read_back(tmp_path):
    import hashlib
    import io

    from trainables.cache import _file_hash, _write_array

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (7, 3, 16, 16), dtype=np.uint8), np.zeros((0, 3, 8, 8), dtype=np.uint8),
              np.arange(5, dtype=np.int64), rng.integers(0, 256, (6, 3, 4, 4), dtype=np.uint8)[::2]]  # fmt: skip
    for number, array in enumerate(arrays):
        path, saved = tmp_path / f"{number}.npy", io.BytesIO()
        digest = _write_array(path, array)
        np.save(saved, array, allow_pickle=False)
        assert path.read_bytes() == saved.getvalue(), number
        assert digest == _file_hash(path) == hashlib.sha256(saved.getvalue()).hexdigest()
        assert np.array_equal(np.load(path), array)


def test_two_concurrent_builds_give_one_intact_cache(folder, tmp_path):
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        results = list(pool.map(_build_slowly, [str(folder)] * 2, [str(tmp_path / "cache")] * 2))
    messages = [r[0] for r in results]
    assert sum("decoded 60 images" in m for m in messages) == 1, messages
    assert sum("reusing" in m for m in messages) == 1, messages
    assert results[0][-1] == results[1][-1]  # the same pixels
    folders = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(folders) == 1 and open_cache(folders[0], verify="hash") is not None  # no build folder left


def test_streaming_and_in_memory_give_identical_batches(folder, tmp_path, small_chunks):
    images = load_dataset(str(folder), 12, cache=tmp_path / "cache")
    split = split_indices(images.labels, 0.2, 0.2, seed=0)
    view = trial_data(images, split, loading="stream").train_images
    order = torch.randperm(len(view), generator=torch.Generator().manual_seed(3))
    memory = device_images(view, torch.device("cpu"), 8, stream=False)
    streamed = device_images(view, torch.device("cpu"), 8, stream=True)
    assert isinstance(streamed, StreamedImages) and not streamed.quasi_random
    pairs = list(zip(epoch_batches(memory, order, 7), epoch_batches(streamed, order, 7)))
    assert len(pairs) == -(-len(view) // 7)
    for (index_a, a), (index_b, b) in pairs:
        assert torch.equal(index_a, index_b) and torch.equal(a, b)
    assert torch.equal(memory[3:9], streamed[3:9])


def test_a_streaming_trial_trains_exactly_as_an_in_memory_one(folder, tmp_path, small_chunks):
    from trainables.classifier import train_classifier

    images = load_dataset(str(folder), 12, cache=tmp_path / "cache")
    split = split_indices(images.labels, 0.2, 0.2, seed=0)
    config = {"model": "scratch_resnet", "conv_blocks": 1, "base_width": 8, "batch_size": 8, "max_epochs": 2,
              "hflip": True, "crop_scale": 0.7, "image_size": 10}  # fmt: skip
    runs = {}
    for loading in ("memory", "stream"):
        reports = []
        train_classifier(config, trial_data(images, split, loading=loading), reports.append)
        runs[loading] = [(r["train_loss"], r["val_loss"], r["val_acc"]) for r in reports]
    assert runs["memory"] == runs["stream"]


def test_quasi_random_order_is_a_permutation_of_shuffled_blocks():
    order = torch.randperm(5000, generator=torch.Generator().manual_seed(0)).numpy()
    quasi = quasi_random_order(order, block=100, buffer_blocks=4)
    assert np.array_equal(np.sort(quasi), np.arange(5000)) and not np.array_equal(quasi, np.arange(5000))
    # Each buffer of 4 blocks holds 400 positions from exactly 4 blocks.
    for start in range(0, 5000, 400):
        assert len(np.unique(quasi[start : start + 400] // 100)) <= 4
    assert not np.array_equal(quasi, quasi_random_order(np.random.default_rng(1).permutation(5000), 100, 4))


def test_classes_keeps_exactly_the_named_classes(folder, tmp_path):
    kept = load_dataset(str(folder), 12, classes="d3, d7,d1", cache=tmp_path / "cache")
    assert kept.classes == ("d1", "d3", "d7") and len(kept.labels) == 18
    assert sorted(set(kept.labels.tolist())) == [0, 1, 2]
    assert all(Path(f).parts[0] in kept.classes for f, _ in kept.files)
    first = load_dataset("digits", 8, classes="4")
    assert first.classes == ("0", "1", "2", "3") and set(first.labels.tolist()) == {0, 1, 2, 3}
    with pytest.raises(DatasetError, match=r"no such class \(did you mean 'd3'\?\)"):
        load_dataset(str(folder), 12, classes="d3,d33x", cache=tmp_path / "cache")
    with pytest.raises(DatasetError, match="has 10 classes"):
        load_dataset("digits", 8, classes="11")


def test_a_named_file_set_reads_its_own_lists_and_keeps_the_official_test_split(tmp_path, digits_16, monkeypatch):
    """food101's layout (meta/train.json, meta/test.json, images/<class>/<id>.jpg), generated small."""
    from PIL import Image

    monkeypatch.setenv("IMAGE_SEARCH_OFFLINE", "1")
    images, _ = digits_16
    base = tmp_path / "root" / "food-101"
    meta = {"train": {}, "test": {}}
    for k, name in enumerate(["apple_pie", "baklava", "sushi"]):
        (base / "images" / name).mkdir(parents=True)
        for i, pixels in enumerate(images.images[images.labels == k][:8]):
            Image.fromarray(pixels.transpose(1, 2, 0)).save(base / "images" / name / f"{i}.jpg")
            meta["train" if i < 6 else "test"].setdefault(name, []).append(f"{name}/{i}")
    (base / "meta").mkdir()
    for split, lists in meta.items():
        (base / "meta" / f"{split}.json").write_text(json.dumps(lists))
    loaded = load_dataset("food101", 16, data_root=tmp_path / "root", classes="sushi,apple_pie", cache=tmp_path / "cache")
    assert loaded.classes == ("apple_pie", "sushi") and len(loaded.labels) == 16
    assert len(loaded.fixed_test) == 4 and all(loaded.files[i][0].endswith(("6.jpg", "7.jpg")) for i in loaded.fixed_test)


def test_the_split_record_names_the_first_file_added_removed_or_changed(folder, tmp_path):
    images = load_dataset(str(folder), 12, cache=tmp_path / "cache")
    recorded = file_record(images)
    assert recorded["files"][0] == ["d0/0.png", (folder / "d0" / "0.png").stat().st_size]
    settings = {"dataset": str(folder), "image_size": 12}
    check_unchanged(recorded, settings)  # nothing changed
    (folder / "d4" / "new.png").write_bytes((folder / "d4" / "24.png").read_bytes())
    with pytest.raises(DataChanged, match=r"file '.*d4/new.png' was added"):
        check_unchanged(recorded, settings)
    (folder / "d4" / "new.png").unlink()
    (folder / "d2" / "12.png").unlink()
    with pytest.raises(DataChanged, match=r"file '.*d2/12.png' was removed"):
        check_unchanged(recorded, settings)
    (folder / "d2" / "12.png").write_bytes(b"x" * 10)
    with pytest.raises(DataChanged, match=r"d2/12.png' changed \(\d+ bytes then, 10 now\)"):
        check_unchanged(recorded, settings)


def test_a_cache_directory_that_cannot_be_written_or_is_too_small_is_a_clear_error(folder, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(DatasetError, match=r"data cache directory .*a_file/cache' is not writable"):
        load_dataset(str(folder), 12, cache=tmp_path / "a_file" / "cache")
    with pytest.raises(CacheError, match="GiB free, but the decoded images need about"):
        check_writable(tmp_path / "cache", needed_bytes=2**62)


def test_a_shard_a_decode_task_wrote_where_the_driver_cannot_see_it_is_a_clear_error(folder, tmp_path, small_chunks):
    """Each decode task writes its own shard (only labels and a digest come back): a task on a node
    that does not share the cache folder leaves it on that node's disk, which is said, not missed."""

    def elsewhere(function, jobs):  # as a task on another node: the file is not where the driver looks
        for job in jobs:
            written = function(job)
            Path(job.path).unlink()
            yield written

    with pytest.raises(DatasetError, match=r"shard shard-00000.npy is not in .* as written \(\d+ bytes\): on a cluster, --data-cache"):
        load_dataset(str(folder), 12, cache=tmp_path / "cache", decode_map=elsewhere)
    assert not list((tmp_path / "cache").glob("*/manifest.json")) and not list((tmp_path / "cache").glob(".*build*"))


def test_without_rebuild_a_damaged_or_missing_cache_names_the_shard_and_decodes_nothing(folder, tmp_path, small_chunks):
    from trainables.cache import CacheDamaged

    built = load_dataset(str(folder), 12, cache=tmp_path / "cache")
    good = np.asarray(built.images)
    assert np.array_equal(np.asarray(load_dataset(str(folder), 12, cache=tmp_path / "cache", rebuild=False).images), good)
    shards = _shards(tmp_path / "cache")
    data = bytearray(shards[2].read_bytes())
    data[-1] ^= 0xFF  # one pixel flipped: same size, other sha256
    shards[2].write_bytes(bytes(data))
    shards[1].unlink()
    with pytest.raises(CacheDamaged, match=r"2 of 4 shard\(s\) damaged: shard-00001.npy \(missing\), shard-00002.npy \(truncated or corrupted\)"):
        load_dataset(str(folder), 12, cache=tmp_path / "cache", rebuild=False)
    assert not shards[1].exists() and bytes(data) == shards[2].read_bytes()  # nothing decoded again
    (shards[0].parent / "manifest.json").unlink()
    with pytest.raises(CacheDamaged, match="its manifest.json is missing"):
        load_dataset(str(folder), 12, cache=tmp_path / "cache", rebuild=False)
    # The default (a search) decodes it again.
    assert np.array_equal(np.asarray(load_dataset(str(folder), 12, cache=tmp_path / "cache").images), good)
