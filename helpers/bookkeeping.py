"""Bookkeeping shared by the from-scratch norm modules: parameters, buffers, repr, old checkpoints.

The norm's arithmetic stays in its chapter; what lives here is what ``torch.nn``'s norm modules do
identically around it (``_NormBase``, ``GroupNorm``, ``LayerNorm``), written once.
"""

from collections.abc import Sequence

import torch
from torch import nn

RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


def register_affine(
    module: nn.Module,
    shape: int | Sequence[int],
    affine: bool,
    bias: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Register ``weight`` (and ``bias`` if asked) as parameters of ``shape``, or as None, like torch.nn."""
    if affine:
        module.weight = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
        if bias:
            module.bias = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
            return
    else:
        module.register_parameter("weight", None)
    module.register_parameter("bias", None)


def reset_affine(module: nn.Module) -> None:
    """Set ``weight`` to ones and ``bias`` to zeros, skipping whichever is None."""
    with torch.no_grad():
        if module.weight is not None:
            module.weight.fill_(1)
        if module.bias is not None:
            module.bias.zero_()


def register_running_stats(
    module: nn.Module,
    num_features: int,
    track_running_stats: bool,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Register running_mean, running_var and num_batches_tracked as torch.nn does (all None if untracked)."""
    if not track_running_stats:
        for name in RUNNING_STATS:
            module.register_buffer(name, None)
        return
    module.register_buffer("running_mean", torch.zeros(num_features, device=device, dtype=dtype))
    module.register_buffer("running_var", torch.ones(num_features, device=device, dtype=dtype))
    # like torch.nn: the counter is a long on the module's device, whatever the dtype argument
    module.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))


def reset_running_stats(module: nn.Module) -> None:
    """Running mean 0, running variance 1, counter 0; nothing to do when statistics are not tracked."""
    if module.running_mean is None:
        return
    module.running_mean.zero_()
    module.running_var.fill_(1)
    module.num_batches_tracked.zero_()


def format_extra_repr(*positional: object, **options: object) -> str:
    """torch.nn's ``extra_repr`` layout: positional values, then ``name=value`` pairs, comma-separated."""
    return ", ".join([str(value) for value in positional] + [f"{k}={v}" for k, v in options.items()])


def default_num_batches_tracked(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """Give a checkpoint from before state-dict version 2 the ``num_batches_tracked`` it lacks, as torch does.

    Call it first in ``_load_from_state_dict``; it adds the module's current counter (or 0 on the
    meta device or when the module has none) if the module tracks statistics and the key is missing.
    """
    version = local_metadata.get("version", None)
    key = prefix + "num_batches_tracked"
    if (version is not None and version >= 2) or not module.track_running_stats or key in state_dict:
        return
    counter = module.num_batches_tracked
    usable = counter is not None and counter.device != torch.device("meta")
    state_dict[key] = counter if usable else torch.tensor(0, dtype=torch.long)
