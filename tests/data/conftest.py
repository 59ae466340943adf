"""Fixtures for the data tests (``shared_data`` comes from tests/conftest.py): a JSON writer.

Hypothesis (tests/data/test_label_fuzz.py) keeps caches in a ``.hypothesis`` folder of the working
directory; they go under ``.pytest_cache`` (ignored by git) instead.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

try:
    from hypothesis.configuration import set_hypothesis_home_dir
except ImportError:  # hypothesis is a dev dependency; only the fuzz tests need it
    pass
else:
    set_hypothesis_home_dir(Path(__file__).resolve().parents[2] / ".pytest_cache" / "hypothesis")


@pytest.fixture
def write_json(tmp_path):
    """``write_json(obj, name="labels.json") -> Path``; NaN/Infinity are written as JSON allows
    Python to (non-standard tokens real exporters sometimes produce)."""

    def write(obj, name: str = "labels.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(obj, indent=1), encoding="utf-8")
        return path

    return write
