"""scripts/setup.sh: after the README's two commands, a new shell finds uv."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.consumer_helpers import ROOT


def test_setup_links_uv_where_new_shells_look(tmp_path: Path) -> None:
    # uv as pip installs it: in a directory a new shell does not have on its PATH.
    pip_bin = tmp_path / "local-bin"
    pip_bin.mkdir()
    uv = pip_bin / "uv"
    uv.write_text("#!/bin/sh\necho 'uv from pip'\n")
    uv.chmod(0o755)
    shared_bin = tmp_path / "usr-local-bin"
    shared_bin.mkdir()
    script = '. scripts/setup.sh && link_uv "$1" && link_uv "$1"'
    env = {"PATH": f"{pip_bin}:/usr/bin:/bin", "HOME": str(tmp_path)}

    setup = subprocess.run(
        ["bash", "-c", script, "setup", str(shared_bin)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    new_shell = subprocess.run(
        ["bash", "-c", "uv"],
        env={"PATH": f"{shared_bin}:/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert setup.returncode == 0, setup.stderr
    assert setup.stdout.count("linked") == 1  # the second run finds the link and keeps it
    assert (shared_bin / "uv").resolve() == uv
    assert new_shell.stdout == "uv from pip\n"
