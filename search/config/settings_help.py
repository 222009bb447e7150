"""What each setting means, read from the comments of ``search.config.settings.Settings`` itself.

The comment above a field is its documentation, and its first sentence (what the setting does,
and its unit) is its line in ``python -m search run --help``; so the help and the code cannot
drift. ``GROUPS`` sorts the settings into the sections of the help and of README's Commands.
Reads the source with ``inspect`` and ``tokenize``; imports nothing heavy.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import re
import textwrap
import tokenize

from search.config.settings import Settings

__all__ = ["GROUPS", "field_comments", "first_sentence", "setting_help"]

# The sections of `run --help`, in order, each with its settings in order. Every field of
# Settings is in exactly one (tests/search/test_cli.py checks it).
GROUPS: dict[str, tuple[str, ...]] = {
    "data": (
        "dataset", "data_fraction", "classes", "val_fraction", "test_fraction", "image_size",
        "data_loading", "data_root", "data_cache",
    ),
    "model": ("trainable", "model", "weights"),
    "search": (
        "metric", "mode", "objectives", "trials", "max_epochs", "sampler", "scheduler",
        "grace_period_epochs", "reduction_factor", "pbt_interval_epochs", "pbt_mutate", "repeats", "stopped_trials", "start_with",
        "seed",
    ),
    "resources": (
        "address", "concurrency", "cpus_per_trial", "gpus_per_trial", "workers_per_trial",
        "gpu_packing", "max_failures",
    ),
    "storage": ("storage", "name"),
    "tracking": ("mlflow", "progress_every_s"),
}  # fmt: skip

# A sentence ends at a full stop followed by a capital letter or the end ("e.g. 'x'" goes on).
_SENTENCE_END = re.compile(r"\.(?=\s+[A-Z]|\s*$)")


@functools.cache
def setting_help() -> dict[str, str]:
    """``{field: the first sentence of its comment}`` for every field of Settings."""
    return {name: first_sentence(text) for name, text in field_comments(Settings).items()}


def field_comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` of a dataclass: the comment lines directly above each field, joined.

    A field with no comment right above it (a blank line or code in between) gets "".
    """
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, str] = {}  # line number: the comment's text, for lines holding only a comment
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and not token.line[: token.start[1]].strip():
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines_of = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            lines_of[node.target.id] = node.lineno
    found = {}
    for field in dataclasses.fields(cls):
        line, text = lines_of[field.name] - 1, []
        while line in comments:
            text.insert(0, comments[line])
            line -= 1
        found[field.name] = " ".join(text)
    return found


def first_sentence(text: str) -> str:
    """The text up to its first full stop that a capital letter or the end follows, stop included."""
    end = _SENTENCE_END.search(text)
    return text[: end.end()] if end else text
