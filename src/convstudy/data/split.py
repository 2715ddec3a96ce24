"""Stratified subsets and hold-out splits: class proportions kept, the same for the same seed."""

from __future__ import annotations

import torch

from convstudy.errors import UserError


def stratified_indices(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """`n` indices into `labels` keeping class proportions, sorted; all of them when n >= len."""
    labels = labels.detach().reshape(-1).cpu()
    total = labels.numel()
    if n < 0:
        raise UserError(f"cannot take {n} examples; the count must be 0 or more")
    if n >= total:
        return torch.arange(total)
    classes, counts = torch.unique(labels, return_counts=True)
    # Largest-remainder apportionment in exact integers: each class gets floor(n * share) and the
    # seats left over go to the largest remainders, ties to the smaller class label.
    quotas = counts * n // total
    remainders = counts * n % total
    short = n - int(quotas.sum())
    quotas[torch.argsort(-remainders, stable=True)[:short]] += 1
    generator = torch.Generator().manual_seed(seed)
    picks = []
    for cls, quota in zip(classes, quotas.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        picks.append(members[torch.randperm(len(members), generator=generator)[:quota]])
    return torch.cat(picks).sort().values


def stratified_split(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train_idx, holdout_idx): a stratified `fraction` held out, the rest kept, both sorted."""
    if not 0.0 < fraction < 1.0:
        raise UserError(f"hold-out fraction must be between 0 and 1 (exclusive), got {fraction}")
    total = labels.numel()
    holdout = stratified_indices(labels, round(fraction * total), seed)
    keep = torch.ones(total, dtype=torch.bool)
    keep[holdout] = False
    return torch.nonzero(keep).flatten(), holdout
