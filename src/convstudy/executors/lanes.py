"""Several trials side by side in one process: lanes that take turns, each on its own CUDA stream.

Small models leave a GPU idle between kernels, and worker processes only time-slice it. In one
process, trials on separate CUDA streams run their kernels concurrently. Each lane is a thread that
runs trials exactly as the sequential executor does; the lanes hand a baton round robin every few
batches, so only one of them issues torch calls at a time, and a lane's turn launches work without
waiting for it (CUDA graph replays are asynchronous). Graph capture therefore never sees another
thread's CUDA call.

Every lane keeps its own random state, swapped in with the baton: the CPU, Python and NumPy
generators by value, and on CUDA the default generator's graph-safe state object, so each lane's
captured graphs own their philox seed/offset tensors (a graph shared between streams would race on
them). A trial thus draws the same random numbers as it would alone, and its numbers and
checkpoints equal those of a sequential run (tests/test_lanes.py checks this on the CPU).
"""

from __future__ import annotations

import random
import threading
from collections import deque
from contextlib import nullcontext
from typing import Callable

import numpy as np
import torch

TURN_BATCHES = 4  # batches a lane launches per turn: enough queued work per stream, few thread switches


class Aborted(KeyboardInterrupt):
    """Raised in a lane at its next turn when the run must stop now (second Ctrl-C, another lane's error)."""


class Baton:
    """Round-robin turns among lanes 0..n-1, in that order, until each leaves; only the holder runs."""

    def __init__(self, n: int) -> None:
        self._cond = threading.Condition()
        self._order: deque[int] = deque(range(n))
        self.abort = False

    def wait_turn(self, lane: int) -> None:
        """Wait for `lane`'s first turn."""
        with self._cond:
            self._cond.wait_for(lambda: self._order[0] == lane)

    def alone(self) -> bool:
        return len(self._order) == 1

    def pass_on(self, lane: int) -> None:
        """`lane` (the holder) goes to the back of the queue and waits for its next turn."""
        with self._cond:
            assert self._order[0] == lane, "only the holder passes the baton"
            self._order.rotate(-1)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._order[0] == lane)

    def leave(self, lane: int) -> None:
        """`lane` is done: the next one in the queue gets the turn."""
        with self._cond:
            self._order.remove(lane)
            self._cond.notify_all()

    def stop_all(self) -> None:
        with self._cond:
            self.abort = True
            self._cond.notify_all()


class LaneRandom:
    """One lane's random state, installed while the lane holds the baton."""

    def __init__(self, device: torch.device) -> None:
        self.cpu = torch.get_rng_state()
        self.python = random.getstate()
        self.numpy = np.random.get_state()
        # A fresh graph-safe CUDA state: seeded by the trial (torch.manual_seed) once installed.
        self.cuda = torch.Generator(device=device) if device.type == "cuda" else None
        self.device = device

    def install(self) -> None:
        torch.set_rng_state(self.cpu)
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        if self.cuda is not None:
            torch.cuda.default_generators[_index(self.device)].graphsafe_set_state(self.cuda)

    def save(self) -> None:
        """Keep what the lane drew; the CUDA state needs no copy (the lane's object was in use)."""
        self.cpu = torch.get_rng_state()
        self.python = random.getstate()
        self.numpy = np.random.get_state()


class Lane:
    """What a lane's trials call after each batch (`turn`): every TURN_BATCHES, the next lane runs."""

    def __init__(self, index: int, baton: Baton, device: torch.device) -> None:
        self.index, self.baton = index, baton
        self.random = LaneRandom(device)
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._batches = 0

    def turn(self) -> None:
        self._batches += 1
        if self._batches % TURN_BATCHES == 0 and not self.baton.alone():
            self.random.save()
            self.baton.pass_on(self.index)
            self.random.install()
        if self.baton.abort:
            raise Aborted

    def stream_context(self):
        return torch.cuda.stream(self.stream) if self.stream is not None else nullcontext()


def run_lanes(n: int, serve: Callable[[Lane], bool], device: torch.device) -> bool:
    """Run `serve(lane)` on `n` lanes until each returns; True when all of them returned True.

    `serve` claims and trains trials until none is left, calling `lane.turn()` after every batch. A
    KeyboardInterrupt in this (main) thread stops every lane at its next turn; an exception in one
    lane stops the others the same way and is raised here once all have ended.
    """
    baton = Baton(n)
    results: list[bool] = [False] * n
    errors: list[BaseException] = []
    main_random = LaneRandom(torch.device("cpu"))
    main_cuda = torch.cuda.default_generators[_index(device)].graphsafe_get_state() if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the data uploaded on the default stream is ready for every lane's stream
    lanes = [Lane(i, baton, device) for i in range(n)]

    def lane_main(lane: Lane) -> None:
        baton.wait_turn(lane.index)
        try:
            lane.random.install()
            with lane.stream_context():
                results[lane.index] = serve(lane)
                if lane.stream is not None:
                    lane.stream.synchronize()
        except Aborted:
            results[lane.index] = False
        except BaseException as exc:  # handed to the main thread, which re-raises it
            errors.append(exc)
            baton.stop_all()
        finally:
            baton.leave(lane.index)

    threads = [threading.Thread(target=lane_main, args=(lane,), name=f"convstudy-lane-{lane.index}", daemon=True)
               for lane in lanes]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                try:
                    t.join(0.2)
                except KeyboardInterrupt:
                    baton.stop_all()
    finally:
        main_random.install()
        if main_cuda is not None:
            torch.cuda.default_generators[_index(device)].graphsafe_set_state(main_cuda)
    if errors:
        raise errors[0]
    return all(results) and not baton.abort


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()
