"""Keep matplotlib off-screen in every test, and run Triton kernels on the CPU interpreter where
there is no GPU: Triton reads TRITON_INTERPRET once, when first imported, and other tests import
it first (torch's dispatcher modes and torch.compile do). The test-only modules in this folder are
importable through pytest's ``pythonpath`` setting in pyproject.toml."""

import os

import matplotlib
import torch

matplotlib.use("Agg")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
