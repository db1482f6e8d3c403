"""The ``synthmask`` console script exits with status 0 when its command succeeds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_console_script_points_at_console_main() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()  # (tomllib needs Python 3.11)
    assert 'synthmask = "synthmask.cli:console_main"' in pyproject


def test_console_main_exits_zero_although_main_returns_the_cli_object() -> None:
    # what a console-script wrapper does: sys.exit(<entry point>()); a returned object -> status 1
    code = (
        "import sys\n"
        "from synthmask import cli\n"
        "cli.main = lambda **kwargs: object()\n"
        "sys.exit(cli.console_main())\n"
    )
    ok = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [sys.executable, "-c", code.replace("cli.console_main()", "cli.main()")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1  # the bug the console entry point avoids
