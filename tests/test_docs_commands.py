"""The commands the docs show are the ones clipflow installs, with keys they take."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from clipflow.cli import download_data
from clipflow.settings.overrides import parse_keys

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _shell_lines(text: str) -> list[str]:
    """Each command line of the ```bash blocks, its trailing # comment cut."""
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    lines = [line.split(" #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_reproduce_doc_shows_the_installed_download_command(capsys):
    """docs/reproduce.md showed ``python scripts/download_data.py --root … --run``, the
    script's old name and flags (kept only for old instructions)."""
    text = (DOCS / "reproduce.md").read_text(encoding="utf-8")
    assert "scripts/download_data.py" not in text
    lines = [line for line in _shell_lines(text) if line.startswith("clipflow-download-data")]
    assert any("run=true" in line for line in lines), lines
    for line in lines:
        argv = shlex.split(line)[1:]
        parse_keys(argv, download_data.KEYS)  # every key is one the command takes
        if not any(a.startswith(("run=", "verify=")) for a in argv):  # the dry run: prints
            with pytest.raises(SystemExit) as info:
                download_data.main(argv)
                raise SystemExit(0)
            assert info.value.code == 0 and "hf download" in capsys.readouterr().out
