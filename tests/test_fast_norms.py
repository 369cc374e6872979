"""The plain-PyTorch rungs of the fast-norms chapter, its meters, and the benchmark script."""

import csv
import importlib.util
from pathlib import Path

import pytest
import torch

from helpers.fast_norms import (
    LayerNormSavingStats,
    RMSNormSavingStats,
    gbps,
    minimal_bytes,
    naive_group_norm,
    naive_layer_norm,
    naive_rms_norm,
    operator_traffic,
    saved_bytes,
    saved_tensors,
)

# imported at collection, before any test runs a TorchDispatchMode (which imports triton):
# helpers.triton_norms must set TRITON_INTERPRET=1 first on a machine without CUDA
try:
    from helpers import triton_norms
except ImportError:  # Triton ships Linux wheels only; only the benchmark's test needs it
    triton_norms = None

ROWS, HIDDEN = 6, 33


def leaves(*shapes, dtype=torch.float64):
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(s, dtype=dtype, generator=generator).requires_grad_() for s in shapes]


def grads(fn, tensors):
    out = fn(*tensors)
    return [out, *torch.autograd.grad(out, tensors, torch.ones_like(out))]


@pytest.mark.parametrize("ours", [naive_layer_norm, LayerNormSavingStats.apply])
def test_layer_norms_equal_torch_with_gradients(ours):
    x, w, b = leaves((ROWS, HIDDEN), HIDDEN, HIDDEN)
    expected = grads(lambda *t: torch.nn.functional.layer_norm(t[0], (HIDDEN,), *t[1:]), [x, w, b])
    for got, want in zip(grads(lambda *t: ours(*t, 1e-5), [x, w, b]), expected, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("ours", [naive_rms_norm, RMSNormSavingStats.apply])
def test_rms_norms_equal_torch_with_gradients(ours):
    x, w = leaves((ROWS, HIDDEN), HIDDEN)
    expected = grads(lambda *t: torch.nn.functional.rms_norm(t[0], (HIDDEN,), t[1], 1e-6), [x, w])
    for got, want in zip(grads(lambda *t: ours(*t, 1e-6), [x, w]), expected, strict=True):
        torch.testing.assert_close(got, want)


def test_naive_group_norm_equals_torch():
    x, w, b = leaves((3, 6, 5), 6, 6)
    torch.testing.assert_close(naive_group_norm(x, 3, w, b), torch.nn.functional.group_norm(x, 3, w, b))


def test_saved_bytes_counts_what_autograd_keeps_beyond_the_arguments():
    x, w, b = leaves((ROWS, HIDDEN), HIDDEN, HIDDEN, dtype=torch.float32)
    # the custom Function saves x, w (arguments) and mean, rstd: 2 float32 per row
    assert saved_bytes(lambda *t: LayerNormSavingStats.apply(*t, 1e-5), x, w, b) == 2 * ROWS * 4
    # a planted change: saving x * 2 (a new row-sized tensor) must show
    assert saved_bytes(lambda t: (t * 2).sin(), x) == ROWS * HIDDEN * 4
    assert saved_bytes(naive_layer_norm, x, w, b) > ROWS * HIDDEN * 4


def test_saved_tensors_names_what_the_naive_layer_norm_keeps():
    x, w, b = leaves((ROWS, HIDDEN), HIDDEN, HIDDEN, dtype=torch.float32)
    saved = saved_tensors(naive_layer_norm, x, w, b)
    full = [t for t in saved if t.shape == (ROWS, HIDDEN)]
    assert sorted(t.producer for t in full) == ["div", "sub", "sub"]  # x - mean (pow, div), x_hat
    assert len({t.storage for t in full}) == 3  # x - mean is computed twice: two storages
    sqrt = [t for t in saved if t.producer == "sqrt"]
    assert len(sqrt) == 2 and sqrt[0].storage == sqrt[1].storage and sqrt[0].shape == (ROWS, 1)
    # a planted change: computing x - mean once, pow and div save the same storage
    def centred_once(x, w, b):
        centred = x - x.mean(-1, keepdim=True)
        return centred / torch.sqrt((centred**2).mean(-1, keepdim=True) + 1e-5) * w + b
    once = saved_tensors(centred_once, x, w, b)
    assert len({t.storage for t in once if t.shape == (ROWS, HIDDEN)}) == 2


def test_operator_traffic_counts_inputs_and_outputs_of_each_operator():
    x = torch.zeros(ROWS, HIDDEN)
    traffic = operator_traffic(lambda: (x + 1) * 2)
    assert traffic.operators == 2
    assert traffic.bytes_moved == 4 * ROWS * HIDDEN * 4  # each op reads x-sized, writes x-sized
    # views move nothing: reshaping before the add leaves the count at one operator
    viewed = operator_traffic(lambda: x.view(-1).expand(2, -1) + 1)
    assert (viewed.operators, viewed.bytes_moved) == (1, 4 * ROWS * HIDDEN * 4)


def test_minimal_bytes_and_gbps():
    assert minimal_bytes("groupnorm", "forward", 4, 8, 2) == 2 * 4 * 8 * 2
    assert minimal_bytes("layernorm", "forward", 4, 8, 2) == 2 * 4 * 8 * 2 + 2 * 8 * 2
    # forward + backward: x, y; x, dy, dx; stats written and read; w, b; w; dw, db
    assert minimal_bytes("rmsnorm", "forward+backward", 4, 8, 4) == 5 * 4 * 8 * 4 + 2 * 4 * 4 + 3 * 8 * 4
    assert gbps(2_000_000, 1.0) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="minimal-bytes"):
        minimal_bytes("batchnorm", "forward", 4, 8, 2)
    with pytest.raises(ValueError, match="positive"):
        gbps(1, 0.0)


def test_benchmark_smoke_run_writes_the_promised_csv(tmp_path):
    if triton_norms is None:
        pytest.skip("Triton ships Linux wheels only")
    path = Path(__file__).resolve().parent.parent / "bench" / "norms.py"
    spec = importlib.util.spec_from_file_location("bench_norms", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    csv_path = bench.run(tmp_path, smoke=True)
    with csv_path.open() as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == ["device", "torch", "triton", "norm", "pass", "dtype", "rows",
                                 "hidden", "impl", "ms", "gbps", "copy_gbps"]
    assert {r["impl"] for r in rows} == {"torch.nn", "naive", "custom Function", "triton"}
    for row in rows:
        element_size = 2 if row["dtype"] == "bf16" else 4
        n_bytes = minimal_bytes(row["norm"], row["pass"], int(row["rows"]), int(row["hidden"]), element_size)
        assert float(row["gbps"]) == pytest.approx(n_bytes / float(row["ms"]) / 1e6, rel=1e-5)
