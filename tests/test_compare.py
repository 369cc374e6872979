"""The comparison harness must pass a correct implementation and catch every planted bug."""

import pytest
import torch
import torch.nn.functional as F
from scratch_norms import PlantedBatchNorm2d
from torch import nn

from helpers import (
    BuiltinNormCalled,
    Case,
    ComparisonError,
    assert_same_signature,
    compare_sweep,
    compare_with_torch,
    forbid_builtin_norms,
    raised,
)

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
    report = compare_with_torch(PlantedBatchNorm2d(3), nn.BatchNorm2d(3), (1, 3, 1, 1))
    exception_rows = [row for row in report.rows if row.name.endswith("exception")]
    assert len(exception_rows) == 3 and all(row.ok for row in exception_rows)
    assert "Expected more than 1 value per channel" in exception_rows[0].note
    summary = report.summary()
    assert "all equal; both raised the same exception (train step 1: ValueError" in summary


def test_an_error_where_torch_has_none_is_a_difference():
    report = compare_with_torch(
        PlantedBatchNorm2d(3, bug="wrong reduction axes"), nn.BatchNorm2d(3), (1, 3, 1, 2), raise_on_difference=False
    )
    row = report.first_difference
    assert row.name == "train step 1: exception" and row.note.startswith("torch: no error; ours: ")


def test_same_exception_type_with_another_message_is_a_difference():
    with pytest.raises(ComparisonError, match="train step 1: exception differs") as caught:
        compare_with_torch(PlantedBatchNorm2d(3, bug="wrong error message"), nn.BatchNorm2d(3), (1, 3, 1, 1))
    note = caught.value.report.first_difference.note
    assert "torch: ValueError: Expected" in note and "ours: ValueError: Expected" in note and "x.shape" in note


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


class CallsAtenDirectly(ScratchLayerNorm):
    """Walks around the Python-level trap: the aten op itself, or the C++ binding of the function."""

    def __init__(self, features: int, route: str):
        super().__init__(features)
        self.route = route

    def forward(self, x):
        if self.route == "torch.ops.aten.native_layer_norm":
            return torch.ops.aten.native_layer_norm(x, (x.shape[-1],), self.weight, self.bias, 1e-5)[0]
        if self.route == "torch._C._VariableFunctions.layer_norm":
            return torch._C._VariableFunctions.layer_norm(x, (x.shape[-1],), self.weight, self.bias)
        if self.route == "torch.ops.aten._fused_rms_norm":
            return torch.ops.aten._fused_rms_norm(x, [x.shape[-1]], self.weight, 1e-5)[0]
        raise AssertionError(self.route)


@pytest.mark.parametrize(
    "route,op",
    [
        ("torch.ops.aten.native_layer_norm", "aten::native_layer_norm"),
        ("torch._C._VariableFunctions.layer_norm", "aten::"),
        ("torch.ops.aten._fused_rms_norm", "aten::_fused_rms_norm"),
    ],
)
def test_aten_norm_op_is_caught_at_the_dispatcher(route, op):
    with pytest.raises(BuiltinNormCalled, match=op):
        compare_with_torch(CallsAtenDirectly(3, route), nn.LayerNorm(3), (2, 3))


def test_every_aten_norm_op_is_forbidden_and_nothing_elementary():
    from helpers.compare import FORBIDDEN_ATEN_OPS

    for op in ("native_batch_norm", "_native_batch_norm_legit", "native_layer_norm", "native_group_norm",
               "batch_norm_stats", "_fused_rms_norm", "native_layer_norm_backward", "rms_norm"):
        assert op in FORBIDDEN_ATEN_OPS
    for op in ("mean", "var", "sum", "rsqrt", "linalg_vector_norm", "normal", "_weight_norm"):
        assert op not in FORBIDDEN_ATEN_OPS


def test_sweep_returns_a_table_when_every_case_is_equal():
    table = compare_sweep(
        [
            Case("float64", PlantedBatchNorm2d(3), nn.BatchNorm2d(3), SHAPE),
            Case("float32", PlantedBatchNorm2d(3), nn.BatchNorm2d(3), SHAPE, dtype=torch.float32),
            Case("one value", PlantedBatchNorm2d(3), nn.BatchNorm2d(3), (1, 3, 1, 1)),
        ]
    )
    text = str(table)
    assert "float32" in text and "3 cases: all equal" in text
    assert "both raised train step 1: ValueError" in text
    assert "<table>" in table._repr_html_()


def test_sweep_names_the_first_case_that_differs():
    cases = [
        Case("correct", PlantedBatchNorm2d(3), nn.BatchNorm2d(3), SHAPE),
        Case("eval bug", PlantedBatchNorm2d(3, bug="ignores eval mode"), nn.BatchNorm2d(3), SHAPE),
        Case("axes bug", PlantedBatchNorm2d(3, bug="wrong reduction axes"), nn.BatchNorm2d(3), SHAPE),
    ]
    with pytest.raises(ComparisonError, match=r"^case 'eval bug': eval: output differs from torch.nn"):
        compare_sweep(cases)


def test_sweep_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one case"):
        compare_sweep([])
    with pytest.raises(TypeError, match="Case objects"):
        compare_sweep([(PlantedBatchNorm2d(3), nn.BatchNorm2d(3), SHAPE)])
    with pytest.raises(TypeError, match="always raises"):
        Case("x", PlantedBatchNorm2d(3), nn.BatchNorm2d(3), SHAPE, raise_on_difference=False)


def test_same_signature_passes_and_a_changed_default_fails():
    def reference(num_features, eps=1e-5, momentum=0.1, *, bias=True):
        pass

    def same(num_features, eps=1e-5, momentum=0.1, *, bias=True):
        pass

    def other_default(num_features, eps=1e-3, momentum=0.1, *, bias=True):
        pass

    def positional_bias(num_features, eps=1e-5, momentum=0.1, bias=True):
        pass

    assert_same_signature(same, reference)
    for wrong in (other_default, positional_bias):
        with pytest.raises(AssertionError, match="signatures differ"):
            assert_same_signature(wrong, reference)


def test_raised_reports_type_and_message():
    assert raised(nn.GroupNorm, 3, 10) == "ValueError: num_channels (10) must be divisible by num_groups (3)"
    assert raised(nn.GroupNorm, 2, 10) == "no error"


class SavesItsOutput(torch.autograd.Function):
    """Autograd detaches a saved output through ``aten.detach.default``: the trap must let it by."""

    @staticmethod
    def forward(ctx, x):
        y = x.exp()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y


def test_a_function_that_saves_its_output_runs_inside_the_trap():
    x = torch.randn(3, requires_grad=True)
    with forbid_builtin_norms():
        SavesItsOutput.apply(x).sum().backward()
    assert torch.allclose(x.grad, x.detach().exp())
