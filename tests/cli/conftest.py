"""Every CLI test runs with its own HOME and XDG_DATA_HOME (in ``tmp_path``), in-process
and in the processes it starts, so the user's own key and address book are never touched."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's HOME; XDG_DATA_HOME is ``tmp_path / "xdg"``."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return tmp_path / "home"
