"""The Python API, for notebooks and scripts: the CLI's commands as functions returning a ``Run``.

    from search import run, open_run

    result = run("spaces/scratch_cnn.py", trials=8, max_epochs=3, retrain=False)
    result.leaderboard.head()      # a pandas DataFrame, the leaderboard.csv of the run
    result.best                    # the winner's row as a dict: trial_id, val_acc, parameters
    result.retrain(seeds=2)        # test results, as `python -m search retrain`
    result.report()                # report.md's path
    result.predict(["a.png"])      # top classes per image, from the retrained winner

Keyword arguments are the CLI's settings (``search/config/settings.py``), plus ``retrain=False`` (the
CLI's ``--no-retrain``), ``mlflow=URI``, ``overwrite=True`` and ``verbose=True``. Errors are the
CLI's, raised as exceptions (ValueError, TypeError, FileExistsError, FileNotFoundError) before any
trial starts. Output goes to the ``logging`` logger "search" (INFO); ``verbose=True`` prints it.
Nothing here exits the process or needs its own event loop, so it runs inside Jupyter. Importing
this module is cheap: Ray, torch and Optuna load when a search starts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from analysis.records import RunDir, unfinished_budget
from search.config.settings import field_types
from search.config.spaces import load_space, resolve_settings
from trainables.names import did_you_mean

__all__ = ["Run", "open_run", "resume", "run"]

logger = logging.getLogger("search")


class Run:
    """A run directory, read through the analysis modules: what ``run``, ``resume`` and ``open_run`` return."""

    def __init__(self, run_dir: str | Path, verbose: bool = False):
        run_dir = Path(run_dir).expanduser().resolve()
        RunDir.open(run_dir)  # FileNotFoundError when it is not a run directory
        self.dir = run_dir
        self._out = _output(verbose)

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r})"

    @property
    def settings(self):
        """The run's resolved ``search.config.settings.Settings``."""
        return RunDir.open(self.dir).settings()

    @property
    def leaderboard(self):
        """One row per trial, best first: the run's leaderboard, rebuilt from its files."""
        from analysis.leaderboard import build_leaderboard  # imports pandas: not at this module's import

        return build_leaderboard(self.dir)

    @property
    def best(self) -> dict[str, Any]:
        """The winner's leaderboard row (trial_id, status, metric, best_epoch, parameters...)."""
        board = self.leaderboard
        ranked = board[board["rank"].notna()]
        if ranked.empty:
            raise ValueError(f"run {str(self.dir)!r} has no trial with a score")
        return {k: v for k, v in ranked.iloc[0].to_dict().items() if not _missing(v)}

    @property
    def test_results(self):
        """test_results.csv as a DataFrame (after ``retrain``), else FileNotFoundError."""
        import pandas as pd

        path = self.dir / "test_results.csv"
        if not path.is_file():
            raise FileNotFoundError(f"run {str(self.dir)!r} has no test results yet: call .retrain() first")
        return pd.read_csv(path, dtype={"trial_id": str})

    def retrain(
        self, top_k: int = 1, seeds: int = 3, force: bool = False, tta: bool = True, ensemble: bool = False,
        rebuild_cache: bool = False,
    ):
        """Retrain the top trials on train + validation and test each model once; the test results.
        ``rebuild_cache``: decode a streamed run's cache again if it is gone or damaged (as the CLI's --rebuild-cache)."""
        from analysis.retrain import (  # imports pandas, sklearn, torch: not at this module's import
            format_test_summary,
            retrain,
        )

        table = retrain(self.dir, top_k=top_k, seeds=seeds, force=force, tta=tta, ensemble=ensemble, out=self._out,
                        rebuild_cache=rebuild_cache)  # fmt: skip
        self._out(format_test_summary(table))
        return table

    def report(self, storage: str | None = None) -> Path:
        """Importance, the Optuna study, plots and report.md; report.md's path."""
        from analysis.report import write_report  # imports pandas: not at this module's import

        return write_report(self.dir, storage=storage)

    def predict(self, paths: list[str | Path], top: int = 5) -> list[list[tuple[str, float]]]:
        """The ``top`` most probable classes of each image, from the retrained winner."""

        if isinstance(paths, (str, Path)):
            paths = [paths]
        from analysis.predict import predict  # imports numpy and the data modules: not on --help's path

        return predict(self.dir, list(paths), top=top)


def run(
    space: str | Path,
    *,
    retrain: bool = True,
    overwrite: bool = False,
    verbose: bool = False,
    **settings: Any,
) -> Run:
    """Run the search in ``space`` with ``settings`` (the CLI's options as keywords); a ``Run``.

    As ``python -m search run``: validated before anything starts, then the search, then (unless
    ``retrain=False`` or the search was interrupted) the winner retrained and tested, and the report.
    """
    from search.engine import (  # imports optuna, pandas, ray: not at this module's import
        execute_run,
        prepare_run,
    )

    _check_keywords(settings)
    out = _output(verbose)
    loaded = load_space(space)
    prepared = prepare_run(loaded, resolve_settings(loaded, settings), out=out, overwrite=overwrite)
    run_dir = execute_run(prepared, out)
    finish_run(run_dir, retrain=retrain, out=out, warn=logger.warning if not verbose else out)
    return Run(run_dir, verbose=verbose)


def resume(
    run_dir: str | Path, *, trials: int | None = None, address: str | None = None, retrain: bool = True, verbose: bool = False
) -> Run:
    """Continue an interrupted run, or extend it to ``trials``; as ``python -m search resume``."""
    from search.engine import resume_run  # imports optuna, pandas, ray: not at this module's import

    out = _output(verbose)
    finished = resume_run(Path(run_dir), trials=trials, address=address, out=out)
    finish_run(finished, retrain=retrain, out=out, warn=logger.warning if not verbose else out)
    return Run(finished, verbose=verbose)


def open_run(run_dir: str | Path, *, verbose: bool = False) -> Run:
    """A finished (or interrupted) run directory, to read, retrain, report on or predict with."""
    return Run(run_dir, verbose=verbose)


def finish_run(run_dir: Path, retrain: bool, out: Callable[[str], None] = print, warn: Callable[[str], None] = print) -> None:
    """After the search: retrain the winner and test it once (unless ``retrain`` is False or the
    search was interrupted), then write the report. The CLI's ``run`` and ``resume`` end with it."""
    from analysis.report import write_report  # imports pandas: not at this module's import

    # analysis.retrain imports pandas, sklearn and torch: only once a search has run.
    from analysis.retrain import format_test_summary
    from analysis.retrain import retrain as retrain_top

    missing = unfinished_budget(run_dir)
    if retrain and missing:
        # Interrupted (Ctrl-C stops Ray Tune gracefully): the winner is not known yet.
        warn(
            f"\nthe search stopped with {missing} budgeted trial(s) not finished; retraining waits for the "
            f"finished search: `python -m search resume {run_dir}` completes it and retrains"
        )
        retrain = False
    if retrain:
        out("")
        try:
            out(format_test_summary(retrain_top(run_dir, out=out)))
        except ValueError as error:  # e.g. every trial failed: nothing to retrain, the run still stands
            warn(f"retrain skipped: {error}")
    out(f"report: {write_report(run_dir)}")


def _check_keywords(settings: dict[str, Any]) -> None:
    """An unknown keyword names the closest setting, as the CLI names the closest option."""
    known = field_types()
    for key in settings:
        if key not in known:
            raise TypeError(
                f"unknown option {key!r}{did_you_mean(key, [*known, 'retrain', 'overwrite', 'verbose'])}; "
                "see `python -m search run --help` (options as keywords: max_epochs=3 for --max-epochs 3)"
            )


def _output(verbose: bool) -> Callable[[str], None]:
    return print if verbose else logger.info


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)
