import itertools

import pytest
import torch
from torch import nn

from helpers.bookkeeping import (
    default_num_batches_tracked,
    format_extra_repr,
    register_affine,
    register_running_stats,
    reset_affine,
    reset_running_stats,
)


class Bookkept(nn.Module):
    """A norm module without arithmetic: only the bookkeeping, laid out as _NormBase does."""

    _version = 2

    def __init__(self, num_features, affine=True, track_running_stats=True, bias=True, device=None, dtype=None):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, 1e-5, 0.1
        self.affine, self.track_running_stats = affine, track_running_stats
        register_affine(self, num_features, affine, bias, device=device, dtype=dtype)
        register_running_stats(self, num_features, track_running_stats, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self):
        reset_running_stats(self)
        reset_affine(self)

    def extra_repr(self):
        return format_extra_repr(
            self.num_features,
            eps=self.eps,
            momentum=self.momentum,
            affine=self.affine,
            bias=self.bias is not None,
            track_running_stats=self.track_running_stats,
        )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        default_num_batches_tracked(self, state_dict, prefix, local_metadata)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


def layout(module):
    """Names, shapes, dtypes and values of everything a module registers, in order."""
    return [(k, tuple(v.shape), v.dtype, v.tolist()) for k, v in module.state_dict().items()] + [
        (k, v is None) for k, v in itertools.chain(module._parameters.items(), module._buffers.items())
    ]


OPTIONS = [
    dict(affine=a, track_running_stats=t, bias=b, dtype=d)
    for a, t, b, d in itertools.product([True, False], [True, False], [True, False], [None, torch.float64])
]


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_layout_and_repr_match_torch_batchnorm(options):
    ours, theirs = Bookkept(3, **options), nn.BatchNorm2d(3, **options)
    assert layout(ours) == layout(theirs)
    assert repr(ours).removeprefix("Bookkept") == repr(theirs).removeprefix("BatchNorm2d")


def test_reset_restores_initial_values():
    ours, theirs = Bookkept(4), nn.BatchNorm2d(4)
    for module in (ours, theirs):
        with torch.no_grad():
            for tensor in module.state_dict().values():
                tensor.add_(3)
        module.reset_parameters()
    assert layout(ours) == layout(theirs)


def test_reset_running_stats_leaves_parameters_and_ignores_untracked():
    module = Bookkept(2)
    with torch.no_grad():
        module.weight.fill_(5)
        module.running_var.fill_(7)
        module.num_batches_tracked.fill_(9)
    reset_running_stats(module)
    assert module.weight.tolist() == [5, 5]
    assert module.running_var.tolist() == [1, 1] and module.num_batches_tracked.item() == 0
    reset_running_stats(Bookkept(2, track_running_stats=False))  # must not raise


def test_counter_is_long_whatever_dtype():
    module = Bookkept(2, dtype=torch.float16)
    assert module.running_mean.dtype == torch.float16
    assert module.num_batches_tracked.dtype == torch.long


def test_format_extra_repr():
    assert format_extra_repr((3,), eps=1e-05, bias=True) == "(3,), eps=1e-05, bias=True"
    assert format_extra_repr(2, 4) == "2, 4"


@pytest.mark.parametrize("version", [None, 1])
def test_old_checkpoint_gets_a_counter_like_torch(version):
    """A version-1 checkpoint lacks num_batches_tracked: both modules load it and keep their counter."""
    results = []
    for module in (Bookkept(3), nn.BatchNorm2d(3)):
        module.num_batches_tracked.fill_(4)
        state = {k: v.clone() for k, v in module.state_dict().items() if k != "num_batches_tracked"}
        state = type(module.state_dict())(state)
        state._metadata = {"": {"version": version}} if version is not None else {"": {}}
        module.load_state_dict(state)
        results.append(module.num_batches_tracked.item())
    assert results == [4, 4]


def test_new_checkpoint_without_counter_is_rejected():
    """Version 2 means the counter must be present: strict loading fails for ours as for torch."""
    for module in (Bookkept(3), nn.BatchNorm2d(3)):
        state = module.state_dict()
        del state["num_batches_tracked"]  # the metadata still says version 2
        with pytest.raises(RuntimeError, match="num_batches_tracked"):
            module.load_state_dict(state)


def test_planted_bug_biased_buffer_layout_is_caught():
    """The layout check catches a module that keeps running stats as plain attributes."""

    class Plain(Bookkept):
        def __init__(self, n):
            super().__init__(n, track_running_stats=False)
            self.running_mean = torch.zeros(n)

    assert layout(Plain(3)) != layout(nn.BatchNorm2d(3))


def test_planted_bug_wrong_reset_is_caught():
    """Resetting running_var to 0 instead of 1 is visible in the layout comparison."""
    ours, theirs = Bookkept(2), nn.BatchNorm2d(2)
    ours.running_var.zero_()
    assert layout(ours) != layout(theirs)
