"""A hung test fails with its traceback and the session goes on, even when it waits on Ray.

pytest-timeout (pyproject.toml) decides when a test has run too long; this module decides what
happens then, through pytest-timeout's own hooks: its hook functions below are imported into
tests/conftest.py, which is what registers them. pytest-timeout's two methods fall short here:
- "signal" raises pytest's Failed from a SIGALRM handler. A test blocked in ``ray.get`` never
  sees it: Ray's wait runs Python's signal handlers but lets only KeyboardInterrupt through, so
  the Failed is dropped and the test hangs on (measured: still waiting 2.5 min after a 10 s
  timeout; tests/test_timeouts.py holds the case).
- "thread" prints every thread's stack and ends the whole session (os._exit).

So, at the test's timeout:
1. SIGALRM prints every thread's stack and raises KeyboardInterrupt in the main thread, which
   Ray's waits (and plain Python code) let through;
2. the wrappers around the test's setup, call and teardown turn that KeyboardInterrupt into the
   test's failure, "Timeout (>N s)", chained to the traceback of where it was waiting; a test
   that swallowed it (a search that handles Ctrl-C) fails the same way when it returns;
3. a backstop: if the test has not ended ``GRACE_S`` later (blocked where no signal reaches),
   pytest-timeout's thread method prints the stacks and ends the session (exit 1), so CI never
   hangs.
"""

from __future__ import annotations

import signal
import threading

import pytest

GRACE_S = 60  # after the timeout, how long the test may take to unwind before the session ends
_timed_out: dict[str, float] = {}  # nodeid -> timeout, for the test whose alarm went off


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_set_timer(item, settings):
    """The alarm (1.) and the backstop (3.) for ``item``; True: pytest-timeout sets no timer of its own."""
    import pytest_timeout

    if threading.current_thread() is not threading.main_thread():
        return None  # signals reach the main thread only: pytest-timeout's own "thread" method
    _timed_out.pop(item.nodeid, None)

    def alarm(signum, frame):
        _timed_out[item.nodeid] = settings.timeout
        terminal = item.config.get_terminal_writer()
        terminal.sep("+", title=f"Timeout (>{settings.timeout}s): {item.nodeid}")
        pytest_timeout.dump_stacks(terminal)
        raise KeyboardInterrupt(f"timeout (>{settings.timeout}s)")

    backstop = threading.Timer(settings.timeout + GRACE_S, pytest_timeout.timeout_timer, (item, settings))
    backstop.daemon = True

    def cancel():
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        backstop.cancel()

    item.cancel_timeout = cancel  # what pytest-timeout's pytest_timeout_cancel_timer calls
    signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    backstop.start()
    return True


def _failing_on_timeout(item):
    """The body of the setup/call/teardown wrappers (2.)."""
    try:
        result = yield
    except KeyboardInterrupt:
        if item.nodeid not in _timed_out:
            raise  # a real Ctrl-C: the session stops, as always
        seconds = _timed_out.pop(item.nodeid)  # reported once, in the phase it hit
        pytest.fail(f"Timeout (>{seconds}s): the test was interrupted here (stacks printed above)")
    if item.nodeid in _timed_out:
        pytest.fail(f"Timeout (>{_timed_out.pop(item.nodeid)}s): the test caught the interrupt and went on")
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _failing_on_timeout(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _failing_on_timeout(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item):
    return (yield from _failing_on_timeout(item))
