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


def run_info(*, load_before: float | None = None, **extra) -> dict:
    """:func:`machine_info` plus what a timing depends on: torch and its thread count, the date, and
    the 1-minute load average before (``load_before``) and now (a busy machine shows here)."""
    import datetime

    import torch

    info = {**machine_info(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "date": datetime.date.today().isoformat()}
    if load_before is not None:
        info["load_average_1m"] = {"before": load_before, "after": os.getloadavg()[0]}
    return {**info, **extra}


def write_result(path: Path, result: dict) -> None:
    """Write a benchmark's result JSON (sorted keys) and say where."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}")
