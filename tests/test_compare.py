"""The comparison harness must pass a correct implementation and catch every planted bug."""

import pytest
import torch
import torch.nn.functional as F
from scratch_norms import PlantedBatchNorm2d
from torch import nn

from helpers import BuiltinNormCalled, ComparisonError, compare_with_torch, forbid_builtin_norms

SHAPE = (4, 3, 2, 2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_correct_implementation_passes(dtype):
    report = compare_with_torch(PlantedBatchNorm2d(3), nn.BatchNorm2d(3), SHAPE, dtype=dtype)
    assert report.ok
    names = [row.name for row in report.rows]
    for expected in [
        "state_dict keys, shapes, dtypes",
        "train step 1: output",
        "train step 1: grad input",
        "train step 1: grad weight",
        "train step 1: grad bias",
        "train step 3: buffer running_var",
        "train step 3: buffer num_batches_tracked",
        "eval: output",
        "eval: buffer running_mean",
        "load_state_dict ours -> torch",
        "load_state_dict torch -> ours",
    ]:
        assert expected in names
    assert "all equal" in report.summary()


@pytest.mark.parametrize(
    "bug,first_difference",
    [
        ("unbiased variance in normalization", "train step 1: output"),
        ("no Bessel correction in running_var", "train step 1: buffer running_var"),
        ("wrong reduction axes", "train step 1: output"),
        ("ignores eval mode", "eval: output"),
        ("running stats as plain attributes", "state_dict keys, shapes, dtypes"),
        ("no num_batches_tracked increment", "train step 1: buffer num_batches_tracked"),
    ],
)
def test_planted_bug_is_caught_and_named(bug, first_difference):
    with pytest.raises(ComparisonError) as caught:
        compare_with_torch(PlantedBatchNorm2d(3, bug=bug), nn.BatchNorm2d(3), SHAPE)
    assert str(caught.value).startswith(f"{first_difference} differs from torch.nn")
    assert caught.value.report.first_difference.name == first_difference


def test_planted_bugs_caught_in_float32_too():
    for bug in ("unbiased variance in normalization", "no Bessel correction in running_var"):
        with pytest.raises(ComparisonError):
            compare_with_torch(PlantedBatchNorm2d(3, bug=bug), nn.BatchNorm2d(3), (16, 3, 4, 4), dtype=torch.float32)


def test_call_to_a_builtin_norm_is_caught():
    with pytest.raises(BuiltinNormCalled, match="batch_norm"):
        compare_with_torch(PlantedBatchNorm2d(3, bug="calls F.batch_norm"), nn.BatchNorm2d(3), SHAPE)


def test_builtin_norms_are_restored_after_the_trap():
    original = F.layer_norm
    with pytest.raises(BuiltinNormCalled):
        with forbid_builtin_norms():
            F.layer_norm(torch.ones(2, 3), (3,))
    assert F.layer_norm is original
    assert torch.isfinite(F.layer_norm(torch.randn(2, 3), (3,))).all()


def test_matching_errors_count_as_equal_behaviour():
    report = compare_with_torch(PlantedBatchNorm2d(3), nn.BatchNorm2d(3), (1, 3, 1, 1), raise_on_difference=False)
    exception_rows = [row for row in report.rows if row.name.endswith("exception")]
    assert exception_rows and not exception_rows[0].ok  # torch raises ValueError, the planted module divides by zero
    assert "Expected more than 1 value per channel" in exception_rows[0].note


def test_report_without_raising_lists_every_difference():
    report = compare_with_torch(
        PlantedBatchNorm2d(3, bug="unbiased variance in normalization"),
        nn.BatchNorm2d(3),
        SHAPE,
        raise_on_difference=False,
    )
    assert not report.ok
    table = str(report)
    assert "DIFFERS" in table and "max abs err" in table
    differing = sum(not row.ok for row in report.rows)
    assert f"{differing} DIFFER, first: train step 1: output" in report.summary()


class ScratchLayerNorm(nn.Module):
    """LayerNorm over the last dimension from elementary ops; ``extra_dim`` plants a shape bug."""

    def __init__(self, features: int, extra_dim: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features))
        self.extra_dim = extra_dim

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        y = (x - mean) / torch.sqrt(var + 1e-5) * self.weight + self.bias
        return y.unsqueeze(0) if self.extra_dim else y


def test_a_module_without_buffers_passes():
    assert compare_with_torch(ScratchLayerNorm(3), nn.LayerNorm(3), (2, 5, 3)).ok


def test_nan_in_the_same_places_is_equal_behaviour():
    report = compare_with_torch(ScratchLayerNorm(3), nn.LayerNorm(3), (2, 3), input_offset=float("nan"))
    assert report.ok


class HidesNaN(ScratchLayerNorm):
    def forward(self, x):
        return torch.nan_to_num(super().forward(x))


def test_nan_in_different_places_is_a_difference():
    with pytest.raises(ComparisonError, match="train step 1: output differs"):
        compare_with_torch(HidesNaN(3), nn.LayerNorm(3), (2, 3), input_offset=float("nan"))


def test_shape_mismatch_is_reported():
    with pytest.raises(ComparisonError, match=r"train step 1: output differs .*shape \(1, 2, 3\) vs torch \(2, 3\)"):
        compare_with_torch(ScratchLayerNorm(3, extra_dim=True), nn.LayerNorm(3), (2, 3))


def test_torch_module_as_ours_is_rejected_as_not_from_scratch():
    with pytest.raises(BuiltinNormCalled):
        compare_with_torch(nn.LayerNorm(3), nn.LayerNorm(3), (2, 3))


@pytest.mark.parametrize("kwargs,message", [({"steps": 0}, "steps"), ({"dtype": torch.int64}, "dtype")])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compare_with_torch(PlantedBatchNorm2d(3), nn.BatchNorm2d(3), SHAPE, **kwargs)
