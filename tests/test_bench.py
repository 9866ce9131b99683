"""The benchmarks still start: each bench script's --help imports everything it uses (a renamed step
function once broke bench/efficacy.py without any test noticing). Their figures are in docs/, not here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = sorted((Path(__file__).resolve().parents[1] / "bench").glob("*.py"))


@pytest.mark.parametrize("script", BENCH, ids=lambda p: p.name)
def test_bench_script_imports_and_parses_its_arguments(script):
    p = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "usage:" in p.stdout
