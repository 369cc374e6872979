"""The comparison harness: prove a from-scratch norm equal to its ``torch.nn`` reference.

``compare_with_torch`` drives both modules through the same training steps and then eval mode
and compares everything a user could observe: outputs, the gradients of the input and of every
parameter, every buffer (``running_mean``, ``running_var``, ``num_batches_tracked``), the
exceptions raised (type and message), and the ``state_dict`` — its keys, shapes and dtypes, and
that each module can load the other's. The from-scratch module runs with the built-in norm
functions disabled twice over: the Python functions (``F.batch_norm`` & co.) are replaced by a
trap with a clear message, and a ``TorchDispatchMode`` rejects every ATen norm op, so even
``torch.ops.aten.native_layer_norm`` called directly fails the comparison.

``compare_sweep`` runs many such comparisons and raises on the first case that differs;
``assert_same_signature`` and ``raised`` are the two small checks chapters make by hand.
"""

import contextlib
import copy
import html
import inspect
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# The built-in norm functions a from-scratch implementation must not call: (namespace, name).
BUILTIN_NORMS = [
    (F, "batch_norm"),
    (F, "instance_norm"),
    (F, "layer_norm"),
    (F, "group_norm"),
    (F, "rms_norm"),
    (F, "local_response_norm"),
    (torch, "batch_norm"),
    (torch, "instance_norm"),
    (torch, "layer_norm"),
    (torch, "group_norm"),
    (torch, "rms_norm"),
    (torch, "native_batch_norm"),
    (torch, "native_layer_norm"),
    (torch, "native_group_norm"),
    (torch, "_native_batch_norm_legit"),
    (torch, "_native_batch_norm_legit_no_training"),
    (torch, "batch_norm_stats"),
    (torch, "batch_norm_elemt"),
]

# Every ATen operator that computes a batch, layer, group, instance or RMS norm (forward or
# backward), read from the dispatcher's registry so that ops added in later releases are covered.
FORBIDDEN_ATEN_OPS = frozenset(
    name.removeprefix("aten::").split(".")[0]
    for name in torch._C._dispatch_get_all_op_names()
    if name.startswith("aten::")
    and re.search(r"(batch|layer|group|instance|rms)_norm", name)
)

DEFAULT_TOLERANCES = {  # dtype: (atol, rtol)
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-4),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (5e-2, 5e-2),
}


class BuiltinNormCalled(RuntimeError):
    """A from-scratch implementation called one of PyTorch's built-in norm functions."""


class ComparisonError(AssertionError):
    """Our module and the reference differ; ``.report`` holds the whole comparison."""

    def __init__(self, message: str, report: "ComparisonReport") -> None:
        super().__init__(message)
        self.report = report


def _reject_if_norm_op(name: str) -> None:
    if name in FORBIDDEN_ATEN_OPS:
        raise BuiltinNormCalled(f"aten::{name} was called: a from-scratch norm must use elementary ops")


class _RejectNormOps(TorchDispatchMode):
    """Raises ``BuiltinNormCalled`` when any ATen norm op reaches the dispatcher."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        _reject_if_norm_op(func._schema.name.removeprefix("aten::"))
        return func(*args, **(kwargs or {}))


class _RejectNormCalls(TorchFunctionMode):
    """Raises ``BuiltinNormCalled`` when a norm op is called through the Python API.

    Needed beside the dispatcher trap because some ops (``rms_norm``, ``_fused_rms_norm`` on CPU)
    are composite: they decompose into elementary ops before reaching the dispatcher's modes.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if isinstance(func, torch._ops.OpOverload):
            _reject_if_norm_op(func._schema.name.removeprefix("aten::"))
        elif isinstance(func, torch._ops.OpOverloadPacket):
            _reject_if_norm_op(func._qualified_op_name.removeprefix("aten::"))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def forbid_builtin_norms() -> Iterator[None]:
    """Within this block, every built-in norm function or ATen norm op raises ``BuiltinNormCalled``.

    The Python-level trap names the function a reader would recognise (``F.batch_norm``); the
    dispatcher-level trap catches every route around it (``torch.ops.aten.native_layer_norm``,
    ``torch._C._VariableFunctions.layer_norm``, a backward op run by autograd).
    """

    def make_trap(qualified: str):
        def trap(*args, **kwargs):
            raise BuiltinNormCalled(f"{qualified} was called: a from-scratch norm must use elementary ops")

        return trap

    saved = []
    for namespace, name in BUILTIN_NORMS:
        if hasattr(namespace, name):
            saved.append((namespace, name, getattr(namespace, name)))
            setattr(namespace, name, make_trap(f"{namespace.__name__}.{name}"))
    try:
        with _RejectNormCalls(), _RejectNormOps():
            yield
    finally:
        for namespace, name, original in saved:
            setattr(namespace, name, original)


@dataclass
class QuantityComparison:
    """One compared quantity: its largest absolute and relative error, and whether it passed.

    The relative error is the largest absolute error divided by the largest magnitude of the
    reference, a scale-free measure that stays meaningful where the reference crosses zero.
    """

    name: str
    max_abs: float | None
    max_rel: float | None
    ok: bool
    note: str = ""


@dataclass
class ComparisonReport:
    """All quantities compared, in order, with the tolerances used."""

    dtype: torch.dtype
    atol: float
    rtol: float
    steps: int
    rows: list[QuantityComparison] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    @property
    def first_difference(self) -> QuantityComparison | None:
        return next((row for row in self.rows if not row.ok), None)

    @property
    def shared_exceptions(self) -> list[str]:
        """The phases where both modules raised the same exception, as "phase: Type"."""
        return [
            f"{row.name.removesuffix(': exception')}: {row.note.split(':')[0]}"
            for row in self.rows
            if row.name.endswith(": exception") and row.ok
        ]

    def summary(self) -> str:
        """One line that does not depend on rounding noise, fit for a stored notebook output.

        Numerical agreement and shared exceptions are reported separately: "all equal" alone
        means every phase ran and agreed; "both raised ..." lists the phases where torch and ours
        raised the same exception with the same message.
        """
        bad = [row for row in self.rows if not row.ok]
        values = [row for row in self.rows if not row.name.endswith(": exception")]
        verdict = "all equal" if not bad else f"{len(bad)} DIFFER, first: {bad[0].name}"
        raised = self.shared_exceptions
        both = f"; both raised the same exception ({', '.join(raised)})" if raised else ""
        return (
            f"{len(values)} quantities compared over {self.steps} training steps and eval "
            f"({str(self.dtype).removeprefix('torch.')}, atol={self.atol:g}, rtol={self.rtol:g}): "
            f"{verdict}{both}"
        )

    def __str__(self) -> str:
        width = max(len("quantity"), *(len(row.name) for row in self.rows))

        def fmt(value: float | None) -> str:
            return "-" if value is None else f"{value:.1e}"

        lines = [f"{'quantity':<{width}}  {'max abs err':>11}  {'max rel err':>11}  status"]
        for row in self.rows:
            status = "ok" if row.ok else "DIFFERS"
            note = f"  ({row.note})" if row.note else ""
            lines.append(f"{row.name:<{width}}  {fmt(row.max_abs):>11}  {fmt(row.max_rel):>11}  {status}{note}")
        lines.append(self.summary())
        return "\n".join(lines)


def _compare_tensors(name: str, ours, reference, atol: float, rtol: float) -> QuantityComparison:
    if ours is None or reference is None:
        if ours is None and reference is None:
            return QuantityComparison(name, None, None, True, "both None")
        missing = "ours" if ours is None else "torch"
        return QuantityComparison(name, None, None, False, f"None in {missing} only")
    if ours.shape != reference.shape:
        note = f"shape {tuple(ours.shape)} vs torch {tuple(reference.shape)}"
        return QuantityComparison(name, None, None, False, note)
    if ours.dtype != reference.dtype:
        note = f"dtype {ours.dtype} vs torch {reference.dtype}"
        return QuantityComparison(name, None, None, False, note)
    ours64, ref64 = ours.detach().double(), reference.detach().double()
    if ours64.numel() == 0:
        return QuantityComparison(name, 0.0, 0.0, True, "empty")
    # NaN (or an infinity) in the same place on both sides is equal behaviour, not a difference.
    ok = bool(torch.isclose(ours64, ref64, rtol=rtol, atol=atol, equal_nan=True).all())
    identical = (ours64 == ref64) | (ours64.isnan() & ref64.isnan())
    abs_err = torch.where(identical, torch.zeros_like(ours64), (ours64 - ref64).abs())
    max_abs = abs_err.max().item()
    finite_ref = ref64[ref64.isfinite()].abs()
    scale = finite_ref.max().item() if finite_ref.numel() else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    return QuantityComparison(name, max_abs, max_rel, ok)


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equal, with NaN equal to NaN (a running statistic may legitimately be NaN)."""
    if a.is_floating_point() and a.shape == b.shape and a.dtype == b.dtype:
        return bool(torch.isclose(a, b, rtol=0, atol=0, equal_nan=True).all())
    return torch.equal(a, b)


def _state_structure(module: nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {key: (tuple(value.shape), value.dtype) for key, value in module.state_dict().items()}


def _run(module: nn.Module, x: torch.Tensor, upstream_seed: int, scratch: bool):
    """Forward and backward through ``module``; returns (output, exception)."""
    context = forbid_builtin_norms() if scratch else contextlib.nullcontext()
    try:
        with context:
            y = module(x)
            upstream = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(upstream_seed))
            y.backward(upstream)
        return y, None
    except BuiltinNormCalled:
        raise
    except Exception as error:  # the reference's errors are part of its behaviour
        return None, error


def compare_with_torch(
    ours: nn.Module,
    reference: nn.Module,
    input_shape: Sequence[int],
    *,
    steps: int = 3,
    dtype: torch.dtype = torch.float64,
    atol: float | None = None,
    rtol: float | None = None,
    input_offset: float = 0.0,
    input_scale: float = 1.0,
    seed: int = 0,
    raise_on_difference: bool = True,
) -> ComparisonReport:
    """Compare ``ours`` with the ``torch.nn`` module ``reference`` and return a report.

    Both modules are deep-copied and cast to ``dtype``. The reference's parameters are set to
    random values and loaded into ours, then both run ``steps`` training steps (forward, backward
    with the same upstream gradient) and one eval step on inputs of ``input_shape`` drawn as
    ``input_offset + input_scale · N(0, 1)``. After each step the output, the input gradient, every
    parameter gradient and every buffer are compared. Finally each module loads the other's
    ``state_dict``. Raises ``ComparisonError`` naming the first quantity that differs (unless
    ``raise_on_difference=False``), and ``BuiltinNormCalled`` if ours calls a built-in norm.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if dtype not in DEFAULT_TOLERANCES:
        raise ValueError(f"dtype must be one of {list(DEFAULT_TOLERANCES)}, got {dtype}")
    default_atol, default_rtol = DEFAULT_TOLERANCES[dtype]
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    report = ComparisonReport(dtype=dtype, atol=atol, rtol=rtol, steps=steps)
    ours = copy.deepcopy(ours).to(dtype)
    reference = copy.deepcopy(reference).to(dtype)

    def finish() -> ComparisonReport:
        first = report.first_difference
        if first is not None and raise_on_difference:
            message = f"{first.name} differs from torch.nn" + (f" ({first.note})" if first.note else "")
            raise ComparisonError(f"{message}\n{report}", report)
        return report

    structure_ours, structure_ref = _state_structure(ours), _state_structure(reference)
    if structure_ours != structure_ref:
        missing = sorted(set(structure_ref) - set(structure_ours))
        extra = sorted(set(structure_ours) - set(structure_ref))
        changed = sorted(k for k in set(structure_ref) & set(structure_ours) if structure_ref[k] != structure_ours[k])
        note = "; ".join(
            part
            for part in (
                f"missing {missing}" if missing else "",
                f"unexpected {extra}" if extra else "",
                f"shape or dtype differs for {changed}" if changed else "",
            )
            if part
        )
        report.rows.append(QuantityComparison("state_dict keys, shapes, dtypes", None, None, False, note))
        return finish()
    report.rows.append(QuantityComparison("state_dict keys, shapes, dtypes", None, None, True))

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator, dtype=dtype))
    ours.load_state_dict(reference.state_dict())

    phases = [(f"train step {k + 1}", True) for k in range(steps)] + [("eval", False)]
    for phase, training in phases:
        ours.train(training)
        reference.train(training)
        x = input_offset + input_scale * torch.randn(tuple(input_shape), generator=generator, dtype=dtype)
        x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
        upstream_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        y_ref, error_ref = _run(reference, x_ref, upstream_seed, scratch=False)
        y_ours, error_ours = _run(ours, x_ours, upstream_seed, scratch=True)
        if error_ref is not None or error_ours is not None:
            torch_says, ours_says = describe_exception(error_ref), describe_exception(error_ours)
            same = torch_says == ours_says
            note = torch_says if same else f"torch: {torch_says}; ours: {ours_says}"
            report.rows.append(QuantityComparison(f"{phase}: exception", None, None, same, note))
            if not same:
                return finish()
            continue
        report.rows.append(_compare_tensors(f"{phase}: output", y_ours, y_ref, atol, rtol))
        report.rows.append(_compare_tensors(f"{phase}: grad input", x_ours.grad, x_ref.grad, atol, rtol))
        params_ours = dict(ours.named_parameters())
        for name, parameter in reference.named_parameters():
            grad_ours = params_ours[name].grad
            report.rows.append(_compare_tensors(f"{phase}: grad {name}", grad_ours, parameter.grad, atol, rtol))
        for module in (ours, reference):
            module.zero_grad(set_to_none=True)
        buffers_ours = dict(ours.named_buffers())
        buffers_ref = dict(reference.named_buffers())
        for name in sorted(set(buffers_ours) | set(buffers_ref)):
            report.rows.append(
                _compare_tensors(f"{phase}: buffer {name}", buffers_ours.get(name), buffers_ref.get(name), atol, rtol)
            )

    for direction, source, target in (("ours -> torch", ours, reference), ("torch -> ours", reference, ours)):
        fresh = copy.deepcopy(target)
        try:
            fresh.load_state_dict(source.state_dict())
        except Exception as error:
            report.rows.append(QuantityComparison(f"load_state_dict {direction}", None, None, False, str(error)))
            continue
        loaded, expected = fresh.state_dict(), source.state_dict()
        ok = all(_identical(loaded[key], expected[key]) for key in expected)
        report.rows.append(
            QuantityComparison(f"load_state_dict {direction}", None, None, ok, "" if ok else "values differ")
        )
    return finish()


def describe_exception(error: BaseException | None) -> str:
    """``"Type: message"`` for an exception, ``"no error"`` for ``None``."""
    return "no error" if error is None else f"{type(error).__name__}: {error}"


def raised(function: Callable, *args, **kwargs) -> str:
    """Call ``function`` and return what it raised as ``"Type: message"``, or ``"no error"``."""
    try:
        function(*args, **kwargs)
    except Exception as error:
        return describe_exception(error)
    return "no error"


def assert_same_signature(ours: Callable, reference: Callable) -> None:
    """Raise ``AssertionError`` unless the two callables (or classes' constructors) take the same
    parameters, in the same order, of the same kind, with the same defaults."""
    ours_signature, reference_signature = inspect.signature(ours), inspect.signature(reference)
    ours_params = list(ours_signature.parameters.values())
    reference_params = list(reference_signature.parameters.values())
    if [(p.name, p.kind, p.default) for p in ours_params] != [
        (p.name, p.kind, p.default) for p in reference_params
    ]:
        raise AssertionError(
            f"signatures differ:\n  ours:  {ours_signature}\n  torch: {reference_signature}"
        )


class Case:
    """One configuration of a sweep: a label, both modules, the input shape, and any keyword
    arguments of ``compare_with_torch`` (``dtype``, ``steps``, ``atol``, ``input_offset``...)."""

    def __init__(
        self, label: str, ours: nn.Module, reference: nn.Module, input_shape: Sequence[int], **options
    ) -> None:
        if "raise_on_difference" in options:
            raise TypeError("a sweep always raises on a difference; drop raise_on_difference")
        self.label, self.ours, self.reference = label, ours, reference
        self.input_shape, self.options = tuple(input_shape), options

    def __repr__(self) -> str:
        return f"Case({self.label!r}, input_shape={self.input_shape})"


@dataclass
class SweepTable:
    """The verdict of every case of a sweep that passed: shown as text or an HTML table."""

    rows: list[tuple[str, ComparisonReport]]

    def lines(self) -> list[tuple[str, str]]:
        return [(label, _verdict(report)) for label, report in self.rows]

    def __str__(self) -> str:
        width = max(len("case"), *(len(label) for label, _ in self.rows))
        body = [f"{label:<{width}}  {verdict}" for label, verdict in self.lines()]
        return "\n".join([f"{'case':<{width}}  verdict", *body, f"{len(self.rows)} cases: all equal"])

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<tr><td>{html.escape(label)}</td><td>{html.escape(verdict)}</td></tr>"
            for label, verdict in self.lines()
        )
        return (
            "<table><thead><tr><th>case</th><th>verdict</th></tr></thead>"
            f"<tbody>{cells}</tbody></table><p>{len(self.rows)} cases: all equal</p>"
        )


def _verdict(report: ComparisonReport) -> str:
    values = [row for row in report.rows if not row.name.endswith(": exception")]
    dtype = str(report.dtype).removeprefix("torch.")
    text = f"{len(values)} quantities equal ({dtype})"
    raised_in = report.shared_exceptions
    return text + (f"; both raised {', '.join(raised_in)}" if raised_in else "")


def compare_sweep(cases: Iterable[Case]) -> SweepTable:
    """Run ``compare_with_torch`` on every case; raise ``ComparisonError`` naming the first case
    that differs, else return the table of verdicts."""
    rows = []
    for case in cases:
        if not isinstance(case, Case):
            raise TypeError(f"compare_sweep expects Case objects, got {type(case).__name__}")
        try:
            report = compare_with_torch(case.ours, case.reference, case.input_shape, **case.options)
        except ComparisonError as error:
            raise ComparisonError(f"case {case.label!r}: {error}", error.report) from None
        rows.append((case.label, report))
    if not rows:
        raise ValueError("compare_sweep needs at least one case")
    return SweepTable(rows)
