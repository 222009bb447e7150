"""Issue 11 end to end on the shared Ray session: a streamed search on an ImageFolder decodes its
cache once (Ray tasks), a second run decodes nothing, and after a file is added retrain, resume and
predict exit 2 naming it."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.records import read_json, read_trials
from search.cli import main
from tests.conftest import REPO, write_png_folder

pytestmark = pytest.mark.slow


def test_a_streamed_search_caches_once_and_refuses_changed_data(ray_session, tmp_path, digits_16, capsys):
    images, _ = digits_16
    pick = np.concatenate([np.flatnonzero(images.labels == k)[:20] for k in range(3)])
    folder = write_png_folder(tmp_path / "data", images.images[pick], images.labels[pick], ["a", "b", "c"])
    common = ["run", str(REPO / "spaces" / "scratch_cnn.py"), "--dataset", str(folder), "--data-loading", "stream",
              "--data-cache", str(tmp_path / "cache"), "--storage", str(tmp_path / "runs"), "--trials", "1",
              "--max-epochs", "1", "--grace-period-epochs", "1", "--no-retrain"]  # fmt: skip
    assert main(common + ["--name", "first"]) == 0
    assert "data cache: decoded 60 images" in capsys.readouterr().out
    shards = sorted((tmp_path / "cache").glob("*/shard-*.npy"))
    stamps = [p.stat().st_mtime_ns for p in shards]
    assert main(common + ["--name", "second"]) == 0
    assert "(60 images, 0 decoded)" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "cache").glob("*/shard-*.npy"))] == stamps
    run_dir = tmp_path / "runs" / "first"
    split = read_json(run_dir / "split.json")
    assert split["loading"] == "stream" and len(split["files"]) == 60 and len(split["files_hash"]) == 64
    assert read_trials(run_dir)[0].status["status"] == "completed"

    (folder / "b" / "added.png").write_bytes((folder / "b" / "20.png").read_bytes())
    for command in (["retrain", str(run_dir)], ["resume", str(run_dir)], ["predict", str(run_dir), str(folder / "a" / "0.png")]):
        assert main(command) == 2, command
        assert "b/added.png' was added" in capsys.readouterr().err


def test_classes_naming_a_missing_class_exits_2_before_anything_runs(tmp_path, capsys):
    code = main(["run", str(REPO / "spaces" / "scratch_cnn.py"), "--classes", "1,2,33", "--storage", str(tmp_path)])
    assert code == 2 and "`classes` names '33', but data set 'digits' has no such class" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
