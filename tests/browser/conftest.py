"""Fixtures of the real-browser tests: Chromium (or a skip with the reason), the page bundle
(built once per session) and a page server per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from .harness import PageServer, bundle_page, find_chromium, page_server


@pytest.fixture(scope="session")
def chromium() -> str:
    path, why = find_chromium()
    if path is None:
        pytest.skip(f"no runnable Chromium: {why}")
    return path


@pytest.fixture(scope="session")
def page_bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return bundle_page(tmp_path_factory.mktemp("browser-page"))


@pytest_asyncio.fixture
async def browser(chromium: str, page_bundle: bytes) -> AsyncIterator[PageServer]:
    async with page_server(chromium, page_bundle) as server:
        yield server
