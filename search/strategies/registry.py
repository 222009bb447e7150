"""Registries of search strategies, in the manner of timm's model registry: a dict filled by a decorator.

``SAMPLERS`` (search/strategies/samplers.py) maps a ``--sampler`` name to how the next trial's parameters are
chosen; ``SCHEDULERS`` (search/strategies/schedulers.py) maps a ``--scheduler`` name to when a trial stops (or,
for PBT, what it continues from). One entry per strategy: its builder, its one-line "when to use it",
the settings it reads, and its own validation. Settings are checked against the registries' keys.

Imports neither Ray nor Optuna: an entry's builder imports them when the search starts, so the CLI
checks input without them.

    @SAMPLERS.register("random", settings=("seed",))
    def random_sampler(settings, space):
        "Uniform random sampling: a baseline."
        import optuna
        return optuna.samplers.RandomSampler(seed=settings.seed)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from trainables.names import did_you_mean

if TYPE_CHECKING:
    from search.config.settings import Settings
    from search.config.spaces import SpaceFile

__all__ = ["Registry", "Strategy"]


def _no_check(settings: "Settings", space: "SpaceFile") -> None:
    return None


@dataclass(frozen=True)
class Strategy:
    """One registered strategy."""

    name: str
    # (settings, space) -> the Optuna sampler or Ray Tune scheduler; imports Optuna/Ray itself.
    build: Callable[["Settings", "SpaceFile"], Any]
    # The settings fields this strategy reads, besides metric and mode (the README's table lists them).
    settings: tuple[str, ...] = ()
    # (settings, space) -> None, raising ValueError before any trial starts on what it cannot run.
    check: Callable[["Settings", "SpaceFile"], None] = _no_check
    # Schedulers: how the run's summary names a trial it ended before max_epochs ("" for none).
    stops: str = ""
    # Schedulers: False when the scheduler cannot work beside a searcher (PBT): the trials then
    # start from points the sampler proposes up front, without feedback.
    takes_searcher: bool = True

    @property
    def summary(self) -> str:
        """The first line of the builder's docstring: what it does and when to use it."""
        return (self.build.__doc__ or "").strip().splitlines()[0]


class Registry(dict):
    """``{name: Strategy}`` for one kind of strategy ("sampler" or "scheduler")."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(
        self,
        name: str,
        *,
        settings: tuple[str, ...] = (),
        check: Callable[["Settings", "SpaceFile"], None] = _no_check,
        stops: str = "",
        takes_searcher: bool = True,
    ) -> Callable:
        """Decorator: register the builder under ``name``."""

        def decorate(build: Callable) -> Callable:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if not (build.__doc__ or "").strip():
                raise ValueError(f"{self.kind} {name!r}: its builder needs a docstring saying when to use it")
            self[name] = Strategy(name, build, settings, check, stops, takes_searcher)
            return build

        return decorate

    def entry(self, name: str) -> Strategy:
        """The entry called ``name``; ValueError naming the valid names and the closest one."""
        if name not in self:
            raise ValueError(
                f"`{self.kind}` is {name!r}, but must be one of {list(self)}" + did_you_mean(name, self)
            )
        return self[name]
