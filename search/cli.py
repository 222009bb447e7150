"""Command line: ``python -m search run spaces/resnet.py [--trials 8 ...]``.

Every field of ``search.config.settings.Settings`` is an option of ``run`` (``max_epochs`` is
``--max-epochs``), explained by its comment there and grouped as ``search.config.settings_help.GROUPS``
says. Only light modules are imported until a command needs more, so ``--help``
answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from analysis.records import RunDir
from search.api import finish_run
from search.config.settings import Settings, field_types
from search.config.settings_help import GROUPS, setting_help
from search.config.spaces import load_space, resolve_settings
from trainables.names import did_you_mean

__all__ = ["main"]

_EXAMPLES = """examples:
  python -m search run spaces/resnet.py                      fine-tune a pretrained backbone (offline default)
  python -m search run spaces/scratch_cnn.py --trials 24     from-scratch CNN, bigger budget
  python -m search run spaces/resnet.py --gpus-per-trial 0.25 --address auto    on a Ray cluster
  python -m search resume runs/resnet-20261125-120000        continue a run after a crash
  python -m search resume runs/resnet-20261125-120000 --trials 40   extend it to 40 trials
  python -m search leaderboard runs/resnet-20261125-120000   rank the trials of a run
  python -m search report runs/resnet-20261125-120000        importance, Optuna study, plots, report.md
  python -m search retrain runs/resnet-20261125-120000 --top-k 3    retrain the top 3, test each once
  python -m search retrain runs/resnet-20261125-120000 --top-k 3 --ensemble   top 3 averaged vs. the best
  python -m search run spaces/features.py                    frozen features + logistic regression / forest / SVM
  python -m search predict runs/resnet-20261125-120000 a.png  top-5 classes from the winner
"""


# retrain and predict read a run's images from its data cache and refuse a missing or damaged one.
REBUILD_HELP = "decode the run's data cache again from its files when it is missing or damaged (else: exit 2 naming the shard)"


class _Command:
    """A command's parser and the option strings it accepts, collected as they are added (argparse
    keeps its list private), so that an unknown option can be answered with the closest one."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser, self.options = parser, []

    def add(self, *names: str, group=None, **kwargs) -> None:
        self.options += (group or self.parser).add_argument(*names, **kwargs).option_strings


def _parser() -> tuple[argparse.ArgumentParser, dict[str, _Command]]:
    parser = argparse.ArgumentParser(
        prog="python -m search",
        description="Hyperparameter search for image classifiers: Optuna spaces on Ray Tune with ASHA.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _Command(
        commands.add_parser("run", help="run a search described by a space file", description=_run_help(), allow_abbrev=False)
    )
    run.add("space", metavar="SPACE", help="search-space file, e.g. spaces/resnet.py")
    groups = {title: run.parser.add_argument_group(title) for title in GROUPS}
    types, defaults, explained = field_types(), {f.name: f.default for f in dataclasses.fields(Settings)}, setting_help()
    for title, names in GROUPS.items():
        for name in names:
            default = repr(defaults[name]) if defaults[name] != "" else "empty"
            run.add(
                "--" + name.replace("_", "-"),
                group=groups[title],
                dest=name,
                type=types[name],
                default=argparse.SUPPRESS,
                metavar=types[name].__name__.upper(),
                help=f"{explained[name]} (default {default}; space file: {name.upper()})".replace("%", "%%"),
            )
    run.add(
        "--overwrite", group=groups["storage"], action="store_true",
        help="Delete an existing run directory of the same name and start over.",
    )  # fmt: skip

    resume = _Command(
        commands.add_parser(
            "resume",
            help="continue an interrupted run (Ctrl-C, kill, reboot), or extend it with --trials",
            allow_abbrev=False,
        )
    )
    resume.add("run_dir", metavar="RUN_DIR")
    resume.add("--trials", type=int, default=None, help="a budget above the run's own extends the search")
    resume.add("--address", default=None, help="Ray cluster to join (default: the run's own setting)")
    for command, group in ((run, groups["search"]), (resume, None)):
        command.add(
            "--no-retrain",
            group=group,
            dest="no_retrain",
            action="store_true",
            help="Skip retraining the winner on train + validation and testing it once (done by default).",
        )

    board = _Command(
        commands.add_parser("leaderboard", help="rebuild and print a run's leaderboard from its files", allow_abbrev=False)
    )
    board.add("run_dir", metavar="RUN_DIR")
    board.add("--sort", default=None, help="column to rank by (default: the run's metric)")
    board.add("--status", default=None, help="keep rows whose status starts with this (completed, stopped, error, infeasible)")
    board.add("--rows", type=int, default=None, help="print only the first ROWS rows")

    report = _Command(
        commands.add_parser(
            "report", help="parameter importance, the Optuna study, plots and report.md of a run", allow_abbrev=False
        )
    )
    report.add("run_dir", metavar="RUN_DIR")
    report.add(
        "--study-storage", default=None, metavar="URL",
        help="Optuna storage URL to export the study to (default: sqlite:///RUN_DIR/study.db)",
    )  # fmt: skip

    retrain = _Command(
        commands.add_parser(
            "retrain",
            help="retrain the top trials on train+validation and evaluate each model once on the test split",
            allow_abbrev=False,
        )
    )
    retrain.add("run_dir", metavar="RUN_DIR")
    retrain.add("--top-k", dest="top_k", type=int, default=1, help="trials to retrain (default 1)")
    retrain.add("--seeds", type=int, default=3, help="models per trial, seeds seed..seed+S-1 (default 3)")
    retrain.add("--force", action="store_true", help="retrain and test again instead of reusing stored results")
    retrain.add(
        "--no-tta", dest="tta", action="store_false",
        help="skip the flip-TTA evaluation (mean softmax of each test image and its mirror) reported beside the plain one",
    )  # fmt: skip
    retrain.add(
        "--ensemble", action="store_true",
        help="also compare the top-k trials' models averaged with the single best on the test split (ensemble.csv; --top-k >= 2)",
    )  # fmt: skip
    retrain.add("--rebuild-cache", dest="rebuild_cache", action="store_true", help=REBUILD_HELP)

    predict = _Command(
        commands.add_parser("predict", help="top-5 classes of images from the run's retrained winner", allow_abbrev=False)
    )
    predict.add("run_dir", metavar="RUN_DIR")
    predict.add("images", metavar="IMAGE", nargs="+")
    predict.add("--top", type=int, default=5, help="classes to list per image (default 5)")
    predict.add("--rebuild-cache", dest="rebuild_cache", action="store_true", help=REBUILD_HELP)
    commands_by_name = {"run": run, "resume": resume, "leaderboard": board, "report": report, "retrain": retrain, "predict": predict}
    return parser, commands_by_name


def _run_help() -> str:
    return (
        "Run the search in SPACE. Settings come from the defaults, then the space file's upper-case "
        "constants, then these options. Each option's full description is the comment above its "
        "field in search/config/settings.py."
    )


def main(argv: list[str] | None = None) -> int:
    parser, commands = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        word = unknown[0].split("=")[0]
        options = commands[args.command].options
        parser.exit(
            2,
            f"error: unknown option {word!r}{did_you_mean(word, options)}; "
            f"see `python -m search {args.command} --help`\n",
        )
    try:
        if args.command in _ANALYSIS:
            return _ANALYSIS[args.command](args)
        if args.command == "resume":
            from search.engine import resume_run  # imports optuna, pandas, ray: not at this module's import

            _say_code_runs(args.run_dir)
            run_dir = resume_run(args.run_dir, trials=args.trials, address=args.address)
            _finish_run(run_dir, retrain=not args.no_retrain)
            return 0
        prepared = _prepare(args)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as error:
        # Bad input, caught before any trial starts: say what is wrong, no traceback.
        print(f"error: {error}", file=sys.stderr)
        return 2
    from search.engine import (  # imports optuna, pandas, ray: not at this module's import
        MetricNotReported,
        execute_run,
    )
    from trainables.datasets import DatasetError  # imports numpy: --help stays without it

    try:
        run_dir = execute_run(prepared)
    # Found while decoding into the cache, before any trial started; or at the first report.
    except (DatasetError, MetricNotReported) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _finish_run(run_dir, retrain=not args.no_retrain)
    return 0


def _finish_run(run_dir, retrain: bool) -> None:
    """After the search: retrain the winner and test it once (unless --no-retrain), then the report."""

    finish_run(run_dir, retrain=retrain, out=print, warn=lambda line: print(line, file=sys.stderr))


def _prepare(args: argparse.Namespace):
    from search.prepare import prepare_run  # Ray-free: bad input fails before Ray is imported

    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "space", "overwrite", "no_retrain")}
    space = load_space(args.space)
    return prepare_run(space, resolve_settings(space, overrides), overwrite=args.overwrite)


def _leaderboard(args: argparse.Namespace) -> int:
    from pathlib import Path

    from analysis.leaderboard import (  # imports pandas: not at this module's import
        build_leaderboard,
        format_table,
        write_leaderboard,
    )

    run_dir = Path(args.run_dir)
    RunDir.open(run_dir)  # FileNotFoundError when it is not a run directory
    table, path = write_leaderboard(run_dir)
    if args.sort or args.status:
        table = build_leaderboard(run_dir, sort_by=args.sort, status=args.status)
    print(format_table(table, rows=args.rows))
    print(f"\nleaderboard: {path}")
    return 0


def _run_dir(args: argparse.Namespace):
    from pathlib import Path

    run_dir = Path(args.run_dir)
    RunDir.open(run_dir)  # FileNotFoundError when it is not a run directory
    return run_dir


def _say_code_runs(run_dir) -> None:
    """Opening a run directory runs its code: say which file, before it runs."""
    from pathlib import Path

    space = Path(run_dir).expanduser().resolve() / "space.py"
    if space.is_file():
        print(f"executing {space} (a run directory's space file is Python code: open only directories you trust)")


def _report(args: argparse.Namespace) -> int:
    from analysis.report import write_report  # imports pandas: not at this module's import

    _say_code_runs(_run_dir(args))
    print(f"report: {write_report(_run_dir(args), storage=args.study_storage)}")
    return 0


def _retrain(args: argparse.Namespace) -> int:
    from analysis.report import write_report  # imports pandas: not at this module's import
    from analysis.retrain import (  # imports pandas, sklearn, torch: not at this module's import
        format_test_summary,
        retrain,
    )

    run_dir = _run_dir(args)
    _say_code_runs(run_dir)
    table = retrain(run_dir, top_k=args.top_k, seeds=args.seeds, force=args.force, tta=args.tta, ensemble=args.ensemble,
                    rebuild_cache=args.rebuild_cache)  # fmt: skip
    print(format_test_summary(table))
    print(f"report: {write_report(run_dir)}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from analysis.predict import predict  # imports numpy and the data modules: not on --help's path

    if args.top < 1:
        raise ValueError(f"The value of `--top` is {args.top}, but must be an integer >= 1.")
    for image, ranked in zip(args.images, predict(_run_dir(args), args.images, top=args.top, rebuild_cache=args.rebuild_cache)):
        print(f"{image}: " + ", ".join(f"{name} {probability:.4f}" for name, probability in ranked))
    return 0


_ANALYSIS = {"leaderboard": _leaderboard, "report": _report, "retrain": _retrain, "predict": _predict}
