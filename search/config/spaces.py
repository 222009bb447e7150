"""Search-space files: load one, give its suggest errors the file's line, and resolve its settings
(search/config/sampling.py samples it dry before any trial starts).

A space file is a plain Python module::

    TRIALS = 12                     # upper-case names are settings (search.config.settings.Settings)

    def space(trial):
        optimizer = trial.suggest_categorical("optimizer", ["sgd", "adam"])
        if optimizer == "sgd":
            trial.suggest_float("momentum", 0.5, 0.99)
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        return {"model": "scratch_resnet"}   # constants every trial gets

Helper constants that are not settings must start with an underscore.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from search.config.settings import Settings, convert_settings, field_types, settings_from_mapping
from trainables.names import did_you_mean

__all__ = [
    "TRIAL_SETTINGS",
    "SpaceFile",
    "SpaceFunction",
    "SpaceParameterError",
    "load_space",
    "naming_errors",
    "resolve_settings",
    "trial_defaults",
]

# Trial-level settings: each trial's config carries them, and a space may search or override them.
TRIAL_SETTINGS = ("model", "weights", "max_epochs", "seed")


@dataclass(frozen=True)
class SpaceFile:
    path: Path
    text: str
    space: Callable[[Any], dict | None]
    settings: dict[str, Any]  # the file's upper-case settings, as lower-case field names


def load_space(path: str | Path) -> SpaceFile:
    """Import a space file, raising ValueError that names the file for any problem."""
    path = Path(path)
    if not path.is_file():
        near = sorted(p.name for p in path.parent.glob("*.py")) if path.parent.is_dir() else []
        raise ValueError(
            f"space file {str(path)!r} does not exist"
            + (f"; {path.parent}/ holds {near}" if near else "")
            + did_you_mean(path.name, near)
        )
    text = path.read_text()
    module = _execute(path, text)
    space = getattr(module, "space", None)
    if not callable(space):
        raise ValueError(f"space file {str(path)!r} defines no function `space(trial)`")
    known = field_types()
    settings = {}
    for name, value in vars(module).items():
        if name.startswith("_") or not name.isupper() or isinstance(value, (types.ModuleType, type)):
            continue
        key = name.lower()
        if key not in known:
            raise ValueError(
                f"space file {str(path)!r}: {name} is not a setting"
                + did_you_mean(key.upper(), [k.upper() for k in known])
                + "; prefix helper constants with an underscore"
            )
        settings[key] = value
    return SpaceFile(path=path, text=text, space=space, settings=settings)


def _execute(path: Path, text: str) -> types.ModuleType:
    try:
        code = compile(text, str(path), "exec")
    except SyntaxError as error:
        raise ValueError(f"space file {str(path)!r}, line {error.lineno}: syntax error: {error.msg}") from None
    module = types.ModuleType(f"_space_{path.stem}")
    module.__file__ = str(path)
    try:
        exec(code, module.__dict__)
    except Exception as error:
        raise ValueError(f"space file {str(path)!r} failed to import: {type(error).__name__}: {error}") from None
    return module


class SpaceFunction:
    """A space file's ``space(trial)`` that pickles as its source text.

    Ray Tune pickles the searcher, space function included, into the experiment state; a function
    from a file loaded by path cannot be pickled by reference, so this carries the text instead.
    """

    def __init__(self, path: str | Path, text: str):
        self.path, self.text = str(path), text
        self._function: Callable | None = None

    def __call__(self, trial: Any) -> dict | None:
        if self._function is None:
            self._function = _execute(Path(self.path), self.text).space
        return self._function(naming_errors(trial, self.path))

    def __getstate__(self) -> dict[str, str]:
        return {"path": self.path, "text": self.text}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.__init__(state["path"], state["text"])


class SpaceParameterError(ValueError):
    """A ``trial.suggest_*`` call of a space file that Optuna refused, naming the parameter and line."""


class _NamingTrial:
    """An Optuna trial whose ``suggest_*`` errors name the space file, its line, the parameter, the
    call's values and Optuna's rule. Everything else is the trial's own."""

    def __init__(self, trial: Any, path: str):
        self._trial, self._path = trial, path

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._trial, name)
        if not name.startswith("suggest_") or not callable(attribute):
            return attribute
        path = self._path

        def suggest(*args: Any, **kwargs: Any) -> Any:
            try:
                return attribute(*args, **kwargs)
            except (ValueError, TypeError) as error:
                caller = sys._getframe(1)  # the space file's line, when the call is written there
                line = f", line {caller.f_lineno}" if caller.f_code.co_filename == path else ""
                parameter = args[0] if args else kwargs.get("name", "?")
                shown = ", ".join([*(repr(a) for a in args), *(f"{k}={v!r}" for k, v in kwargs.items())])
                raise SpaceParameterError(
                    f"space file {path!r}{line}: parameter {parameter!r}: trial.{name}({shown}) is refused: {error}"
                ) from None

        return suggest


def naming_errors(trial: Any, path: str | Path) -> Any:
    """``trial`` with ``suggest_*`` errors that name the space file's line and the parameter."""
    return _NamingTrial(trial, str(path))


def resolve_settings(space: SpaceFile, overrides: dict[str, Any]) -> Settings:
    """Defaults, then the space file's settings, then the CLI's overrides."""
    source = f"space file {str(space.path)!r}"
    merged = convert_settings(space.settings, source) | convert_settings(overrides, "command line")
    return settings_from_mapping(merged, source + (" with the command line's options" if overrides else ""))


def trial_defaults(settings: Settings, threads: int) -> dict[str, Any]:
    """The settings every trial's config starts from, before the space's parameters."""
    values = {key: getattr(settings, key) for key in TRIAL_SETTINGS}
    values["threads"] = threads
    return values
