"""The pytest configuration itself (issue 16): a hung test fails instead of blocking CI."""

from __future__ import annotations

import pytest


def test_every_test_has_a_timeout(request: pytest.FixtureRequest) -> None:
    assert request.config.pluginmanager.hasplugin("timeout"), "pytest-timeout is not installed"
    timeout = float(request.config.getini("timeout") or 0)
    assert 0 < timeout <= 1800, timeout

