"""What a benchmark's figures were measured on: the commit and the machine, printed first.

A figure without its commit and machine cannot be compared with anything, so every script
in ``bench/`` calls ``print_stamp()`` before it measures, and the tables in
``docs/benchmarks.md`` copy its lines. The load average is printed at the start and at the
end: on a shared machine the absolute figures measure the load as much as the code, and
only ratios taken in the same run still hold.
"""

from __future__ import annotations

import atexit
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A one-minute load average at or above this share of the cores: other work competes.
BUSY_SHARE = 0.5


def cpu_model(cpuinfo: str) -> str:
    """The ``model name`` of /proc/cpuinfo's first processor, or empty."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("model name", "Model", "Hardware"):
            return value.strip()
    return ""


def os_name(os_release: str) -> str:
    """``PRETTY_NAME`` of /etc/os-release, or empty."""
    for line in os_release.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "PRETTY_NAME":
            return value.strip().strip('"')
    return ""


def is_busy(load_1min: float, cores: int) -> bool:
    return load_1min >= BUSY_SHARE * max(cores, 1)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def commit() -> str:
    """The short commit, with ``dirty`` when tracked files differ from it."""
    head = _git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return f"{head} dirty" if dirty else head


def machine() -> str:
    """Cores, CPU model, memory, OS and Python: what the absolute figures depend on."""
    cores = os.cpu_count() or 1
    cpu = cpu_model(_read("/proc/cpuinfo")) or platform.processor() or platform.machine()
    parts = [f"{cores} cores", cpu]
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        parts.append(f"{memory / 2**30:.0f} GiB")
    except (ValueError, OSError, AttributeError):
        pass
    system = os_name(_read("/etc/os-release")) or platform.system()
    parts.append(f"{system}, {platform.system()} {platform.release()}")
    parts.append(f"{platform.python_implementation()} {platform.python_version()}")
    return ", ".join(parts)


def load() -> str:
    """The one-minute load average, and whether the machine is busy by it."""
    try:
        one = os.getloadavg()[0]
    except OSError:
        return "load average unknown"
    busy = " (busy machine)" if is_busy(one, os.cpu_count() or 1) else ""
    return f"load average {one:.2f}{busy}"


def command() -> str:
    """This process's command line, the interpreter as it was called (``.venv/bin/python``)."""
    python = sys.executable
    if python.startswith(f"{Path.cwd()}{os.sep}"):
        python = os.path.relpath(python)
    script = sys.argv[0] if sys.argv else ""
    if Path(script).name.startswith("pytest"):  # run by its own entry point
        return shlex.join([os.path.relpath(script), *sys.argv[1:]])
    return shlex.join([python, *sys.argv])


def lines() -> list[str]:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"commit {commit()}, {now}",
        f"machine: {machine()}",
        f"{load()} at the start",
        f"command: {command()}",
    ]


def print_stamp() -> None:
    """Print the stamp now, and the load average again when the process ends."""
    print("\n".join(f"# {line}" for line in lines()), flush=True)
    atexit.register(lambda: print(f"# {load()} at the end", flush=True))
