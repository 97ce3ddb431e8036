"""The suite runs with a state directory of its own (tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

from ibgateway_server.config import load


def test_the_state_directory_is_not_the_developers(monkeypatch) -> None:
    monkeypatch.delenv("IBGW_STATE_DIR", raising=False)
    state = load(backend="tws").state_directory()
    home_state = Path.home() / ".local" / "state" / "ibgateway"
    assert state != home_state
    assert str(state).startswith(os.environ["XDG_STATE_HOME"])
    assert Path(os.environ["XDG_STATE_HOME"]).name.startswith("ibgw-test-state-")
