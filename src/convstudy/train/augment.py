"""Training-batch augmentation on the training device: tensor ops on whole uint8 batches, as airbench does.

`[train] augment = ["flip", "crop(4)", "translate(2)", "cutout(8)"]` (validated by
`convstudy.spec.models.parse_augment`) runs, in the listed order, on every training batch, before the
batch becomes the network's float input; validation and test data are never augmented. Every random
draw comes from the trial's own `torch.Generator` on the trial's device (seeded from the trial's
seed, saved in its checkpoint), so a run is deterministic per seed and resumes bit-identically.

- `flip`: each image mirrored left-right with probability 1/2;
- `crop(p)`: zero-padded by p pixels on every side, then cropped back to its size at a random place
  (torchvision's RandomCrop(size, padding=p)): a shift by -p..p pixels each way, zeros coming in;
- `translate(p)`: the same shifts, but the edge content is reflected in (airbench's translate);
- `cutout(s)`: one random s x s square (inside the image; the whole image if s is larger) set to 0.

Fills are pixel value 0 (black) in the uint8 image, before normalisation.
"""

from __future__ import annotations

import re

import torch

AUGMENT_SEED = 0x6175676D656E74  # "augment": keeps a trial's augmentation stream apart from its shuffling


def seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    """The trial's augmentation generator, on its training device."""
    return torch.Generator(device=device).manual_seed(seed ^ AUGMENT_SEED)


def flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image of an (N, C, H, W) batch left-right with probability 1/2."""
    mirrored = torch.rand(x.shape[0], generator=gen, device=x.device) < 0.5
    return torch.where(mirrored.view(-1, 1, 1, 1), x.flip(-1), x)


def shift(x: torch.Tensor, gen: torch.Generator, pixels: int, reflect: bool) -> torch.Tensor:
    """Shift each image by its own (dy, dx) in [-pixels, pixels]: zeros come in (crop) or the edge is reflected."""
    n, c, h, w = x.shape
    d = torch.randint(-pixels, pixels + 1, (2, n), generator=gen, device=x.device)
    rows = torch.arange(h, device=x.device) + d[0][:, None]  # (n, h): the source row of every output row
    cols = torch.arange(w, device=x.device) + d[1][:, None]
    if reflect:
        rows, cols = _reflect(rows, h), _reflect(cols, w)
    else:
        inside = (((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]).unsqueeze(1)
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    out = x.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    out = out.gather(3, cols[:, None, None, :].expand(n, c, h, w))
    return out if reflect else out.masked_fill(~inside, 0)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices in [-size+1, 2*size-2] mirrored into [0, size) without repeating the edge (numpy's 'reflect')."""
    index = index.abs()
    index = torch.where(index > size - 1, 2 * (size - 1) - index, index)
    return index.clamp(0, size - 1)


def cutout(x: torch.Tensor, gen: torch.Generator, size: int) -> torch.Tensor:
    """Zero one random size x size square of each image (placed inside it; clipped when larger)."""
    n, _, h, w = x.shape
    y0 = torch.randint(0, max(h - size, 0) + 1, (n,), generator=gen, device=x.device)
    x0 = torch.randint(0, max(w - size, 0) + 1, (n,), generator=gen, device=x.device)
    r = torch.arange(h, device=x.device)[None, :] - y0[:, None]
    c = torch.arange(w, device=x.device)[None, :] - x0[:, None]
    square = ((r >= 0) & (r < size))[:, :, None] & ((c >= 0) & (c < size))[:, None, :]
    return x.masked_fill(square.unsqueeze(1), 0)


_ITEM = re.compile(r"^([a-z]+)(?:\((\d+)\))?$")


class Augment:
    """A trial's augmentations, parsed once from the canonical spellings in TrainSettings.augment."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = tuple(names)
        self.ops = []
        for name in self.names:
            m = _ITEM.match(name)
            if m is None or m.group(1) not in ("flip", "crop", "translate", "cutout"):
                raise ValueError(f"no augmentation {name}")  # pragma: no cover - the spec rejects it first
            self.ops.append((m.group(1), int(m.group(2) or 0)))

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The batch (N, C, H, W), augmented with draws from `gen` (on the batch's device)."""
        for op, arg in self.ops:
            if op == "flip":
                x = flip(x, gen)
            elif op == "crop":
                x = shift(x, gen, arg, reflect=False)
            elif op == "translate":
                x = shift(x, gen, arg, reflect=True)
            else:
                x = cutout(x, gen, arg)
        return x
