"""LayerNorm, RMSNorm and GroupNorm written as Triton kernels, with torch.nn's interface.

Importing this module on a machine without CUDA sets ``TRITON_INTERPRET=1`` first, so that the
kernels run on CPU tensors through Triton's interpreter (slow, but exact enough to prove them
equal to ``torch.nn``). The variable must be set before ``triton`` is imported; set it yourself
beforehand to force either mode. If torch already imported ``triton`` (it does so lazily, e.g.
when a TorchDispatchMode runs), it is too late: this module then raises, saying so. Triton ships
Linux wheels only.

Each kernel is one program per row (or per group); the comments name the overview's equations.
"""

import os
import sys

import torch

if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
    if "triton" in sys.modules:  # torch imports it lazily (a TorchDispatchMode does): too late
        raise RuntimeError(
            "triton was imported before helpers.triton_norms on a machine without CUDA, so its "
            "kernels would compile for a GPU: import helpers.triton_norms first (before any "
            "torch.compile or TorchDispatchMode runs), or set TRITON_INTERPRET=1")
    os.environ["TRITON_INTERPRET"] = "1"

import triton  # noqa: E402  (must come after TRITON_INTERPRET is set)
import triton.language as tl  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
GROUP_NORM_MAX_BLOCK = 4096  # elements of a group one GroupNorm program holds at a time


def backward_warps(block: int, element_size: int) -> int:
    """Warps per backward program: one per 256 elements, 4 to 16; 32 for 16384 float32 rows.

    The backward holds about six float32 rows per program; at 16384 fp32 elements 16 warps
    spill registers (measured: under a quarter of the copy rate), 32 do not.
    """
    return 32 if block >= 16384 and element_size >= 4 else min(max(block // 256, 4), 16)


# --- LayerNorm -----------------------------------------------------------------------------


# layer-norm-forward-start
@triton.jit
def layer_norm_forward_kernel(X, Y, W, B, Mean, Rstd, x_row_stride, y_row_stride, n_cols, eps,
                              BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    inside = cols < n_cols
    x = tl.load(X + row * x_row_stride + cols, mask=inside, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / n_cols  # mean over the row
    x_centred = tl.where(inside, x - mean, 0.0)
    var = tl.sum(x_centred * x_centred, axis=0) / n_cols  # biased variance
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(W + cols, mask=inside).to(tl.float32)
    b = tl.load(B + cols, mask=inside).to(tl.float32)
    y = x_centred * rstd * w + b  # x_hat * gamma + beta
    tl.store(Y + row * y_row_stride + cols, y.to(Y.dtype.element_ty), mask=inside)
    tl.store(Mean + row, mean)  # saved for the backward: 2 numbers per row
    tl.store(Rstd + row, rstd)
# layer-norm-forward-end


# layer-norm-backward-start
@triton.jit
def layer_norm_backward_kernel(X, DY, DX, W, Mean, Rstd, DW_partial, DB_partial, n_rows,
                               n_cols, x_row_stride, dy_row_stride, dx_row_stride,
                               BLOCK: tl.constexpr):
    program = tl.program_id(0)
    n_programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK)
    inside = cols < n_cols
    w = tl.load(W + cols, mask=inside, other=0.0).to(tl.float32)
    dw_sum = tl.zeros((BLOCK,), dtype=tl.float32)  # this program's share of dgamma
    db_sum = tl.zeros((BLOCK,), dtype=tl.float32)  # and of dbeta
    for row32 in range(program, n_rows, n_programs):  # rows program, program + P, ...
        row = tl.cast(row32, tl.int64)
        x = tl.load(X + row * x_row_stride + cols, mask=inside, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * dy_row_stride + cols, mask=inside, other=0.0).to(tl.float32)
        mean = tl.load(Mean + row)
        rstd = tl.load(Rstd + row)
        x_hat = tl.where(inside, (x - mean) * rstd, 0.0)
        g = dy * w  # dL/dx_hat
        # dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat))
        dx = rstd * (g - tl.sum(g, axis=0) / n_cols - x_hat * (tl.sum(g * x_hat, axis=0) / n_cols))
        tl.store(DX + row * dx_row_stride + cols, dx.to(DX.dtype.element_ty), mask=inside)
        dw_sum += dy * x_hat
        db_sum += dy
    # stage 1 of the dgamma/dbeta reduction: one partial sum per program
    tl.store(DW_partial + program * n_cols + cols, dw_sum, mask=inside)
    tl.store(DB_partial + program * n_cols + cols, db_sum, mask=inside)
# layer-norm-backward-end


# column-sum-start
@triton.jit
def column_sum_kernel(Partial, Out, n_partials, n_cols, BLOCK: tl.constexpr):
    # stage 2: add up the partial sums of all programs, one block of columns per program
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = cols < n_cols
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for partial in range(0, n_partials):
        total += tl.load(Partial + partial * n_cols + cols, mask=inside, other=0.0)
    tl.store(Out + cols, total.to(Out.dtype.element_ty), mask=inside)
# column-sum-end


# --- RMSNorm -------------------------------------------------------------------------------


# rms-norm-forward-start
@triton.jit
def rms_norm_forward_kernel(X, Y, W, Rstd, x_row_stride, y_row_stride, n_cols, eps,
                            BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    inside = cols < n_cols
    x = tl.load(X + row * x_row_stride + cols, mask=inside, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)  # 1 / RMS(x), no mean
    w = tl.load(W + cols, mask=inside).to(tl.float32)
    tl.store(Y + row * y_row_stride + cols, (x * rstd * w).to(Y.dtype.element_ty), mask=inside)
    tl.store(Rstd + row, rstd)  # saved for the backward: 1 number per row
# rms-norm-forward-end


# rms-norm-backward-start
@triton.jit
def rms_norm_backward_kernel(X, DY, DX, W, Rstd, DW_partial, n_rows, n_cols, x_row_stride,
                             dy_row_stride, dx_row_stride, BLOCK: tl.constexpr):
    program = tl.program_id(0)
    n_programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK)
    inside = cols < n_cols
    w = tl.load(W + cols, mask=inside, other=0.0).to(tl.float32)
    dw_sum = tl.zeros((BLOCK,), dtype=tl.float32)
    for row32 in range(program, n_rows, n_programs):
        row = tl.cast(row32, tl.int64)
        x = tl.load(X + row * x_row_stride + cols, mask=inside, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * dy_row_stride + cols, mask=inside, other=0.0).to(tl.float32)
        rstd = tl.load(Rstd + row)
        x_hat = x * rstd
        g = dy * w
        dx = rstd * (g - x_hat * (tl.sum(g * x_hat, axis=0) / n_cols))  # no mean(g) term
        tl.store(DX + row * dx_row_stride + cols, dx.to(DX.dtype.element_ty), mask=inside)
        dw_sum += dy * x_hat
    tl.store(DW_partial + program * n_cols + cols, dw_sum, mask=inside)
# rms-norm-backward-end


# --- GroupNorm (forward) -------------------------------------------------------------------


# group-norm-forward-start
@triton.jit
def group_norm_forward_kernel(X, Y, W, B, group_size, channels_per_group, spatial, n_groups,
                              eps, BLOCK: tl.constexpr):
    group = tl.program_id(0).to(tl.int64)  # one program per (sample, group): contiguous
    start = group * group_size
    offsets = tl.arange(0, BLOCK)
    # pass 1: mean and M2 of the group, block by block, merged with Chan's formula
    mean = 0.0
    m2 = 0.0
    count = 0.0
    for first in range(0, group_size, BLOCK):
        inside = first + offsets < group_size
        x = tl.load(X + start + first + offsets, mask=inside, other=0.0).to(tl.float32)
        n_block = tl.minimum(group_size - first, BLOCK).to(tl.float32)
        block_mean = tl.sum(x, axis=0) / n_block
        block_m2 = tl.sum(tl.where(inside, (x - block_mean) * (x - block_mean), 0.0), axis=0)
        delta = block_mean - mean
        total = count + n_block
        mean += delta * n_block / total
        m2 += block_m2 + delta * delta * count * n_block / total
        count = total
    rstd = 1.0 / tl.sqrt(m2 / group_size + eps)  # biased variance over (C/G, H, W)
    # pass 2: normalize, with gamma and beta of each element's channel
    first_channel = (group % n_groups) * channels_per_group
    for first in range(0, group_size, BLOCK):
        inside = first + offsets < group_size
        x = tl.load(X + start + first + offsets, mask=inside, other=0.0).to(tl.float32)
        channel = first_channel + (first + offsets) // spatial
        w = tl.load(W + channel, mask=inside).to(tl.float32)
        b = tl.load(B + channel, mask=inside).to(tl.float32)
        y = (x - mean) * rstd * w + b
        tl.store(Y + start + first + offsets, y.to(Y.dtype.element_ty), mask=inside)
# group-norm-forward-end


# --- launchers and autograd ----------------------------------------------------------------


def _check_device(*tensors: torch.Tensor) -> None:
    for tensor in tensors:
        if tensor.device.type != "cuda" and not INTERPRETED:
            raise ValueError(
                f"Triton kernels need CUDA tensors (got {tensor.device}); "
                "set TRITON_INTERPRET=1 before importing triton to run them on the CPU"
            )


def _rows(x: torch.Tensor, normalized_shape: tuple[int, ...]) -> torch.Tensor:
    """View ``x`` as (rows, hidden) with unit column stride, copying only if it must."""
    if len(normalized_shape) != 1 or x.ndim == 0 or x.shape[-1] != normalized_shape[0]:
        raise ValueError(
            f"Given normalized_shape={list(normalized_shape)}, these kernels normalize over the "
            f"last dimension only and expect input of shape [*, hidden], got {list(x.shape)}"
        )
    x2d = x.reshape(-1, x.shape[-1])
    return x2d if x2d.stride(-1) == 1 else x2d.contiguous()


def backward_programs(n_rows: int, n_warps: int, device: torch.device) -> int:
    """How many programs share the backward's rows: about 32 warps per multiprocessor."""
    if device.type != "cuda":
        return min(n_rows, 2)  # the interpreter: two programs still exercise stage 2
    multiprocessors = torch.cuda.get_device_properties(device).multi_processor_count
    return min(n_rows, multiprocessors * max(32 // n_warps, 1))


def _tuned(kernel, key: list[str], configs: list | None = None):
    """On a GPU, ``kernel`` autotuned per ``key`` over ``configs`` (default: 4-32 warps).

    How many warps share a row decides how many bytes are in flight per multiprocessor, and the
    best count differs between devices, sizes and dtypes: Triton times each candidate on the
    first call of each shape and keeps the fastest. The interpreter has no warps: kernel as is.
    """
    if INTERPRETED:
        return kernel
    configs = configs or [triton.Config({}, num_warps=warps) for warps in (4, 8, 16, 32)]
    return triton.autotune(configs=configs, key=key)(kernel)


_layer_norm_forward = _tuned(layer_norm_forward_kernel, ["n_cols"])
_rms_norm_forward = _tuned(rms_norm_forward_kernel, ["n_cols"])
_group_norm_forward = _tuned(
    group_norm_forward_kernel, ["group_size"],
    [triton.Config({"BLOCK": block}, num_warps=warps)
     for block in (1024, 2048, 4096) for warps in (4, 8)])


def _reduce_partials(partial: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    out = torch.empty(partial.shape[1], dtype=like.dtype, device=like.device)
    block = 128
    column_sum_kernel[(triton.cdiv(partial.shape[1], block),)](
        partial, out, partial.shape[0], partial.shape[1], BLOCK=block)
    return out


def _backward_buffers(x2d: torch.Tensor, dy: torch.Tensor):
    """The backward's launch set-up shared by LayerNorm and RMSNorm: upstream rows, dx, the
    block and warp count, how many programs, and one fp32 row of partial dγ per program."""
    n_rows, n_cols = x2d.shape
    dy2d = _rows(dy, (n_cols,))
    dx = torch.empty_like(x2d, memory_format=torch.contiguous_format)
    block = triton.next_power_of_2(n_cols)
    n_warps = backward_warps(block, x2d.element_size())
    programs = backward_programs(n_rows, n_warps, x2d.device)
    dw_partial = torch.empty((programs, n_cols), dtype=torch.float32, device=x2d.device)
    return dy2d, dx, block, n_warps, programs, dw_partial


class LayerNormFunction(torch.autograd.Function):
    """LayerNorm over the last dimension: Triton forward, Triton backward; saves mean and rstd."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float):
        x2d = _rows(x, (weight.shape[0],))
        n_rows, n_cols = x2d.shape
        y = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
        mean = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        block = triton.next_power_of_2(n_cols)
        _layer_norm_forward[(n_rows,)](
            x2d, y, weight, bias, mean, rstd, x2d.stride(0), y.stride(0), n_cols, eps,
            BLOCK=block)
        ctx.save_for_backward(x2d, weight, mean, rstd)
        ctx.input_shape = x.shape
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x2d, weight, mean, rstd = ctx.saved_tensors
        n_rows, n_cols = x2d.shape
        dy2d, dx, block, n_warps, programs, dw_partial = _backward_buffers(x2d, dy)
        db_partial = torch.empty_like(dw_partial)
        layer_norm_backward_kernel[(programs,)](
            x2d, dy2d, dx, weight, mean, rstd, dw_partial, db_partial, n_rows, n_cols,
            x2d.stride(0), dy2d.stride(0), dx.stride(0), BLOCK=block, num_warps=n_warps)
        dweight = _reduce_partials(dw_partial, weight)
        dbias = _reduce_partials(db_partial, weight)
        return dx.view(ctx.input_shape), dweight, dbias, None


class RMSNormFunction(torch.autograd.Function):
    """RMSNorm over the last dimension: Triton forward and backward; saves 1/RMS per row."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float):
        x2d = _rows(x, (weight.shape[0],))
        n_rows, n_cols = x2d.shape
        y = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
        rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        block = triton.next_power_of_2(n_cols)
        _rms_norm_forward[(n_rows,)](
            x2d, y, weight, rstd, x2d.stride(0), y.stride(0), n_cols, eps, BLOCK=block)
        ctx.save_for_backward(x2d, weight, rstd)
        ctx.input_shape = x.shape
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x2d, weight, rstd = ctx.saved_tensors
        n_rows, n_cols = x2d.shape
        dy2d, dx, block, n_warps, programs, dw_partial = _backward_buffers(x2d, dy)
        rms_norm_backward_kernel[(programs,)](
            x2d, dy2d, dx, weight, rstd, dw_partial, n_rows, n_cols, x2d.stride(0),
            dy2d.stride(0), dx.stride(0), BLOCK=block, num_warps=n_warps)
        return dx.view(ctx.input_shape), _reduce_partials(dw_partial, weight), None


def layer_norm(x: torch.Tensor, normalized_shape: tuple[int, ...] | list[int] | int,
               weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
               eps: float = 1e-5) -> torch.Tensor:
    """``F.layer_norm`` over the last dimension, computed by the Triton kernels above."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    _rows(x, shape)  # validates the shape before anything is allocated
    weight = torch.ones(shape, dtype=x.dtype, device=x.device) if weight is None else weight
    bias = torch.zeros(shape, dtype=x.dtype, device=x.device) if bias is None else bias
    _check_device(x, weight, bias)
    return LayerNormFunction.apply(x, weight, bias, eps)


def rms_norm(x: torch.Tensor, normalized_shape: tuple[int, ...] | list[int] | int,
             weight: torch.Tensor | None = None, eps: float | None = None) -> torch.Tensor:
    """``F.rms_norm`` over the last dimension (``eps=None``: the input dtype's epsilon)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    _rows(x, shape)
    weight = torch.ones(shape, dtype=x.dtype, device=x.device) if weight is None else weight
    if eps is None:  # torch.nn computes half precision in float32, with float32's epsilon
        half = x.dtype in (torch.float16, torch.bfloat16)
        eps = torch.finfo(torch.float32 if half else x.dtype).eps
    _check_device(x, weight)
    return RMSNormFunction.apply(x, weight, eps)


def group_norm(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """``F.group_norm``'s forward (no autograd) by one Triton program per (sample, group)."""
    if x.ndim < 2 or x.shape[1] % num_groups != 0:
        raise ValueError(
            f"Expected number of channels in input to be divisible by num_groups, but got input "
            f"of shape {list(x.shape)} and num_groups={num_groups}")
    if torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, weight, bias)):
        raise RuntimeError("the Triton group_norm is forward-only: call it under torch.no_grad()")
    n_channels = x.shape[1]
    weight = torch.ones(n_channels, dtype=x.dtype, device=x.device) if weight is None else weight
    bias = torch.zeros(n_channels, dtype=x.dtype, device=x.device) if bias is None else bias
    _check_device(x, weight, bias)
    x = x.contiguous()
    y = torch.empty_like(x)
    channels_per_group = n_channels // num_groups
    spatial = x[0, 0].numel()
    group_size = channels_per_group * spatial
    # on a GPU the autotuner picks BLOCK; the interpreter takes the largest that is needed
    block = {} if not INTERPRETED else {
        "BLOCK": min(triton.next_power_of_2(group_size), GROUP_NORM_MAX_BLOCK)}
    _group_norm_forward[(x.shape[0] * num_groups,)](
        x, y, weight, bias, group_size, channels_per_group, spatial, num_groups, eps, **block)
    return y


class TritonLayerNorm(torch.nn.LayerNorm):
    """``nn.LayerNorm`` (last dimension, affine) whose forward and backward are Triton kernels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class TritonRMSNorm(torch.nn.RMSNorm):
    """``nn.RMSNorm`` (last dimension) whose forward and backward are Triton kernels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.normalized_shape, self.weight, self.eps)
