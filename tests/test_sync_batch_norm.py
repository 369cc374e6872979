"""The chapter's SyncBatchNorm, convert_sync_batchnorm and FrozenBatchNorm2d, tested from pytest.

The classes live in the chapter, where the reader sees them; ``chapter_namespace`` executes the
chapter's import cell and the cells that define them. The CUDA test compares the from-scratch
``SyncBatchNorm`` with ``nn.SyncBatchNorm``; it needs two processes, because with one rank
``nn.SyncBatchNorm`` does not synchronise at all (it falls back to ``F.batch_norm`` when the
world size is 1), so a one-process run would prove nothing about the synchronised path. With one
GPU both ranks share it, joined by gloo, which moves CUDA tensors through host memory; NCCL
refuses two ranks on one device.
"""

import ast
import copy
import functools
from pathlib import Path

import nbformat
import pytest
import torch
from torch import nn

from helpers.distributed import run_on_ranks
from helpers.sync_batch_norm import sync_norm_steps

CHAPTER = Path(__file__).resolve().parent.parent / "chapters" / "batch_norm_in_practice.ipynb"
DEFINED = {
    "reduce_dims",
    "per_channel",
    "merge_statistics",
    "SyncBatchNormFunction",
    "SyncBatchNorm",
    "convert_sync_batchnorm",
    "FrozenBatchNorm2d",
}


def chapter_namespace() -> dict:
    """Run every cell of the chapter that defines one of ``DEFINED``, with the chapter's names
    for torch's modules (its import cell also loads plotting and the book's Sphinx glue, which
    would make every spawned worker slow to start)."""
    code_cells = [cell.source for cell in nbformat.read(CHAPTER, as_version=4).cells if cell.cell_type == "code"]
    namespace: dict = {"torch": torch, "dist": torch.distributed, "nn": nn, "F": torch.nn.functional}
    for number, source in enumerate(code_cells):
        names = {node.name for node in ast.parse(source).body if isinstance(node, ast.FunctionDef | ast.ClassDef)}
        if names & DEFINED:
            exec(compile(source, f"{CHAPTER.name}, code cell {number + 1}", "exec"), namespace)
    missing = DEFINED - namespace.keys()
    assert not missing, f"the chapter no longer defines {sorted(missing)}"
    return namespace


@pytest.fixture(scope="module")
def chapter() -> dict:
    return chapter_namespace()


def shards_and_upstreams(sizes, dtype, shape=(4, 3, 3), steps=2, seed=0):
    """Per step, a whole batch with mean 5 and spread 3 and an upstream gradient."""
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(sum(sizes), *shape, dtype=dtype, generator=generator) * 3 + 5 for _ in range(steps)]
    return inputs, [torch.randn(x.shape, dtype=dtype, generator=generator) for x in inputs]


def assert_equal_to_whole_batch(make_norm, reference: nn.Module, sizes, dtype, shape=(4, 3, 3)) -> None:
    """Raise if ``make_norm()`` on len(sizes) ranks differs from ``reference`` on the whole batch."""
    inputs, upstreams = shards_and_upstreams(sizes, dtype, shape)
    args = [
        (make_norm, [x.split(sizes)[r] for x in inputs], [g.split(sizes)[r] for g in upstreams])
        for r in range(len(sizes))
    ]
    ranks = run_on_ranks(sync_norm_steps, len(sizes), args)
    tolerance = {"atol": 1e-10, "rtol": 1e-10} if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-4}
    close = functools.partial(torch.testing.assert_close, **tolerance)
    for step, (x, upstream) in enumerate(zip(inputs, upstreams, strict=True)):
        x = x.clone().requires_grad_()
        output = reference(x)
        (output * upstream).sum().backward()
        close(torch.cat([r["output"][step] for r in ranks]), output.detach())
        close(torch.cat([r["grad_x"][step] for r in ranks]), x.grad)
        if reference.weight is not None:
            close(sum(r["grad_weight"][step] for r in ranks), reference.weight.grad)
            close(sum(r["grad_bias"][step] for r in ranks), reference.bias.grad)
        reference.zero_grad()
    close(torch.cat([r["eval_output"] for r in ranks]), reference.eval()(inputs[-1]).detach())
    for rank in ranks:
        for key, expected in reference.state_dict().items():
            close(rank["state_dict"][key], expected)


@pytest.mark.parametrize(
    "sizes,dtype,kwargs,shape",
    [
        ([2, 1, 3], torch.float64, {}, (4, 3, 3)),
        ([4, 0], torch.float32, {}, (4, 3, 3)),
        ([3, 2, 0, 1], torch.float64, {"momentum": None, "affine": False}, (4, 3, 3)),
        ([3, 2, 3], torch.float64, {}, (5,)),
        ([2, 3], torch.float32, {"eps": 1e-3, "momentum": 0.3}, (4, 7)),
    ],
    ids=["3 ranks unequal", "empty rank float32", "no affine momentum None", "(N, C)", "(N, C, L)"],
)
def test_sync_batch_norm_equals_batch_norm_on_the_whole_batch(chapter, sizes, dtype, kwargs, shape):
    reference = (nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d)(shape[0], dtype=dtype, **kwargs)
    make_norm = functools.partial(chapter["SyncBatchNorm"], shape[0], dtype=dtype, **kwargs)
    assert_equal_to_whole_batch(make_norm, reference, sizes, dtype, shape)


def test_the_check_catches_a_planted_scale_in_training(chapter):
    class Planted(chapter["SyncBatchNorm"]):
        def forward(self, x):
            y = super().forward(x)
            return y * 1.001 if self.training else y

    with pytest.raises(AssertionError):
        assert_equal_to_whole_batch(functools.partial(Planted, 4), nn.BatchNorm2d(4), [2, 2], torch.float32)


def test_the_check_catches_a_merge_without_the_between_rank_term(chapter, monkeypatch):
    merge = chapter["merge_statistics"]

    def merge_forgetting_delta(gathered, channels):
        count, mean, _ = merge(gathered, channels)
        return count, mean, sum(stats[1 + channels :] for stats in gathered)  # only the M_r

    monkeypatch.setitem(chapter, "merge_statistics", merge_forgetting_delta)
    make_norm = functools.partial(chapter["SyncBatchNorm"], 4, dtype=torch.float64)
    with pytest.raises(AssertionError):
        assert_equal_to_whole_batch(make_norm, nn.BatchNorm2d(4, dtype=torch.float64), [2, 2], torch.float64)


def test_convert_sync_batchnorm_shares_parameters_and_state_dict(chapter):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm1d(4)))
    converted = chapter["convert_sync_batchnorm"](copy.deepcopy(model))
    assert type(converted[1]) is chapter["SyncBatchNorm"] and type(converted[2][0]) is chapter["SyncBatchNorm"]
    shared = chapter["convert_sync_batchnorm"](model)
    assert shared[1].weight is model[1].weight and shared[1].running_mean is model[1].running_mean
    theirs = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model))
    converted.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(converted.state_dict())


def test_frozen_batch_norm_equals_eval_batch_norm(chapter):
    trained = nn.BatchNorm2d(3, dtype=torch.float64)
    with torch.no_grad():
        trained.weight.uniform_(0.5, 2), trained.running_mean.normal_(), trained.running_var.uniform_(0.5, 2)
    frozen = chapter["FrozenBatchNorm2d"](3).double()
    frozen.load_state_dict(trained.state_dict())
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(frozen.train()(x), trained.eval()(x), rtol=1e-12, atol=1e-12)


def compare_on_device(device_type: str, sizes: list[int]) -> dict[str, torch.Tensor]:
    """On this rank: ours (and, on CUDA, nn.SyncBatchNorm) on this rank's shard, one step."""
    import torch.distributed as dist

    rank = dist.get_rank()
    device = torch.device(device_type, rank % torch.cuda.device_count()) if device_type == "cuda" else "cpu"
    inputs, upstreams = shards_and_upstreams(sizes, torch.float32, steps=1)
    shard, upstream = inputs[0].split(sizes)[rank].to(device), upstreams[0].split(sizes)[rank].to(device)
    modules = {"ours": chapter_namespace()["SyncBatchNorm"](4)}
    if device_type == "cuda":
        modules["theirs"] = nn.SyncBatchNorm(4)
    result = {}
    for name, module in modules.items():
        module = module.to(device)
        x = shard.clone().requires_grad_()
        output = module(x)
        (output * upstream).sum().backward()
        result[name] = {
            "output": output.detach().cpu(),
            "grad_x": x.grad.cpu(),
            "grad_weight": module.weight.grad.cpu(),
            "grad_bias": module.bias.grad.cpu(),
            "running_mean": module.running_mean.cpu(),
            "running_var": module.running_var.cpu(),
        }
    return result


def check_spawned_run(device_type: str, sizes: list[int]) -> list[dict]:
    ranks = run_on_ranks(compare_on_device, len(sizes), [(device_type, sizes)] * len(sizes), start_method="spawn")
    inputs, upstreams = shards_and_upstreams(sizes, torch.float32, steps=1)
    reference = nn.BatchNorm2d(4)
    x = inputs[0].clone().requires_grad_()
    (reference(x) * upstreams[0]).sum().backward()
    close = functools.partial(torch.testing.assert_close, atol=1e-5, rtol=1e-4)
    for name in ranks[0]:
        close(torch.cat([r[name]["output"] for r in ranks]), reference.train()(inputs[0]).detach())
        close(torch.cat([r[name]["grad_x"] for r in ranks]), x.grad)
        close(sum(r[name]["grad_weight"] for r in ranks), reference.weight.grad)
        close(sum(r[name]["grad_bias"] for r in ranks), reference.bias.grad)
    return ranks


def test_spawned_workers_run_the_chapter_class():
    check_spawned_run("cpu", [3, 2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sync_batch_norm_equals_torch_sync_batch_norm_on_cuda():
    ranks = check_spawned_run("cuda", [3, 2])
    for rank in ranks:
        for key in rank["ours"]:
            torch.testing.assert_close(rank["ours"][key], rank["theirs"][key], atol=1e-5, rtol=1e-4)
