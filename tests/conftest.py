"""Suite-wide set-up: the tests never touch the developer's own state.

A gateway on a real TWS keeps its order journal under the state directory
($XDG_STATE_HOME/ibgateway). Tests that start one as a subprocess must not write into the
developer's home, nor share one journal file with another test run going on at the same time.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_STATE_HOME_KEY = "XDG_STATE_HOME"
# (the suite's state directory, what XDG_STATE_HOME was before)
_state_home = pytest.StashKey[tuple[str, str | None]]()


def pytest_configure(config: pytest.Config) -> None:
    state_home = tempfile.mkdtemp(prefix="ibgw-test-state-")
    config.stash[_state_home] = (state_home, os.environ.get(_STATE_HOME_KEY))
    os.environ[_STATE_HOME_KEY] = state_home


def pytest_unconfigure(config: pytest.Config) -> None:
    state_home, previous = config.stash.get(_state_home, ("", None))
    if not state_home:
        return
    if previous is None:
        os.environ.pop(_STATE_HOME_KEY, None)
    else:
        os.environ[_STATE_HOME_KEY] = previous
    shutil.rmtree(state_home, ignore_errors=True)
