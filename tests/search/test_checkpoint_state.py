import subprocess
import sys
import textwrap

import torch

from search.trial import read_state, write_state
from tests.conftest import REPO


def test_a_state_with_tensors_is_torchs_and_reads_back_equal(tmp_path):
    state = {"epoch": 2, "model": {"w": torch.arange(4.0)}, "lineage": {"trial_id": "a", "schedule": []}}
    write_state(state, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
    back = read_state(tmp_path)
    assert back["epoch"] == 2 and torch.equal(back["model"]["w"], state["model"]["w"])


def test_without_torch_plain_data_is_json_and_anything_else_falls_back_to_torch(tmp_path):
    """A process that never imported torch (a replay trial's actor) writes plain data as JSON and
    stays without torch; data that JSON would change (a tuple, an int key) still goes to torch."""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from search.trial import read_state, write_state
        plain = {{"epoch": 3, "lineage": {{"trial_id": "t1", "schedule": [{{"from_epoch": 1, "config": {{"lr": 0.1, "x": None}}}}]}}}}
        write_state(plain, Path(sys.argv[1]))
        assert read_state(Path(sys.argv[1])) == plain
        assert "torch" not in sys.modules
        write_state({{"epoch": 1, "shape": (2, 3), 4: "int key"}}, Path(sys.argv[2]))
        print("torch" in sys.modules)
    """)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a"), str(tmp_path / "b")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"  # the tuple state needed torch's format
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["state.json"]
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["state.pt"]
    assert read_state(tmp_path / "b") == {"epoch": 1, "shape": (2, 3), 4: "int key"}
