"""The plain-PyTorch rungs of the "Making a norm fast" chapter, and the meters it reads.

* the naive formulas, written as a reader first writes them (autograd saves what it likes);
* ``autograd.Function`` versions that save only the input and two numbers per row;
* meters: bytes autograd keeps for the backward, bytes each operator reads and writes, and the
  minimal bytes a norm must move (the memory-bound floor).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def naive_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                     eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last dimension, straight from the formula."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def naive_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dimension, straight from the formula."""
    return x / torch.sqrt((x**2).mean(-1, keepdim=True) + eps) * weight


def naive_group_norm(x: torch.Tensor, num_groups: int, weight: torch.Tensor,
                     bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """GroupNorm of an (N, C, *) tensor, straight from the formula."""
    groups = x.reshape(x.shape[0], num_groups, -1)
    mean = groups.mean(-1, keepdim=True)
    var = ((groups - mean) ** 2).mean(-1, keepdim=True)
    x_hat = ((groups - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    per_channel = (1, -1) + (1,) * (x.ndim - 2)
    return x_hat * weight.reshape(per_channel) + bias.reshape(per_channel)


class LayerNormSavingStats(torch.autograd.Function):
    """LayerNorm that saves x, mean and 1/sigma, with the closed-form backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float):
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))  # statistics in >= float32
        mean = x32.mean(-1, keepdim=True)
        rstd = torch.rsqrt((x32 - mean).square().mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        return ((x32 - mean) * rstd * weight + bias).to(x.dtype)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, weight, mean, rstd = ctx.saved_tensors
        x_hat = (x.to(mean.dtype) - mean) * rstd  # recomputed: one more read of x, no stored x_hat
        dy32 = dy.to(mean.dtype)
        g = dy32 * weight
        dx = rstd * (g - g.mean(-1, keepdim=True) - x_hat * (g * x_hat).mean(-1, keepdim=True))
        rows = tuple(range(x.ndim - 1))
        dweight = (dy32 * x_hat).sum(rows).to(weight.dtype)
        return dx.to(x.dtype), dweight, dy32.sum(rows).to(weight.dtype), None


class RMSNormSavingStats(torch.autograd.Function):
    """RMSNorm that saves x and 1/RMS, with the closed-form backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float):
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))
        rstd = torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return (x32 * rstd * weight).to(x.dtype)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, weight, rstd = ctx.saved_tensors
        x_hat = x.to(rstd.dtype) * rstd
        g = dy.to(rstd.dtype) * weight
        dx = rstd * (g - x_hat * (g * x_hat).mean(-1, keepdim=True))
        dweight = (dy.to(rstd.dtype) * x_hat).sum(tuple(range(x.ndim - 1))).to(weight.dtype)
        return dx.to(x.dtype), dweight, None


@dataclass
class SavedTensor:
    """One tensor autograd saved for a backward: the operator that made it, its shape, storage."""

    producer: str
    shape: tuple[int, ...]
    storage: int
    nbytes: int


def saved_tensors(fn: Callable[..., torch.Tensor], *args: torch.Tensor) -> list[SavedTensor]:
    """The tensors autograd saves for ``fn(*args)``'s backward, in order, beyond the arguments.

    ``producer`` is the operator whose output was saved (``"sub"`` for ``x - mean``); a tensor
    saved twice appears twice, with the same ``storage``. The arguments' own storages, which
    exist anyway, are left out: what remains is the memory the graph alone keeps alive.
    """
    argument_storages = {a.untyped_storage().data_ptr() for a in args}
    saved: list[SavedTensor] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in argument_storages:
            producer = type(tensor.grad_fn).__name__.removesuffix("Backward0").lower()
            saved.append(SavedTensor(producer if tensor.grad_fn else "leaf",
                                     tuple(tensor.shape), storage.data_ptr(), storage.nbytes()))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn(*args)
    del out  # the saved tensors stay alive until here, so their addresses stay distinct
    return saved


def saved_bytes(fn: Callable[..., torch.Tensor], *args: torch.Tensor) -> int:
    """Bytes of the storages autograd keeps for ``fn(*args)``'s backward, each counted once."""
    return sum({t.storage: t.nbytes for t in saved_tensors(fn, *args)}.values())


@dataclass
class Traffic:
    """What a function's operators read and write, if each ran as its own kernel."""

    operators: int
    bytes_moved: int


class _TrafficMeter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.traffic = Traffic(0, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view:  # a view (view, expand, detach) moves no bytes and runs no kernel
            return out
        tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs, out))
                   if isinstance(t, torch.Tensor)]
        self.traffic.operators += 1
        self.traffic.bytes_moved += sum(t.numel() * t.element_size() for t in tensors)
        return out


def operator_traffic(fn: Callable[[], object]) -> Traffic:
    """Count the aten operators ``fn()`` runs and the bytes their inputs and outputs span.

    Views are left out: they alias their input and move nothing.
    """
    meter = _TrafficMeter()
    with meter:
        fn()
    return meter.traffic


def minimal_bytes(norm: str, pass_: str, rows: int, hidden: int, element_size: int) -> int:
    """Bytes a norm must move at least: each input read once, each output written once.

    ``pass_`` is ``"forward"`` (read x and the parameters, write y) or ``"forward+backward"``
    (the forward also writes the float32 row statistics; the backward reads x, dy, the weight and
    the statistics, and writes dx and the parameter gradients). For GroupNorm, ``rows`` counts
    (sample, group) pairs, ``hidden`` the elements per group, and the parameters are per channel,
    so their bytes are left out (fewer than one element per row).
    """
    activations = rows * hidden * element_size
    if norm == "groupnorm" and pass_ == "forward":
        return 2 * activations
    n_params = {"layernorm": 2, "rmsnorm": 1}.get(norm)
    n_stats = {"layernorm": 2, "rmsnorm": 1}.get(norm)
    if n_params is None or pass_ not in ("forward", "forward+backward"):
        raise ValueError(f"no minimal-bytes model for norm={norm!r}, pass={pass_!r}")
    forward = 2 * activations + n_params * hidden * element_size
    if pass_ == "forward":
        return forward
    statistics = n_stats * rows * 4
    backward = 3 * activations + statistics + (1 + n_params) * hidden * element_size
    return forward + statistics + backward


def gbps(n_bytes: int, ms: float) -> float:
    """Throughput in GB/s (10^9 bytes per second) of ``n_bytes`` moved in ``ms`` milliseconds."""
    if not ms > 0 or not math.isfinite(ms):
        raise ValueError(f"a time must be positive and finite, got {ms} ms")
    return n_bytes / (ms * 1e-3) / 1e9
