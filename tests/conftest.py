"""Test-wide setup: every asyncio test runs on uvloop, as Plum does in production."""

from __future__ import annotations

import pytest
import uvloop


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item):
    return {"uvloop": uvloop.new_event_loop}
