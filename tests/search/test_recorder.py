import builtins

from ray import cloudpickle

from search.config.settings import Settings
from search.recorder import RunRecorder


def test_the_recorder_pickles_after_ray_replaces_builtins_print(tmp_path, monkeypatch):
    """Ray's driver replaces builtins.print (tqdm_ray.instance) once a worker's log is shown; the
    Tuner then pickles a recorder whose ``out`` is the original print: it must still pickle."""
    original = builtins.print
    recorder = RunRecorder(tmp_path, Settings(), original)

    def replaced(*args, **kwargs):
        original(*args, **kwargs)

    monkeypatch.setattr(builtins, "print", replaced)
    copy = cloudpickle.loads(cloudpickle.dumps(recorder))
    assert copy.out is None and copy.run_dir == tmp_path and copy.stopper.reason is None
    assert recorder.out is original  # the live recorder keeps its output
