"""Reproducibility: one call that seeds every random number generator a chapter uses."""

import os
import random

import numpy as np
import torch


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch, run PyTorch on one CPU thread, and return a fresh
    ``torch.Generator`` seeded alike.

    Chapters call this once, in their first code cell, so that re-running a notebook reproduces
    its stored outputs (which nbval checks). The returned generator is for code that wants its own
    stream without disturbing the global one.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # How a reduction is split across threads changes its summation order, hence its last bits:
    # one thread makes the stored outputs independent of the reader's number of cores.
    torch.set_num_threads(1)
    # Hash randomisation only affects subprocesses started from here (e.g. DataLoader workers).
    os.environ["PYTHONHASHSEED"] = str(seed)
    return torch.Generator().manual_seed(seed)
