"""The lines that touch private Django/DRF/SQLite names stay few (issue 19, bench/private_internals.py).

The ceiling is today's count: a new reach into a framework's internals has to replace
one, or come with a benchmark that shows it is needed and a raised ceiling here.
"""

import subprocess
import sys
from pathlib import Path

import pytest

# A scan of the source tree: the same on either database.
pytestmark = pytest.mark.database_independent

CEILING = 19


def test_private_internals_stay_under_the_ceiling():
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "bench/private_internals.py"], cwd=root, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    count = int(out.stdout.split()[0])
    assert count <= CEILING, out.stdout
