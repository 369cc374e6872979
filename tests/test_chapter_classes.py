"""The classes each chapter builds, imported from the notebook and swept against ``torch.nn``.

A regression in a chapter's class fails here even before nbval compares outputs. The chapter's
cells tagged ``export`` (its imports cell and the cells defining what it proves) are executed in
order in a fresh namespace, as LLMs-from-scratch's tests import a chapter's definitions.
"""

import math
from collections.abc import Callable
from functools import cache
from pathlib import Path

import nbformat
import pytest
import torch
from torch import nn

from helpers import Case, ComparisonError, compare_sweep

CHAPTERS = Path(__file__).resolve().parent.parent / "chapters"


@cache
def chapter_namespace(chapter: str) -> dict:
    """Execute the chapter's ``export`` cells and return the names they define."""
    notebook = nbformat.read(CHAPTERS / f"{chapter}.ipynb", as_version=4)
    cells = [c for c in notebook.cells if c.cell_type == "code" and "export" in c.metadata.get("tags", [])]
    if not cells:
        raise AssertionError(f"{chapter}.ipynb has no cell tagged export")
    namespace = {"__name__": f"chapter_{chapter}"}
    for cell in cells:
        exec(compile(cell.source, f"{chapter}.ipynb", "exec"), namespace)
    return namespace


# chapter -> (class name, torch.nn class, constructor args, constructor kwargs, input shape)
SWEEPS: dict[str, list[tuple[str, type, tuple, dict, tuple]]] = {
    "batch_norm": [
        ("BatchNorm1d", nn.BatchNorm1d, (3,), {}, (8, 3)),
        ("BatchNorm1d", nn.BatchNorm1d, (3,), {"momentum": None}, (6, 3, 5)),
        ("BatchNorm2d", nn.BatchNorm2d, (3,), {}, (4, 3, 5, 5)),
        ("BatchNorm2d", nn.BatchNorm2d, (3,), {"affine": False, "track_running_stats": False}, (4, 3, 2, 3)),
        ("BatchNorm2d", nn.BatchNorm2d, (3,), {"bias": False}, (4, 3, 2, 3)),
        ("BatchNorm3d", nn.BatchNorm3d, (3,), {"eps": 1e-3, "momentum": 0.3}, (2, 3, 3, 4, 4)),
    ],
    "layer_norm": [
        ("LayerNorm", nn.LayerNorm, (5,), {}, (4, 6, 5)),
        ("LayerNorm", nn.LayerNorm, ([3, 5],), {"elementwise_affine": False}, (4, 3, 5)),
        ("LayerNorm", nn.LayerNorm, (5,), {"bias": False, "eps": 1e-3}, (7, 5)),
        ("RMSNorm", nn.RMSNorm, (5,), {}, (4, 6, 5)),
        ("RMSNorm", nn.RMSNorm, ([3, 5],), {"eps": 1e-6}, (4, 3, 5)),
    ],
    "instance_norm": [
        ("InstanceNorm1d", nn.InstanceNorm1d, (3,), {}, (4, 3, 7)),
        ("InstanceNorm1d", nn.InstanceNorm1d, (3,), {"affine": True}, (3, 7)),
        ("InstanceNorm2d", nn.InstanceNorm2d, (3,), {"affine": True, "track_running_stats": True}, (4, 3, 5, 5)),
        ("InstanceNorm3d", nn.InstanceNorm3d, (3,), {"momentum": 0.3, "track_running_stats": True}, (2, 3, 3, 4, 4)),
    ],
    "group_norm": [
        ("GroupNorm", nn.GroupNorm, (2, 6), {}, (4, 6, 5, 5)),
        ("GroupNorm", nn.GroupNorm, (3, 6), {"affine": False}, (4, 6, 7)),
        ("GroupNorm", nn.GroupNorm, (1, 4), {"eps": 1e-3}, (2, 4, 3, 3)),
        ("GroupNorm", nn.GroupNorm, (4, 4), {}, (3, 4)),  # one value per group: float64 only
    ],
}


def cases(chapter: str, wrap: Callable[[type], type] = lambda cls: cls) -> list[Case]:
    namespace = chapter_namespace(chapter)
    result = []
    for name, reference, args, kwargs, shape in SWEEPS[chapter]:
        ours = wrap(namespace[name])
        # With one value per group the exact output is β and the gradient 0; ours gets exactly
        # that, torch's float32 kernel rounding noise above atol (group_norm.ipynb shows it).
        one_per_group = name == "GroupNorm" and args[1] // args[0] * math.prod(shape[2:]) == 1
        for dtype in (torch.float64,) if one_per_group else (torch.float64, torch.float32):
            label = f"{name}{args} {kwargs} {shape} {dtype}"
            result.append(Case(label, ours(*args, **kwargs), reference(*args, **kwargs), shape, dtype=dtype))
    return result


@pytest.mark.parametrize("chapter", sorted(SWEEPS))
def test_chapter_classes_equal_torch(chapter):
    compare_sweep(cases(chapter))


def scaled_in_training(cls: type) -> type:
    """The sabotage of the sabotage check: the chapter's class, off by 0.1 % in training mode."""

    class Scaled(cls):
        def forward(self, *args, **kwargs):
            output = super().forward(*args, **kwargs)
            return output * 1.001 if self.training else output

    return Scaled


@pytest.mark.parametrize("chapter", sorted(SWEEPS))
def test_a_class_off_by_a_tenth_of_a_percent_fails(chapter):
    with pytest.raises(ComparisonError, match="train step 1: output differs"):
        compare_sweep(cases(chapter, wrap=scaled_in_training))
