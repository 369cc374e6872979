"""Make the test-only modules in this folder importable and keep matplotlib off-screen."""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
sys.path.insert(0, str(Path(__file__).parent))
