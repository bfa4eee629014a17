"""Every change is held to one style: ruff with the rules in pyproject.toml ([tool.ruff]): pycodestyle,
pyflakes (unused imports and names), import order, bugbear (e.g. zip without strict=) and pyupgrade."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    ruff = Path(sys.executable).parent / "ruff"
    assert ruff.exists(), "ruff is missing: `make install` installs the dev extra, which pins it"
    done = subprocess.run([str(ruff), "check", "--no-cache", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:]


def test_ruff_with_these_rules_fails_on_an_unused_import_and_a_lax_zip(tmp_path):
    ruff = Path(sys.executable).parent / "ruff"
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef pairs(a, b):\n    return list(zip(a, b))\n")
    done = subprocess.run([str(ruff), "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(bad)],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "F401" in done.stdout and "B905" in done.stdout, done.stdout
