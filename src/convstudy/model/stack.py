"""Several copies of one network as one S-times-wider network whose members never mix.

Convolutions become grouped (group s is member s's channels), dense layers batched matmuls, batch
norms per-member channels; element-wise layers stay as they are. Every parameter and buffer of the
stack is the members' tensors concatenated along dim 0, so a member's state is a slice that loads
into the lone network unchanged (`member_tensors`). train.stack trains seeds of a model this way.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from convstudy.model.conv import Conv2d

SHARED = "num_batches_tracked"  # a buffer every member has the same value of


class StackedFlatten(nn.Module):
    """(N, S*C, H, W) -> (N, S, C*H*W): each member's features flattened in its own (C, H, W) order."""

    def __init__(self, members: int) -> None:
        super().__init__()
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], self.members, -1)


class StackedLinear(nn.Linear):
    """S independent Linear layers on (N, S, in); weight is (S*out, in), the members' weights stacked."""

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__(in_features, members * out_features)
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.members
        w = self.weight.view(s, -1, self.in_features)
        y = torch.bmm(x.transpose(0, 1), w.transpose(1, 2))  # (S, N, out)
        return y.transpose(0, 1) + self.bias.view(s, -1)


class StackedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over (N, S, F) as S*F channels, so each member keeps its own statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(x.shape[0], -1)).view_as(x)


def stack_modules(members: list[nn.Sequential]) -> nn.Sequential:
    """One Sequential computing all `members` side by side; module names match a member's."""
    with torch.random.fork_rng(devices=[]):  # new modules draw init weights we overwrite: keep dropout's RNG
        return _stack_modules(members)


def _stack_modules(members: list[nn.Sequential]) -> nn.Sequential:
    s = len(members)
    mods: list[nn.Module] = []
    for layers in zip(*members):
        first = layers[0]
        if isinstance(first, nn.Conv2d):
            if first.groups != 1:
                raise ValueError("stacking grouped convolutions is not supported")
            mod: nn.Module = Conv2d(s * first.in_channels, s * first.out_channels, first.kernel_size,
                                    stride=first.stride, padding=first.padding, dilation=first.dilation,
                                    groups=s, bias=first.bias is not None)
        elif isinstance(first, nn.Linear):
            mod = StackedLinear(s, first.in_features, first.out_features)
        elif isinstance(first, nn.BatchNorm2d):
            mod = nn.BatchNorm2d(s * first.num_features, eps=first.eps, momentum=first.momentum)
        elif isinstance(first, nn.BatchNorm1d):
            mod = StackedBatchNorm1d(s * first.num_features, eps=first.eps, momentum=first.momentum)
        elif isinstance(first, nn.Flatten):
            mod = StackedFlatten(s)
        elif next(first.parameters(), None) is None and next(first.buffers(), None) is None:
            mod = copy.deepcopy(first)  # element-wise or per-channel: pooling, activations, dropout, padding
        else:
            raise ValueError(f"cannot stack a {type(first).__name__}")
        mods.append(mod)
    like = next(members[0].parameters())
    stacked = nn.Sequential(*mods).to(like.device, like.dtype)
    stacked.load_state_dict(stack_tensors([m.state_dict() for m in members]))
    return stacked


def _shared(key: str, t: torch.Tensor) -> bool:
    """A value every member has alike (a batch-norm counter, an optimiser step count): kept once."""
    return key.endswith(SHARED) or t.dim() == 0


def stack_tensors(members: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Members' same-keyed tensors concatenated along dim 0 (shared values kept once)."""
    return {key: first.clone() if _shared(key, first) else torch.cat([m[key] for m in members])
            for key, first in members[0].items()}


def member_tensors(stacked: dict, index: int, members: int) -> dict:
    """Member `index`'s slice of `stack_tensors` output (non-tensor values pass through)."""
    return {key: t if not torch.is_tensor(t) or _shared(key, t) else t.chunk(members)[index]
            for key, t in stacked.items()}
