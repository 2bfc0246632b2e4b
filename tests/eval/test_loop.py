"""The fine-tune / probe training step: a non-finite gradient never reaches the weights."""

from contextlib import nullcontext

import torch
from torch import nn

from crossmae.eval.loop import Schedule, StepTools, train_one_epoch
from crossmae.train.optim import build_adamw, param_groups


class FiniteLossNanGradient(nn.Module):
    """sqrt(0) is 0 going forward and its derivative infinite: a finite loss, a NaN grad."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.nan_gradient = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x)
        return out + (self.fc.weight[0, 0] * 0).sqrt() if self.nan_gradient else out


def test_a_step_with_a_finite_loss_and_a_nan_gradient_is_skipped():
    torch.manual_seed(0)
    model = FiniteLossNanGradient()
    optimizer = build_adamw(param_groups(model, 0.05), 1e-2, (0.9, 0.999), "cpu")
    tools = StepTools(optimizer, nn.CrossEntropyLoss(), Schedule(1e-2, 0, 10),
                      torch.device("cpu"), nullcontext, log_every=100)  # fmt: skip
    before = [p.detach().clone() for p in model.parameters()]
    batch = (torch.randn(8, 4), torch.randint(3, (8,)))
    assert train_one_epoch(model, [batch], tools, 0) == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    model.nan_gradient = False  # the same step with a finite gradient updates
    train_one_epoch(model, [batch], tools, 1)
    assert not torch.equal(before[0], model.fc.weight)
