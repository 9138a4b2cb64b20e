"""The machine facts every benchmark record carries, so that timings from different records
can be told apart: ``platform.processor()`` alone is empty on most Linux systems."""

from __future__ import annotations

import os
import platform


def machine(**extra: object) -> dict[str, object]:
    """Architecture (or processor name where the platform reports one), CPU count, Python,
    the OMP_NUM_THREADS the run saw, plus what the script adds (its torch threads, say)."""
    return {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), **extra}
