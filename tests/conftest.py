"""Shared fixtures: every test runs on a fresh journal directory."""

from __future__ import annotations

import pytest


@pytest.fixture
def journal_path(tmp_path):
    return tmp_path / "journal"
