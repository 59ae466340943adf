"""Fixtures for the data tests (``shared_data`` comes from tests/conftest.py): a JSON writer."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def write_json(tmp_path):
    """``write_json(obj, name="labels.json") -> Path``; NaN/Infinity are written as JSON allows
    Python to (non-standard tokens real exporters sometimes produce)."""

    def write(obj, name: str = "labels.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(obj, indent=1), encoding="utf-8")
        return path

    return write
