"""Benchmark LayerNorm, RMSNorm and GroupNorm implementations against the copy bandwidth.

    PYTHONPATH=. python bench/norms.py [--out bench/results] [--smoke]

On CUDA: for each dtype (bf16, fp32) and hidden size (1024 ... 16384) with ~256 MiB inputs, time
torch.nn, the naive formula, torch.compile of it, the custom autograd.Function and the Triton
kernels (forward; forward+backward for LayerNorm and RMSNorm), and a device-to-device copy of
the same bytes. Writes ``<out>/<device-slug>.csv`` (one row per measurement) and a ``.json``
beside it (date, versions, compile time), and prints the fraction of copy bandwidth per impl.
``--smoke`` runs tiny shapes on whatever device there is (CPU: Triton's interpreter, no compile).
"""

import argparse
import csv
import datetime
import json
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from helpers import fast_norms, triton_norms

COLUMNS = ["device", "torch", "triton", "norm", "pass", "dtype", "rows", "hidden", "impl", "ms",
           "gbps", "copy_gbps"]
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
HIDDEN = [1024, 16384, 4096, 2048, 8192]  # this order, so a compile budget spreads over sizes
SMOKE_HIDDEN = [24]  # not a power of two; a multiple of 8 for GroupNorm's channel groups
INPUT_BYTES = 256 * 2**20
GROUPS, CHANNELS = 32, 256  # GroupNorm: 8 channels per group; "hidden" = elements per group
EPS = 1e-5


def slug(name: str) -> str:
    """A file-name-safe lower-case form of a device name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def time_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Median milliseconds per call of ``fn`` after warm-up (CUDA: Triton's do_bench)."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    fn()
    samples = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def forward_impls(norm: str, compile_ok: bool) -> dict[str, Callable]:
    """impl name -> f(x, weight, bias) for one norm's forward."""
    if norm == "layernorm":
        impls = {
            "torch.nn": lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b, EPS),
            "naive": lambda x, w, b: fast_norms.naive_layer_norm(x, w, b, EPS),
            "custom Function": lambda x, w, b: fast_norms.LayerNormSavingStats.apply(x, w, b, EPS),
            "triton": lambda x, w, b: triton_norms.layer_norm(x, (x.shape[-1],), w, b, EPS),
        }
        naive = fast_norms.naive_layer_norm
    elif norm == "rmsnorm":
        impls = {
            "torch.nn": lambda x, w, b: F.rms_norm(x, (x.shape[-1],), w, EPS),
            "naive": lambda x, w, b: fast_norms.naive_rms_norm(x, w, EPS),
            "custom Function": lambda x, w, b: fast_norms.RMSNormSavingStats.apply(x, w, EPS),
            "triton": lambda x, w, b: triton_norms.rms_norm(x, (x.shape[-1],), w, EPS),
        }
        naive = lambda x, w, b: fast_norms.naive_rms_norm(x, w, EPS)  # noqa: E731
    else:
        impls = {
            "torch.nn": lambda x, w, b: F.group_norm(x, GROUPS, w, b, EPS),
            "naive": lambda x, w, b: fast_norms.naive_group_norm(x, GROUPS, w, b, EPS),
            "triton": lambda x, w, b: triton_norms.group_norm(x, GROUPS, w, b, EPS),
        }
        naive = lambda x, w, b: fast_norms.naive_group_norm(x, GROUPS, w, b, EPS)  # noqa: E731
    if compile_ok:
        torch._dynamo.reset()  # a fresh compile per shape: dynamic=False, no recompile limit
        impls["torch.compile"] = torch.compile(naive, dynamic=False)
    return impls


def inputs(norm: str, rows: int, hidden: int, dtype: torch.dtype, device: torch.device):
    """x, weight, bias for one shape (GroupNorm: (rows / G, C, hidden / (C / G)))."""
    generator = torch.Generator(device=device).manual_seed(0)
    if norm == "groupnorm":
        shape = (rows // GROUPS, CHANNELS, hidden * GROUPS // CHANNELS)
        n_params = CHANNELS
    else:
        shape, n_params = (rows, hidden), hidden
    x = torch.randn(shape, dtype=dtype, device=device, generator=generator)
    w = 1 + 0.1 * torch.randn(n_params, dtype=dtype, device=device, generator=generator)
    b = 0.1 * torch.randn(n_params, dtype=dtype, device=device, generator=generator)
    return x, w, b


def measure(norm: str, pass_: str, fn: Callable, x, w, b, device) -> float:
    """Milliseconds for one forward (no autograd) or one forward+backward of ``fn``."""
    if pass_ == "forward":
        with torch.no_grad():
            return time_ms(lambda: fn(x, w, b), device)
    x, w, b = (t.detach().requires_grad_() for t in (x, w, b))
    dy = torch.randn_like(x)
    params = [x, w] if norm == "rmsnorm" else [x, w, b]

    def step():
        torch.autograd.grad(fn(x, w, b), params, dy)  # no .grad accumulation: no extra pass

    return time_ms(step, device)


def verify(norm: str, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> list[str]:
    """Compare Triton with torch.nn at the benchmark's own shape: outputs and gradients."""
    impls = forward_impls(norm, compile_ok=False)
    tolerance = {"atol": 2e-2, "rtol": 2e-2} if x.dtype == torch.bfloat16 else {
        "atol": 1e-3, "rtol": 1e-4}
    need_grad = norm != "groupnorm"
    dy = torch.randn(x.shape, dtype=x.dtype, device=x.device,
                     generator=torch.Generator(device=x.device).manual_seed(1))
    results = {}
    # the reference: torch.nn in float32 on the same values (bf16's own rounding is ours to test)
    for impl, dtype in (("torch.nn", torch.float32), ("triton", x.dtype)):
        leaves = [t.detach().to(dtype).requires_grad_(need_grad) for t in (x, w, b)]
        with torch.set_grad_enabled(need_grad):
            y = impls[impl](*leaves)
        results[impl] = [y]
        if need_grad:
            used = leaves[:2] if norm == "rmsnorm" else leaves
            results[impl] += list(torch.autograd.grad(y, used, dy.to(dtype)))
        results[impl] = [t.float() for t in results[impl]]
    problems = []
    for name, ours, ref in zip(["y", "dx", "dw", "db"], results["triton"], results["torch.nn"],
                               strict=False):
        try:
            torch.testing.assert_close(ours, ref, **tolerance)
        except AssertionError as error:
            problems.append(f"{norm} {x.dtype} {tuple(x.shape)} {name}: {error}")
            print(problems[-1].splitlines()[0], flush=True)
    return problems


def copy_gbps(n_bytes_one_way: int, dtype: torch.dtype, device: torch.device) -> float:
    """Device-to-device copy of ``n_bytes_one_way`` bytes, counting bytes read and written."""
    element_size = torch.finfo(dtype).bits // 8
    source = torch.empty(n_bytes_one_way // element_size, dtype=dtype, device=device)
    target = torch.empty_like(source)
    return fast_norms.gbps(2 * n_bytes_one_way, time_ms(lambda: target.copy_(source), device))


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write the measurements with the header ``COLUMNS``."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def run(out: Path, smoke: bool, compile_budget_s: float = 180.0) -> Path:
    """Run every measurement, write the CSV and its JSON note, print a summary; return the CSV."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    hidden_sizes = SMOKE_HIDDEN if smoke else HIDDEN
    started = time.perf_counter()
    compile_seconds = 0.0
    rows_out = []
    mismatches = []
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / f"{slug(device_name)}.csv"
    note = {"date": datetime.date.today().isoformat(), "device": device_name,
            "torch": torch.__version__, "triton": triton_norms.triton.__version__,
            "cuda": torch.version.cuda, "seconds": None, "smoke": smoke}
    csv_path.with_suffix(".json").write_text(json.dumps(note, indent=1) + "\n")  # if cut off
    for dtype_name, dtype in DTYPES.items():
        element_size = torch.finfo(dtype).bits // 8
        for hidden in hidden_sizes:
            rows = GROUPS if smoke else INPUT_BYTES // (hidden * element_size)
            copy = copy_gbps(rows * hidden * element_size, dtype, device)
            for norm in ("layernorm", "rmsnorm", "groupnorm"):
                x, w, b = inputs(norm, rows, hidden, dtype, device)
                mismatches += verify(norm, x, w, b)
                passes = ["forward"] if norm == "groupnorm" else ["forward", "forward+backward"]
                for pass_ in passes:
                    compile_ok = (device.type == "cuda" and not smoke
                                  and compile_seconds < compile_budget_s)
                    for impl, fn in forward_impls(norm, compile_ok).items():
                        first = time.perf_counter()
                        ms = measure(norm, pass_, fn, x, w, b, device)
                        if impl == "torch.compile":
                            compile_seconds += time.perf_counter() - first
                        n_bytes = fast_norms.minimal_bytes(norm, pass_, rows, hidden,
                                                           element_size)
                        rows_out.append({
                            "device": device_name, "torch": torch.__version__,
                            "triton": triton_norms.triton.__version__, "norm": norm,
                            "pass": pass_, "dtype": dtype_name, "rows": rows, "hidden": hidden,
                            "impl": impl, "ms": f"{ms:.6g}",
                            "gbps": f"{fast_norms.gbps(n_bytes, ms):.6g}",
                            "copy_gbps": f"{copy:.6g}"})
                del x, w, b
            write_csv(csv_path, rows_out)  # after every shape: a cut-off run keeps its rows
            print(f"{dtype_name} hidden {hidden}: done at {time.perf_counter() - started:.0f} s"
                  f" (torch.compile so far {compile_seconds:.0f} s)", flush=True)
    note["seconds"] = round(time.perf_counter() - started)
    note["compile_and_measure_seconds"] = round(compile_seconds)
    csv_path.with_suffix(".json").write_text(json.dumps(note, indent=1) + "\n")
    print_summary(rows_out)
    print(f"wrote {csv_path} in {note['seconds']} s")
    if mismatches:
        raise SystemExit("Triton differs from torch.nn:\n" + "\n".join(mismatches))
    return csv_path


def print_summary(rows: list[dict]) -> None:
    """Fraction of copy bandwidth, min-max over hidden sizes, per norm, pass, dtype and impl."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        key = (row["norm"], row["pass"], row["dtype"], row["impl"])
        groups.setdefault(key, []).append(float(row["gbps"]) / float(row["copy_gbps"]))
    print(f"{'norm':10} {'pass':17} {'dtype':5} {'impl':16} fraction of copy (min-max)")
    for (norm, pass_, dtype, impl), fractions in groups.items():
        print(f"{norm:10} {pass_:17} {dtype:5} {impl:16} {min(fractions):.2f}-{max(fractions):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--smoke", action="store_true", help="tiny shapes; runs on the CPU")
    parser.add_argument("--compile-budget-s", type=float, default=180.0,
                        help="stop measuring torch.compile once compiling took this long")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA device: the full benchmark needs a GPU (try --smoke on a CPU)")
    run(args.out, args.smoke, args.compile_budget_s)


if __name__ == "__main__":
    main()
