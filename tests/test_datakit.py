"""Where the tests find the real data: ``AISLE_SHARED_DATA``, else ``../shared/data``
beside the repository; a test whose data is in neither is skipped, saying where it looked."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.datakit import ENV, ROOT, candidates, shared


def test_the_variable_is_looked_in_first_then_the_folder_beside_the_repository(
    tmp_path: Path,
) -> None:
    (tmp_path / "mot" / "Mine").mkdir(parents=True)
    env = {ENV: str(tmp_path)}
    assert candidates(env) == [tmp_path, ROOT.parent / "shared" / "data"]
    assert shared("mot/Mine", env) == tmp_path / "mot" / "Mine"
    assert candidates({}) == [ROOT.parent / "shared" / "data"]
    beside = ROOT.parent / "shared" / "data" / "mot" / "TUD-Campus"
    want = beside if beside.exists() else None
    assert shared("mot/TUD-Campus", env) == want, "what the variable lacks, the folder has"
    assert shared("mot/TUD-Campus", {ENV: str(tmp_path / "nowhere")}) == want
    assert shared("mot/Nobody", env) is None


def test_a_test_whose_data_is_nowhere_is_skipped_saying_where_it_looked(tmp_path: Path) -> None:
    """As in a clone elsewhere: a copy of the test that asks for data nobody has."""
    test = tmp_path / "test_needs.py"
    test.write_text(
        textwrap.dedent(
            """
            from tests.datakit import needs

            DATA, needs_it = needs("mot/Nobody-Has-This")

            @needs_it
            def test_it():
                raise AssertionError("ran without its data")
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(test), "-rs", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", ENV: str(tmp_path)},
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    said = done.stdout.replace("\n", " ")
    assert "1 skipped" in said
    assert f"no {tmp_path}/mot/Nobody-Has-This and {ROOT.parent}/shared/data/mot/" in said
    assert f"set {ENV} to the folder that holds mot/Nobody-Has-This" in said
