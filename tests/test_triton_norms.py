"""The Triton kernels equal torch.nn: outputs and every gradient (CPU: Triton's interpreter)."""

import pytest
import torch

# helpers.triton_norms first: it sets TRITON_INTERPRET=1 (no CUDA) before triton is imported
triton_norms = pytest.importorskip("helpers.triton_norms", reason="Triton ships Linux wheels only")

import triton  # noqa: E402

from helpers import ComparisonError, compare_with_torch  # noqa: E402
from helpers.triton_norms import TritonLayerNorm, TritonRMSNorm  # noqa: E402

HIDDEN = [7, 33, 100]  # not powers of two: the masked tail of each block is exercised
BF16 = {"dtype": torch.bfloat16, "atol": 5e-2, "rtol": 5e-2}  # a few bf16 rounding steps
FP32 = {"dtype": torch.float32, "atol": 1e-5, "rtol": 1e-4}


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("settings", [FP32, BF16], ids=["fp32", "bf16"])
def test_layer_norm_equals_torch(hidden, settings):
    # input_scale 0.1: variance 1e-2, so a dropped or misplaced eps shows
    compare_with_torch(TritonLayerNorm(hidden), torch.nn.LayerNorm(hidden), (5, hidden),
                       input_scale=0.1, **settings)


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("settings", [FP32, BF16], ids=["fp32", "bf16"])
def test_rms_norm_equals_torch(hidden, settings):
    compare_with_torch(TritonRMSNorm(hidden, eps=1e-5), torch.nn.RMSNorm(hidden, eps=1e-5),
                       (2, 4, hidden), input_scale=0.1, **settings)


def test_rms_norm_default_eps_matches_torch_in_bf16():
    compare_with_torch(TritonRMSNorm(33), torch.nn.RMSNorm(33), (3, 33), input_scale=1e-3, **BF16)


def test_layer_norm_without_bias_and_without_affine():
    compare_with_torch(TritonLayerNorm(33, bias=False), torch.nn.LayerNorm(33, bias=False),
                       (4, 33), **FP32)
    compare_with_torch(TritonLayerNorm(33, elementwise_affine=False),
                       torch.nn.LayerNorm(33, elementwise_affine=False), (4, 33), **FP32)


def test_strided_rows_are_read_with_their_stride():
    wide = torch.randn(6, 40)
    x = wide[:, :33]  # row stride 40, not 33
    weight, bias = torch.randn(33), torch.randn(33)
    expected = torch.nn.functional.layer_norm(x, (33,), weight, bias)
    torch.testing.assert_close(triton_norms.layer_norm(x, 33, weight, bias), expected)


@pytest.mark.parametrize("shape,groups", [((3, 6, 5, 7), 3), ((2, 4, 50, 50), 2), ((8, 5, 3), 5)])
def test_group_norm_forward_equals_torch(shape, groups):
    generator = torch.Generator().manual_seed(0)
    x = 3 + torch.randn(shape, generator=generator)  # an offset: the merged mean must be exact
    weight, bias = torch.randn(shape[1], generator=generator), torch.randn(shape[1], generator=generator)
    expected = torch.nn.functional.group_norm(x, groups, weight, bias)
    torch.testing.assert_close(triton_norms.group_norm(x, groups, weight, bias), expected)


def test_group_norm_merges_blocks_exactly(monkeypatch):
    # blocks of 64 elements force the block-by-block merge of mean and M2 (Chan's formula)
    monkeypatch.setattr(triton_norms, "GROUP_NORM_MAX_BLOCK", 64)
    x = 100 + torch.randn(2, 4, 9, 11, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(triton_norms.group_norm(x, 2), torch.nn.functional.group_norm(x, 2))


def test_bad_input_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="normalize over the last dimension only"):
        triton_norms.layer_norm(torch.randn(2, 3, 4), (3, 4))
    with pytest.raises(ValueError, match="divisible by num_groups"):
        triton_norms.group_norm(torch.randn(2, 7, 4), 2)
    with pytest.raises(RuntimeError, match="forward-only"):
        triton_norms.group_norm(torch.randn(2, 4, 3, requires_grad=True), 2)


# --- the checker catches planted bugs ----------------------------------------------------------


class LayerNormWithoutEps(TritonLayerNorm):
    """A planted bug: the kernel runs with eps = 0."""

    def forward(self, x):
        return triton_norms.layer_norm(x, self.normalized_shape, self.weight, self.bias, 0.0)


def launch_with_packed_row_stride(x: torch.Tensor, weight, bias) -> torch.Tensor:
    """A planted bug: the forward kernel launched with row stride = hidden, whatever x's is."""
    n_rows, n_cols = x.shape
    y = torch.empty((n_rows, n_cols))
    mean, rstd = torch.empty(n_rows), torch.empty(n_rows)
    block = triton.next_power_of_2(n_cols)
    triton_norms.layer_norm_forward_kernel[(n_rows,)](
        x, y, weight, bias, mean, rstd, n_cols, n_cols, n_cols, 1e-5, BLOCK=block)
    return y


def test_checker_catches_a_dropped_eps():
    with pytest.raises(ComparisonError, match="differs from torch.nn"):
        compare_with_torch(LayerNormWithoutEps(33), torch.nn.LayerNorm(33), (5, 33),
                           input_scale=0.1, **FP32)


def test_checker_catches_a_wrong_row_stride():
    x = torch.randn(6, 40)[:, :33]
    weight, bias = torch.randn(33), torch.randn(33)
    expected = torch.nn.functional.layer_norm(x, (33,), weight, bias)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(launch_with_packed_row_stride(x, weight, bias), expected)


def test_checker_catches_a_wrong_dgamma_reduction(monkeypatch):
    # a planted bug in stage 2: only the first program's partial sums are added up
    def first_partial_only(partial, like):
        return partial[0].to(like.dtype)

    monkeypatch.setattr(triton_norms, "_reduce_partials", first_partial_only)
    with pytest.raises(ComparisonError, match="grad weight"):
        compare_with_torch(TritonLayerNorm(33), torch.nn.LayerNorm(33), (5, 33), **FP32)
