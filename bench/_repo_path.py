"""Imported first by benches run as `python bench/NAME.py`: puts the repository root on sys.path, so that the
test helpers (tests/, not an installed package) import like the rest."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)
