"""Worker functions for the chapter on BatchNorm across processes; each runs on one rank.

``helpers.distributed.run_on_ranks`` calls them inside an initialised gloo process group. They
receive the module to run (or a factory for it) as an argument, so that the chapter's own
``SyncBatchNorm`` — defined in a notebook cell and inherited by the forked workers — is what runs.
"""

from collections.abc import Callable

import torch
import torch._dynamo  # noqa: F401 - DDP imports it on first use: once here, not in every worker
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from helpers.compare import forbid_builtin_norms


def data_parallel_forward(norm: nn.Module, shard: torch.Tensor) -> dict[str, torch.Tensor]:
    """One training forward of ``norm`` wrapped in DistributedDataParallel, on this rank's shard;
    returns the output and the shard's per-channel mean and biased variance (in float64)."""
    model = DistributedDataParallel(norm)
    output = model(shard)
    dims, exact = (0, *range(2, shard.dim())), shard.double()  # statistics to print: float64
    return {
        "output": output.detach(),
        "mean": exact.mean(dim=dims),
        "var": exact.var(dim=dims, unbiased=False),
    }


def sync_norm_steps(
    make_norm: Callable[[], nn.Module],
    shards: list[torch.Tensor],
    upstreams: list[torch.Tensor],
) -> dict[str, object]:
    """Training steps of a synchronised norm on this rank's shards, then one eval forward.

    Step ``i`` runs ``shards[i]`` forward and ``upstreams[i]`` backward, with every built-in norm
    function disabled. Returns per step the output and the gradients of the input, weight and bias
    (this rank's parts: a data-parallel wrapper would add the parameter gradients of all ranks),
    then the eval-mode output of the last shard and the final state_dict.
    """
    norm = make_norm()
    record: dict[str, object] = {"output": [], "grad_x": [], "grad_weight": [], "grad_bias": []}
    with forbid_builtin_norms():
        for shard, upstream in zip(shards, upstreams, strict=True):
            x = shard.clone().requires_grad_()
            output = norm(x)
            (output * upstream).sum().backward()
            record["output"].append(output.detach())
            record["grad_x"].append(x.grad)
            record["grad_weight"].append(None if norm.weight is None else norm.weight.grad.clone())
            record["grad_bias"].append(None if norm.bias is None else norm.bias.grad.clone())
            norm.zero_grad(set_to_none=False)
        norm.eval()
        record["eval_output"] = norm(shards[-1]).detach()
    record["state_dict"] = {key: value.clone() for key, value in norm.state_dict().items()}
    return record


def data_parallel_train(
    model: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    make_optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
) -> list[torch.Tensor]:
    """Training steps done as DistributedDataParallel does them: rank 0's buffers are broadcast
    before each forward, the gradients of the mean loss are averaged over the ranks.

    ``batches`` are this rank's (inputs, labels) per step. Returns the final ``state_dict``
    values (parameters and buffers) in order.
    """
    world_size = dist.get_world_size()
    optimizer = make_optimizer(list(model.parameters()))
    for inputs, labels in batches:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), labels).backward()
        grads = [p.grad for p in model.parameters()]
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        for grad, chunk in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            grad.copy_(chunk.view_as(grad) / world_size)
        optimizer.step()
    return [value.detach().clone() for value in model.state_dict().values()]
