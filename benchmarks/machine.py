"""Facts about the machine a benchmark ran on, shared by every benchmark script."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import psutil


def dist_version(dist: str) -> str:
    """The installed version of a distribution, or ``not installed``."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def cpu_name() -> str:
    """The CPU's model name: py-cpuinfo's when installed, else /proc/cpuinfo's."""
    try:
        import cpuinfo

        name = cpuinfo.get_cpu_info().get("brand_raw")
        if name:
            return str(name)
    except Exception:  # py-cpuinfo missing or unable to read this CPU: fall back
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags(wanted: tuple[str, ...] = ("avx2", "avx512f", "fma", "neon", "asimd")) -> str:
    """Which of the SIMD extensions that matter for vector search the CPU has."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        present = set(text.split("flags", 1)[1].split("\n", 1)[0].split())
    except (OSError, IndexError):
        return ""
    return " ".join(f for f in wanted if f in present)


def base_machine_info(env_vars: tuple[str, ...]) -> dict[str, Any]:
    """CPU, cores, memory, load, Python and numpy, and the given environment variables."""
    return {
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_at_start": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "env": {k: os.environ.get(k, "") for k in env_vars},
    }
