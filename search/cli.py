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

    board = commands.add_parser(
        "leaderboard", help="rebuild and print a run's leaderboard from its files", allow_abbrev=False
    )
    board.add_argument("run_dir", metavar="RUN_DIR")
    board.add_argument("--sort", default=None, help="column to rank by (default: the run's metric)")
    board.add_argument("--status", default=None, help="keep rows whose status starts with this (completed, stopped, error, infeasible)")
    board.add_argument("--rows", type=int, default=None, help="print only the first ROWS rows")
    return parser, {"run": run, "leaderboard": board}


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

    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "space")}
    space = load_space(args.space)
    return prepare_run(space, resolve_settings(space, overrides))


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
