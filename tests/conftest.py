import sys
from pathlib import Path

import pytest

# Test helpers (harness.py, maglev_reference.py) import as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _away_from_the_checkout(tmp_path, monkeypatch):
    """Every test (and every process it starts) runs in its own folder: from
    the repository root, `python -m rplb` would import the source tree's
    rplb/ (no compiled extension) instead of the installed package."""
    monkeypatch.chdir(tmp_path)
