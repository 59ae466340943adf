"""What every benchmark result records about the machine it ran on, and how it is written."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np


def machine_info() -> dict:
    """Platform, CPU model and count, Python and NumPy versions."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def write_result(path: Path, result: dict) -> None:
    """Write a benchmark's result JSON (sorted keys) and say where."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}")
