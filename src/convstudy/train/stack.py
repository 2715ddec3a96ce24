"""Training the seeds of one model together, as one stacked network (model.stack).

Small CNNs leave a GPU (and, less so, a CPU) idle between kernel launches. Each member sees its own
shuffling and its own batches, starts from its own seeded weights, and its loss is a separate term,
so its gradients and its (element-wise) optimiser updates are those of a lone trial. What is shared:
dropout masks come from one RNG stream and the arithmetic of grouped ops rounds differently, so a
member's numbers match a lone trial's statistically, not bit for bit (docs/semantics.md). A member's
checkpoint is a lone trial's checkpoint, so either can resume it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convstudy.model import member_tensors, stack_modules, stack_tensors
from convstudy.spec import TrainSettings
from convstudy.train.device import Plan
from convstudy.train.augment import Augment
from convstudy.train.loop import (
    EVAL_BATCH, Split, Stepper, autocast, cpu_weights, make_optimizer, norm_meta, to_input,
)
from convstudy.train.schedule import make_scheduler
from convstudy.train.state import TrainState, pack_state


class Stacked:
    """Seeds of one model as one stacked network, with the interface of train.loop.Lone, so that
    run_trial trains it with the same loop. Member i keeps its own shuffling, augmentation generator
    and history; the lr schedule is one (members are at the same epoch)."""

    def __init__(self, states: list[TrainState], settings: TrainSettings, plan: Plan, steps_per_epoch: int = 1,
                 norm: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        device = torch.device(plan.device)
        self.plan, self.size = plan, len(states)
        self.model = stack_modules([st.model for st in states])
        if plan.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(settings.optimizer, self.model.parameters(),
                                        capturable=device.type == "cuda", foreach=plan.foreach)
        if any(st.optimizer.state for st in states):
            self.optimizer.load_state_dict(stack_optimizer_states([st.optimizer.state_dict() for st in states]))
        self.shuffles = [st.shuffle for st in states]
        self.augments = [st.augment for st in states]
        self.augmenter = Augment(settings.augment)
        self.epoch = states[0].epoch
        self.histories = [list(st.history) for st in states]
        self.smoothing = settings.label_smoothing
        self.norm = norm  # one member's (1, C, 1, 1); _stacked_input repeats it per member
        self.stacked_norm = None if norm is None else (norm[0].repeat(1, self.size, 1, 1),
                                                       norm[1].repeat(1, self.size, 1, 1))
        self.scheduler = make_scheduler(settings, self.optimizer, steps_per_epoch, states[0].schedule)
        self.step = Stepper(self.optimizer, self._step, settings.batch_size,
                            plan.cuda_graphs and self.scheduler is None)

    def augment(self, xb: torch.Tensor) -> torch.Tensor:
        """(N, S, C, H, W): member s's images augmented with member s's generator, as its lone trial's."""
        if not self.augmenter:
            return xb
        return torch.stack([self.augmenter(xb[:, s], g) for s, g in enumerate(self.augments)], 1)

    def shuffled(self, split: Split) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each member's own shuffle of the epoch, (n, S, C, H, W) and (n, S), and per-member accumulators."""
        device = split.x.device
        self.model.train()
        perms = torch.stack([torch.randperm(len(split), generator=g) for g in self.shuffles], 1).to(device)
        return (split.x[perms], split.y[perms], torch.zeros(self.size, device=device),
                torch.zeros(self.size, device=device, dtype=torch.int64))

    def _step(self, xb: torch.Tensor, yb: torch.Tensor, loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
        """One optimiser step for every member; each member's loss is its own batch mean."""
        with autocast(xb.device, self.plan.precision):
            logits = self.model(_stacked_input(xb, self.plan.channels_last, self.stacked_norm))  # (N, S, K)
        losses = F.cross_entropy(logits.float().transpose(1, 2), yb, reduction="none",
                                 label_smoothing=self.smoothing).mean(0)  # (S,)
        losses.sum().backward()
        self.optimizer.step()
        loss_sum += losses.detach() * yb.shape[0]
        correct += (logits.detach().argmax(2) == yb).sum(0)

    @torch.inference_mode()
    def evaluate(self, split: Split, with_probs: bool = False) -> tuple[list[float], list[float], list | None]:
        """Per-member (mean losses, accuracies, probabilities (N, K) each or None) on one shared split."""
        self.model.eval()
        device, s = split.x.device, self.size
        loss_sum = torch.zeros(s, device=device)
        correct = torch.zeros(s, device=device, dtype=torch.int64)
        probs = []
        for start in range(0, len(split), EVAL_BATCH):
            xb, yb = split.x[start:start + EVAL_BATCH], split.y[start:start + EVAL_BATCH]
            with autocast(device, self.plan.precision):
                logits = self.model(_stacked_input(xb.unsqueeze(1).expand(-1, s, -1, -1, -1),
                                                   self.plan.channels_last, self.stacked_norm)).float()
            yy = yb.unsqueeze(1).expand(-1, s)
            loss_sum += F.cross_entropy(logits.transpose(1, 2), yy, reduction="none").sum(0)
            correct += (logits.argmax(2) == yy).sum(0)
            if with_probs:
                probs.append(torch.softmax(logits, dim=2).transpose(0, 1).cpu())
        n = len(split)
        return ([v / n for v in loss_sum.tolist()], [c / n for c in correct.tolist()],
                list(torch.cat(probs, 1)) if with_probs else None)

    def checkpoint(self, index: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Member `index`'s checkpoint in a lone trial's format, so either can resume it."""
        sd = self.optimizer.state_dict()
        opt = {"state": {idx: member_tensors(slots, index, self.size) for idx, slots in sd["state"].items()},
               "param_groups": sd["param_groups"]}
        schedule = self.scheduler.state_dict() if self.scheduler is not None else None
        return pack_state(self.weights(index), opt, self.shuffles[index], self.epoch, self.histories[index],
                          self.augments[index], schedule, norm_meta(self.norm))

    def weights(self, index: int) -> dict[str, torch.Tensor]:
        """Member `index`'s weights and buffers under a lone model's state_dict keys, on the CPU."""
        return cpu_weights(member_tensors(self.model.state_dict(), index, self.size))


def stack_optimizer_states(members: list[dict]) -> dict:
    """Members' optimiser state_dicts (same spec, same parameter order) as the stack's."""
    state = {idx: stack_tensors([m["state"][idx] for m in members]) for idx in members[0]["state"]}
    return {"state": state, "param_groups": members[0]["param_groups"]}


def _stacked_input(xb: torch.Tensor, channels_last: bool, norm=None) -> torch.Tensor:
    """(N, S, C, H, W) uint8 -> (N, S*C, H, W) float, each member's images in its own channel group."""
    n, s, c, h, w = xb.shape
    return to_input(xb.reshape(n, s * c, h, w), channels_last, norm)
