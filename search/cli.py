"""Command line: ``python -m search run spaces/resnet.py [--trials 8 ...]``.

Every field of ``search.settings.Settings`` is an option of ``run`` (``max_epochs`` is
``--max-epochs``). Only light modules are imported until a command needs more, so ``--help``
answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from search.settings import Settings, field_types
from trainables._names import did_you_mean

__all__ = ["main"]

_EXAMPLES = """examples:
  python -m search run spaces/resnet.py                      fine-tune a pretrained backbone (offline default)
  python -m search run spaces/scratch_cnn.py --trials 24     from-scratch CNN, bigger budget
  python -m search run spaces/resnet.py --gpus-per-trial 0.25 --address auto    on a Ray cluster
  python -m search resume runs/resnet-20261125-120000        continue a run after a crash
  python -m search resume runs/resnet-20261125-120000 --trials 40   extend it to 40 trials
  python -m search leaderboard runs/resnet-20261125-120000   rank the trials of a run
"""


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="python -m search",
        description="Hyperparameter search for image classifiers: Optuna spaces on Ray Tune with ASHA.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run a search described by a space file", description=_run_help(), allow_abbrev=False
    )
    run.add_argument("space", metavar="SPACE", help="search-space file, e.g. spaces/resnet.py")
    types = field_types()
    for field in dataclasses.fields(Settings):
        run.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=types[field.name],
            default=argparse.SUPPRESS,
            metavar=types[field.name].__name__.upper(),
            help=f"(default {field.default!r}, or the space file's {field.name.upper()})",
        )

    run.add_argument(
        "--overwrite", action="store_true", help="delete an existing run directory of the same name and start over"
    )

    resume = commands.add_parser(
        "resume",
        help="continue an interrupted run (Ctrl-C, kill, reboot), or extend it with --trials",
        allow_abbrev=False,
    )
    resume.add_argument("run_dir", metavar="RUN_DIR")
    resume.add_argument("--trials", type=int, default=None, help="a budget above the run's own extends the search")
    resume.add_argument("--address", default=None, help="Ray cluster to join (default: the run's own setting)")

    board = commands.add_parser(
        "leaderboard", help="rebuild and print a run's leaderboard from its files", allow_abbrev=False
    )
    board.add_argument("run_dir", metavar="RUN_DIR")
    board.add_argument("--sort", default=None, help="column to rank by (default: the run's metric)")
    board.add_argument("--status", default=None, help="keep rows whose status starts with this (completed, stopped, error, infeasible)")
    board.add_argument("--rows", type=int, default=None, help="print only the first ROWS rows")
    return parser, {"run": run, "resume": resume, "leaderboard": board}


def _run_help() -> str:
    return (
        "Run the search in SPACE. Settings come from the defaults, then the space file's upper-case "
        "constants, then these options."
    )


def main(argv: list[str] | None = None) -> int:
    parser, commands = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        word = unknown[0].split("=")[0]
        options = [o for action in commands[args.command]._actions for o in action.option_strings]
        parser.exit(
            2,
            f"error: unknown option {word!r}{did_you_mean(word, options)}; "
            f"see `python -m search {args.command} --help`\n",
        )
    try:
        if args.command == "leaderboard":
            return _leaderboard(args)
        if args.command == "resume":
            from search.engine import resume_run

            resume_run(args.run_dir, trials=args.trials, address=args.address)
            return 0
        prepared = _prepare(args)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as error:
        # Bad input, caught before any trial starts: say what is wrong, no traceback.
        print(f"error: {error}", file=sys.stderr)
        return 2
    from search.engine import execute_run

    execute_run(prepared)
    return 0


def _prepare(args: argparse.Namespace):
    from search.engine import prepare_run
    from search.spaces import load_space, resolve_settings

    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "space", "overwrite")}
    space = load_space(args.space)
    return prepare_run(space, resolve_settings(space, overrides), overwrite=args.overwrite)


def _leaderboard(args: argparse.Namespace) -> int:
    from pathlib import Path

    from analysis.leaderboard import build_leaderboard, format_table, write_leaderboard

    run_dir = Path(args.run_dir)
    if not (run_dir / "settings.json").is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a run directory (it has no settings.json)")
    table, path = write_leaderboard(run_dir)
    if args.sort or args.status:
        table = build_leaderboard(run_dir, sort_by=args.sort, status=args.status)
    print(format_table(table, rows=args.rows))
    print(f"\nleaderboard: {path}")
    return 0
