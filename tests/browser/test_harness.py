"""The harness skips only for a reason it has checked (no Chromium on PATH, or one that does
not run), and a page that fails reports why."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import PageServer, find_chromium


def test_no_chromium_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    path, why = find_chromium()
    assert path is None
    assert why.startswith("no Chromium on PATH")


def test_chromium_that_does_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\necho 'missing libraries' >&2\nexit 127\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    path, why = find_chromium()
    assert path is None
    assert "exited 127" in why and "missing libraries" in why


def test_chromium_that_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "chromium-browser"
    fake.write_text("#!/bin/sh\necho 'Chromium 1.2.3'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_chromium() == (str(fake), "Chromium 1.2.3")


@pytest.mark.browser
@pytest.mark.timeout(60)
async def test_a_page_that_fails_is_reported(browser: PageServer) -> None:
    # a page that cannot even start (here: a short identity seed) says why, it does not hang
    with pytest.raises(AssertionError, match="seed must be 64 lowercase hex digits"):
        await browser.visit("/ip4/127.0.0.1/tcp/1/ws", b"\x01", [])
