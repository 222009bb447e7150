"""The per-module test timeouts, computed from a pytest run's ``--durations=0`` output.

    python -m pytest --durations=0 -p no:cacheprovider | tee pytest.log
    python -m tests.timeout_table pytest.log

For each test module: its slowest test (setup + call + teardown, the span pytest-timeout times)
and the timeout that rule gives, ``3 x slowest + 60 s`` rounded up to 10 s, or the default of
pyproject.toml (``timeout``) when that is larger. The factor and the constant are generous on
purpose: the durations were measured on a loaded machine, CI may run on a slower one, and the
first test to use the shared Ray session pays for starting it. The ``pytestmark`` lines at the
top of the test modules hold these numbers, each with the measured figure beside it.
"""

from __future__ import annotations

import collections
import math
import re
import sys

DEFAULT_S = 600  # pyproject.toml: timeout
LINE = re.compile(r"^\s*([0-9.]+)s (setup|call|teardown)\s+(\S+?)::(\S+)")


def timeouts(lines) -> dict[str, tuple[float, str, int]]:
    """module path -> (slowest test's seconds, its name, timeout in s) from --durations lines."""
    per_test: dict[tuple[str, str], float] = collections.defaultdict(float)
    for line in lines:
        match = LINE.match(line)
        if match:
            seconds, _, module, test = match.groups()
            per_test[(module, test)] += float(seconds)
    slowest: dict[str, tuple[float, str]] = {}
    for (module, test), seconds in per_test.items():
        if seconds > slowest.get(module, (-1.0, ""))[0]:
            slowest[module] = (seconds, test)
    return {
        module: (s, test, max(DEFAULT_S, 10 * math.ceil((3 * s + 60) / 10)))
        for module, (s, test) in sorted(slowest.items())
    }


def main() -> None:
    with open(sys.argv[1]) as log:
        table = timeouts(log)
    print(f"{'module':48s} {'slowest test, s':>15s}  timeout, s  slowest test")
    for module, (seconds, test, timeout) in table.items():
        print(f"{module:48s} {seconds:15.1f}  {timeout:10d}  {test}")


if __name__ == "__main__":
    main()
