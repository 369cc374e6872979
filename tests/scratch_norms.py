"""A minimal from-scratch BatchNorm2d for testing the harness, with switches that plant bugs.

Each switch reproduces a mistake seen in real tutorials; the harness tests assert that every one
is caught. With every switch off it must match ``nn.BatchNorm2d`` exactly.
"""

import torch
from torch import nn


class PlantedBatchNorm2d(nn.Module):
    """BatchNorm2d from elementary ops; ``bug`` names the mistake to plant, or ``None``."""

    BUGS = (
        "unbiased variance in normalization",
        "no Bessel correction in running_var",
        "wrong reduction axes",
        "ignores eval mode",
        "running stats as plain attributes",
        "calls F.batch_norm",
        "no num_batches_tracked increment",
        "wrong error message",
    )

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, bug: str | None = None):
        super().__init__()
        if bug is not None and bug not in self.BUGS:
            raise ValueError(f"unknown bug {bug!r}")
        self.bug, self.eps, self.momentum = bug, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        if bug == "running stats as plain attributes":
            self.running_mean = torch.zeros(num_features)
            self.running_var = torch.ones(num_features)
            self.num_batches_tracked = torch.tensor(0)
        else:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bug == "calls F.batch_norm":
            return torch.nn.functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, self.training, self.momentum, self.eps
            )
        if self.training and x.numel() // x.shape[1] == 1:
            self.num_batches_tracked += 1  # torch counts the batch before its check raises
            size = "x.shape" if self.bug == "wrong error message" else x.size()
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {size}")
        dims = (0, 2) if self.bug == "wrong reduction axes" else (0, 2, 3)
        shape = (1, -1, 1, 1)
        if self.training or self.bug == "ignores eval mode":
            mean = x.mean(dim=dims, keepdim=True)
            n = x.numel() // x.shape[1] if dims == (0, 2, 3) else x.shape[0] * x.shape[2]
            biased_var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
            var = biased_var * n / (n - 1) if self.bug == "unbiased variance in normalization" else biased_var
            if self.training:
                with torch.no_grad():
                    if self.bug != "no num_batches_tracked increment":
                        self.num_batches_tracked += 1
                    bessel = 1.0 if self.bug == "no Bessel correction in running_var" else n / (n - 1)
                    self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean.flatten()[: x.shape[1]])
                    self.running_var.mul_(1 - self.momentum).add_(
                        self.momentum * bessel * biased_var.flatten()[: x.shape[1]]
                    )
        else:
            mean, var = self.running_mean.view(shape), self.running_var.view(shape)
        x_hat = (x - mean) / torch.sqrt(var + self.eps)
        return x_hat * self.weight.view(shape) + self.bias.view(shape)
