"""Keep matplotlib off-screen in every test (the test-only modules in this folder are importable
through pytest's ``pythonpath`` setting in pyproject.toml)."""

import matplotlib

matplotlib.use("Agg")
