"""Shared code of the book *Normalization, executed*.

Chapters import from here (``from helpers import ...``); the package is installed into the
book's virtual environment by ``make``. One module per concern:

* ``axes``     — which elements share statistics: by formula and measured from torch.nn
* ``bookkeeping`` — parameters, running-stat buffers, resets and extra_repr laid out as torch.nn
* ``figures``  — the cube view of the Group Normalization paper and a (B, T, D) sequence view
* ``compare``  — the harness that proves a from-scratch norm equal to torch.nn
* ``repro``    — seeding everything in one call
* ``style``    — one plotting style, with colours and hatches per norm
* ``data``     — small data shipped inside installed packages (no downloads)
* ``stats``    — paired differences with intervals over seeds and test examples
* ``distributed`` — run a function on several CPU processes (gloo), always torn down
* ``sync_batch_norm`` — the workers of the BatchNorm-across-processes chapter
* ``fast_norms`` — naive and saved-statistics norms, bytes saved and moved
* ``triton_norms`` — Triton kernels for LayerNorm, RMSNorm and GroupNorm (Linux)

Modules other than the ones re-exported below are imported by name
(``from helpers.stats import paired_difference``): some start processes or load Triton.
"""

from .axes import NORMS, measured_reduction_mask, reduction_mask
from .compare import (
    BuiltinNormCalled,
    Case,
    ComparisonError,
    ComparisonReport,
    assert_same_signature,
    compare_sweep,
    compare_with_torch,
    forbid_builtin_norms,
    raised,
)
from .data import digits, sample_image, sample_image_path
from .figures import draw_cube, draw_four_cubes, draw_sequence_view, sequence_mask
from .repro import seed_everything
from .style import NORM_STYLES, PALETTE, norm_style, use_book_style

__all__ = [
    "NORMS",
    "NORM_STYLES",
    "PALETTE",
    "BuiltinNormCalled",
    "Case",
    "ComparisonError",
    "ComparisonReport",
    "assert_same_signature",
    "compare_sweep",
    "compare_with_torch",
    "digits",
    "draw_cube",
    "draw_four_cubes",
    "draw_sequence_view",
    "forbid_builtin_norms",
    "measured_reduction_mask",
    "norm_style",
    "raised",
    "reduction_mask",
    "sample_image",
    "sample_image_path",
    "seed_everything",
    "sequence_mask",
    "use_book_style",
]
