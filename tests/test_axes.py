"""The formula for each norm's reduction set must equal the set measured from torch.nn."""

import pytest
import torch
from torch import nn

from helpers import measured_reduction_mask, reduction_mask

SHAPES = [(2, 4, 3, 3), (3, 6, 5), (2, 4, 2, 2, 3)]


def torch_module(norm: str, shape: tuple[int, ...], num_groups: int | None = None) -> nn.Module:
    channels, ndim = shape[1], len(shape)
    if norm == "batch":
        return {3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[ndim](channels)
    if norm == "instance":
        return {3: nn.InstanceNorm1d, 4: nn.InstanceNorm2d, 5: nn.InstanceNorm3d}[ndim](channels)
    if norm == "group":
        return nn.GroupNorm(num_groups, channels)
    return nn.LayerNorm(list(shape[1:]))


def some_indices(shape):
    first = tuple(0 for _ in shape)
    last = tuple(n - 1 for n in shape)
    middle = tuple(n // 2 for n in shape)
    return [first, last, middle]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("norm,num_groups", [("batch", None), ("layer", None), ("instance", None), ("group", 2)])
def test_formula_equals_measured(norm, num_groups, shape):
    module = torch_module(norm, shape, num_groups)
    for index in some_indices(shape):
        formula = reduction_mask(norm, shape, index, num_groups=num_groups)
        measured = measured_reduction_mask(module, shape, index)
        assert torch.equal(formula, measured), (norm, shape, index)


@pytest.mark.parametrize("num_groups", [1, 2, 3, 6])
def test_group_mask_sizes(num_groups):
    shape = (2, 6, 4)
    module = nn.GroupNorm(num_groups, 6)
    for index in some_indices(shape):
        formula = reduction_mask("group", shape, index, num_groups=num_groups)
        assert formula.sum() == (6 // num_groups) * 4
        assert torch.equal(formula, measured_reduction_mask(module, shape, index))


def test_group_limits_are_layer_and_instance():
    shape, index = (2, 4, 3, 3), (1, 2, 0, 1)
    assert torch.equal(reduction_mask("group", shape, index, num_groups=1), reduction_mask("layer", shape, index))
    assert torch.equal(reduction_mask("group", shape, index, num_groups=4), reduction_mask("instance", shape, index))


def test_layer_norm_over_last_dimension_of_a_sequence():
    shape, index = (2, 5, 8), (1, 3, 2)
    formula = reduction_mask("layer", shape, index, normalized_ndim=1)
    assert formula.sum() == 8
    assert torch.equal(formula, measured_reduction_mask(nn.LayerNorm(8), shape, index))


def test_measuring_leaves_running_statistics_untouched():
    module = nn.BatchNorm2d(3).eval()
    measured = measured_reduction_mask(module, (2, 3, 2, 2), (0, 0, 0, 0))
    assert measured.sum() == 8  # measured in training mode, though the module is in eval mode
    assert not module.training
    assert module.num_batches_tracked.item() == 0
    assert torch.equal(module.running_mean, torch.zeros(3))


def test_eval_mode_statistics_are_not_shared():
    """A sanity check of the measurement itself: with fixed statistics only the element itself matters."""

    class EvalOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.BatchNorm2d(3)

        def forward(self, x):
            return self.norm.eval()(x)

    measured = measured_reduction_mask(EvalOnly(), (2, 3, 2, 2), (1, 2, 1, 0))
    assert measured.sum() == 1


@pytest.mark.parametrize(
    "args,kwargs,message",
    [
        (("batch", (2, 3), (0, 3)), {}, "out of range"),
        (("batch", (2, 3), (0,)), {}, "has 1 entries"),
        (("cosine", (2, 3), (0, 0)), {}, "unknown norm"),
        (("group", (2, 6, 4), (0, 0, 0)), {}, "needs num_groups"),
        (("group", (2, 6, 4), (0, 0, 0)), {"num_groups": 4}, "divisible"),
        (("batch", (2, 6, 4), (0, 0, 0)), {"num_groups": 2}, "group norm only"),
        (("layer", (2, 6, 4), (0, 0, 0)), {"normalized_ndim": 4}, "normalized_ndim"),
        (("batch", (6,), (0,)), {}, "needs an (N, C, *) shape"),
    ],
)
def test_bad_arguments_raise_clear_errors(args, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        reduction_mask(*args, **kwargs)


def test_measuring_rejects_shape_changing_modules():
    with pytest.raises(ValueError, match="changes the shape"):
        measured_reduction_mask(nn.Flatten(), (2, 3, 2), (0, 0, 0))


class ChannelsLastLayerNorm(nn.Module):
    """ConvNeXt's LayerNorm: nn.LayerNorm(C) on the (N, *spatial, C) view of an (N, C, *spatial) tensor."""

    def __init__(self, channels: int):
        super().__init__()
        self.inner = nn.LayerNorm(channels)

    def forward(self, x):
        return self.inner(x.movedim(1, -1)).movedim(-1, 1)


@pytest.mark.parametrize("shape", SHAPES)
def test_channels_last_layer_norm_formula_equals_measured(shape):
    module = ChannelsLastLayerNorm(shape[1])
    for index in some_indices(shape):
        formula = reduction_mask("layer_channels_last", shape, index)
        assert formula.sum() == shape[1]
        assert torch.equal(formula, measured_reduction_mask(module, shape, index)), (shape, index)


def test_channels_last_layer_norm_is_neither_layer_nor_group_one():
    shape, index = (2, 4, 3, 3), (1, 2, 0, 1)
    channels_last = reduction_mask("layer_channels_last", shape, index)
    assert not torch.equal(channels_last, reduction_mask("layer", shape, index))
    assert not torch.equal(channels_last, reduction_mask("group", shape, index, num_groups=1))
    # a planted bug: forgetting to fix the position gives LayerNorm([C, H, W]), which the check above rejects
    wrong = reduction_mask("layer", shape, index)
    assert not torch.equal(wrong, measured_reduction_mask(ChannelsLastLayerNorm(4), shape, index))
