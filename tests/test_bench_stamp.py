"""``bench/stamp.py``: what a benchmark says it was measured on, read from the machine's files."""

from __future__ import annotations

from bench.stamp import cpu_model, is_busy, os_name

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme

processor\t: 1
model name\t: AMD EPYC 7B13
"""


def test_the_cpu_model_is_the_first_processors_model_name() -> None:
    assert cpu_model(CPUINFO) == "AMD EPYC 7B13"


def test_a_cpuinfo_without_a_model_name_gives_nothing() -> None:
    assert cpu_model("processor\t: 0\nflags\t\t: fpu\n") == ""


def test_the_os_name_is_the_pretty_name_without_its_quotes() -> None:
    release = 'NAME="Debian GNU/Linux"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'
    assert os_name(release) == "Debian GNU/Linux 12 (bookworm)"
    assert os_name("ID=debian\n") == ""


def test_a_machine_is_busy_once_the_load_reaches_half_its_cores() -> None:
    assert not is_busy(0.9, 2)
    assert is_busy(1.0, 2)
    assert is_busy(0.5, 0)  # no core count: taken as one
