"""Which elements of a tensor share one mean and variance, by formula and measured from torch.nn.

Every norm computes y = (x − μ_S) / sqrt(σ²_S + ε) · γ + β, where S is the set of elements that
are normalized together. This module gives S two ways:

* ``reduction_mask`` from the definition of each norm, and
* ``measured_reduction_mask`` from any module itself: in training mode, output ``j`` depends on
  input ``i`` through the statistics exactly when ``i`` and ``j`` share them, so the non-zero
  pattern of one row of the Jacobian reveals the set.
"""

import copy
from collections.abc import Sequence

import torch
from torch import nn

NORMS = ("batch", "layer", "instance", "group")
# ConvNeXt's "LayerNorm": nn.LayerNorm(C) on an (N, H, W, C) tensor, i.e. over C alone at each position.
CHANNELS_LAST_LAYER = "layer_channels_last"
REDUCTION_SETS = (*NORMS, CHANNELS_LAST_LAYER)


def _check_index(shape: Sequence[int], index: Sequence[int]) -> tuple[int, ...]:
    if len(index) != len(shape):
        raise ValueError(f"index {tuple(index)} has {len(index)} entries, shape {tuple(shape)} has {len(shape)}")
    for i, (k, n) in enumerate(zip(index, shape, strict=True)):
        if not 0 <= k < n:
            raise ValueError(f"index {tuple(index)} is out of range for shape {tuple(shape)} in dimension {i}")
    return tuple(int(k) for k in index)


def reduction_mask(
    norm: str,
    shape: Sequence[int],
    index: Sequence[int],
    *,
    num_groups: int | None = None,
    normalized_ndim: int | None = None,
) -> torch.Tensor:
    """Boolean mask of the elements that share statistics with the element at ``index``.

    ``shape`` is laid out as PyTorch's norms expect: (N, C, *spatial) for ``"batch"``,
    ``"instance"`` and ``"group"``; for ``"layer"`` the last ``normalized_ndim`` dimensions are
    normalized (default: all but the first, i.e. ``normalized_shape = shape[1:]``).
    ``"layer_channels_last"`` is ``nn.LayerNorm(C)`` applied to the channels-last view of an
    (N, C, *spatial) tensor: the C values of one sample at one position.
    """
    shape = tuple(int(n) for n in shape)
    index = _check_index(shape, index)
    if norm not in REDUCTION_SETS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {REDUCTION_SETS}")
    if norm != "layer" and len(shape) < 2:
        raise ValueError(f"{norm} norm needs an (N, C, *) shape, got {shape}")
    if norm == "group":
        if num_groups is None:
            raise ValueError("group norm needs num_groups")
        if num_groups < 1 or shape[1] % num_groups:
            raise ValueError(f"num_channels ({shape[1]}) must be divisible by num_groups ({num_groups})")
    elif num_groups is not None:
        raise ValueError(f"num_groups applies to group norm only, not {norm!r}")
    if norm != "layer" and normalized_ndim is not None:
        raise ValueError(f"normalized_ndim applies to layer norm only, not {norm!r}")

    grids = torch.meshgrid(*(torch.arange(n) for n in shape), indexing="ij")
    same = [grid == k for grid, k in zip(grids, index, strict=True)]
    everything = torch.ones(shape, dtype=torch.bool)
    if norm == "batch":  # one channel, across the batch and all positions
        return everything & same[1]
    if norm == "instance":  # one sample, one channel, all positions
        return same[0] & same[1]
    if norm == CHANNELS_LAST_LAYER:  # one sample, one position, all channels
        mask = everything & same[0]
        for spatial in same[2:]:
            mask = mask & spatial
        return mask
    if norm == "group":  # one sample, the channels of one contiguous group, all positions
        channels_per_group = shape[1] // num_groups
        return same[0] & (grids[1] // channels_per_group == index[1] // channels_per_group)
    # layer: every leading (not normalized) coordinate fixed, the trailing ones free
    if normalized_ndim is None:
        normalized_ndim = len(shape) - 1
    if not 1 <= normalized_ndim <= len(shape):
        raise ValueError(f"normalized_ndim must be in [1, {len(shape)}], got {normalized_ndim}")
    mask = everything
    for leading in same[: len(shape) - normalized_ndim]:
        mask = mask & leading
    return mask


def measured_reduction_mask(module: nn.Module, shape: Sequence[int], index: Sequence[int]) -> torch.Tensor:
    """Measure, from ``module`` itself, which inputs share statistics with the element at ``index``.

    Runs a copy of the module in training mode (so the caller's running statistics are untouched)
    in float64 on a random input and returns the non-zero pattern of ∂y[index]/∂x. Sharing is
    symmetric, so this row of the Jacobian has the same pattern as the column.
    """
    shape = tuple(int(n) for n in shape)
    index = _check_index(shape, index)
    probe = copy.deepcopy(module).double().train()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64, generator=generator, requires_grad=True)
    y = probe(x)
    if y.shape != x.shape:
        raise ValueError(f"module changes the shape {tuple(x.shape)} to {tuple(y.shape)}; expected a norm layer")
    (grad,) = torch.autograd.grad(y[index], x)
    return grad != 0
