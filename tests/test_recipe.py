"""The training recipe of `[train]` (issue 16): augmentation, normalisation, schedules, label smoothing,
SGD with Nesterov; Keras 2 semantics stay the default (tests/test_determinism.py checks those numbers)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import epoch_metrics, kill_when, run_here, start_run, trial_results, write_tiny_study

from convstudy.cli import main
from convstudy.data import load_dataset
from convstudy.executors.trial import EpochDone, Finished, Progress, TrialJob, run_trial
from convstudy.spec import ModelSpec, OptimizerSpec, TrainSettings
from convstudy.store import CheckpointStorage, load_tensors
from convstudy.train import (
    Augment, Plan, channel_stats, evaluate, init_state, make_optimizer, make_scheduler, train_step,
    make_trial_data,
)
from convstudy.train.augment import cutout, flip, seeded_generator, shift

PLAN = Plan()  # the CPU, fp32
SPEC = ModelSpec(name="nodrop", layers=["conv(4,3)", "pool(2)", "flatten", "dense(10)"])


def _gen(seed: int = 0) -> torch.Generator:
    return seeded_generator(seed, torch.device("cpu"))


def _images(n: int, c: int = 1, h: int = 6, w: int = 7) -> torch.Tensor:
    """Distinct nonzero uint8 pixels, so any move of content is visible."""
    return (torch.arange(n * c * h * w) % 250 + 1).to(torch.uint8).reshape(n, c, h, w)


# --- augmentations on tiny tensors -------------------------------------------------------------------------

def test_flip_mirrors_some_images_and_leaves_the_others():
    x = _images(64, c=2)
    out = flip(x, _gen())
    mirrored = [bool(torch.equal(o, i.flip(-1))) for o, i in zip(out, x)]
    kept = [bool(torch.equal(o, i)) for o, i in zip(out, x)]
    assert all(m != k for m, k in zip(mirrored, kept))  # each image is one or the other
    assert 10 < sum(mirrored) < 54  # about half


def _shifted(img: np.ndarray, dy: int, dx: int, mode: str, p: int) -> np.ndarray:
    """The reference: pad by p (zeros, or reflected), crop the original size at offset (p + dy, p + dx)."""
    h, w = img.shape[-2:]
    pad = np.pad(img, ((0, 0), (p, p), (p, p)), mode="constant" if mode == "crop" else "reflect")
    return pad[:, p + dy:p + dy + h, p + dx:p + dx + w]


@pytest.mark.parametrize("mode", ["crop", "translate"])
def test_crop_and_translate_keep_the_size_and_shift_the_content(mode):
    p = 2
    x = _images(32, c=2)
    out = shift(x, _gen(1), p, reflect=mode == "translate")
    assert out.shape == x.shape and out.dtype == torch.uint8
    moved = 0
    for o, i in zip(out.numpy(), x.numpy()):
        matches = [(dy, dx) for dy in range(-p, p + 1) for dx in range(-p, p + 1)
                   if np.array_equal(o, _shifted(i, dy, dx, mode, p))]
        assert matches, "not a shift of the image by at most p pixels"
        moved += matches[0] != (0, 0)
    assert moved > 16
    if mode == "crop":  # zeros come in from the padding
        assert (out == 0).any()
    else:  # reflected edges: every pixel value comes from the image
        assert not (out == 0).any()


def test_cutout_zeroes_one_square_of_the_given_size_in_every_channel():
    x = torch.full((16, 3, 10, 12), 7, dtype=torch.uint8)
    out = cutout(x, _gen(2), 4)
    for img in out:
        zero = img == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])
        rows, cols = zero[0].nonzero(as_tuple=True)
        assert zero[0].sum() == 16
        assert rows.max() - rows.min() == 3 and cols.max() - cols.min() == 3  # a 4 x 4 square
    assert (out != 0).sum() == x.numel() - 16 * 3 * 16
    assert torch.equal(cutout(x, _gen(2), 99), torch.zeros_like(x))  # larger than the image: all of it


def test_augmentation_is_deterministic_per_seed():
    aug = Augment(("flip", "crop(4)", "translate(2)", "cutout(8)"))
    x = _images(64, c=1, h=28, w=28)
    first, again, other = aug(x, _gen(5)), aug(x, _gen(5)), aug(x, _gen(6))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not Augment(()) and torch.equal(x, _images(64, c=1, h=28, w=28))  # the input is never modified


def _data(tiny_mnist, settings):
    return make_trial_data(load_dataset("mnist", tiny_mnist.dir), settings, torch.device("cpu"))


def _job(settings, seed=3):
    return TrialJob(0, SPEC, settings, seed, (28, 28, 1), PLAN, owner=f"trial {seed}")


def _events(settings, data, root):
    return [e for e in run_trial(_job(settings), data, CheckpointStorage(str(root))) if not isinstance(e, Progress)]


def test_only_training_batches_are_augmented(tiny_mnist, tmp_path, monkeypatch):
    settings = TrainSettings(epochs=2, batch_size=32, optimizer="sgd", augment=["flip", "cutout(10)"])
    data = _data(tiny_mnist, settings)
    seen = []
    real = Augment.__call__
    monkeypatch.setattr(Augment, "__call__", lambda self, x, gen: seen.append(x.shape[0]) or real(self, x, gen))
    events = _events(settings, data, tmp_path)
    assert sum(seen) == 2 * len(data.train)  # every training image, once an epoch, and nothing else
    done = next(e for e in events if isinstance(e, Finished))
    model = init_state(SPEC, settings, (28, 28, 1), 3, PLAN).model
    model.load_state_dict(done.weights)
    loss, acc, _ = evaluate(model, data.test)  # plain, unaugmented evaluation of the final weights
    assert (loss, acc) == (done.test_loss, done.test_accuracy)


def test_channel_normalisation_uses_the_training_splits_statistics(tiny_mnist):
    x = torch.randint(0, 256, (50, 3, 5, 5), dtype=torch.uint8)
    mean, std = channel_stats(x, chunk=7)
    ref = x.double() / 255
    torch.testing.assert_close(mean.reshape(-1).double(), ref.mean((0, 2, 3)), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(std.reshape(-1).double(), ref.std((0, 2, 3), unbiased=False), rtol=1e-5, atol=1e-6)
    settings = TrainSettings(epochs=1, batch_size=32, normalize="channel")
    data = _data(tiny_mnist, settings)
    from convstudy.train import to_input
    norm = channel_stats(data.train.x)
    z = to_input(data.train.x, False, norm)
    assert abs(z.mean().item()) < 1e-4 and abs(z.std(unbiased=False).item() - 1) < 1e-3


# --- schedules ------------------------------------------------------------------------------------------

def _lrs(settings: TrainSettings, steps_per_epoch: int) -> list[float]:
    """The lr of every batch, as the trial's optimiser sees it at each step."""
    opt = make_optimizer(settings.optimizer, [torch.nn.Parameter(torch.zeros(2))])
    sched = make_scheduler(settings, opt, steps_per_epoch)
    out = []
    for _ in range(settings.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_constant_schedule_has_no_scheduler():
    opt = make_optimizer(OptimizerSpec(name="adam"), [torch.nn.Parameter(torch.zeros(2))])
    assert make_scheduler(TrainSettings(), opt, 10) is None


def test_warmup_then_cosine_per_batch():
    s = TrainSettings(epochs=4, optimizer={"name": "sgd", "lr": 0.1}, schedule="cosine", warmup=1)
    lrs = _lrs(s, 5)
    assert lrs[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])  # one epoch of linear warm-up, per batch
    want = [0.05 * (1 + math.cos(math.pi * j / 15)) for j in range(15)]
    assert lrs[5:] == pytest.approx(want)
    assert all(a > b for a, b in zip(lrs[5:], lrs[6:]))


def test_warmup_as_a_fraction_and_step_decay():
    s = TrainSettings(epochs=6, optimizer={"name": "sgd", "lr": 0.1}, schedule="step", step_every=2, step_gamma=0.5,
                      warmup=0.1)
    lrs = _lrs(s, 5)  # 30 batches: 3 of warm-up
    assert lrs[:3] == pytest.approx([0.1 / 3, 0.2 / 3, 0.1])
    assert lrs[3:10] == pytest.approx([0.1] * 7)
    assert lrs[10:20] == pytest.approx([0.05] * 10) and lrs[20:] == pytest.approx([0.025] * 10)


def test_one_cycle_peaks_at_the_end_of_its_warmup():
    s = TrainSettings(epochs=5, optimizer={"name": "sgd", "lr": 0.4, "momentum": 0.9}, schedule="one-cycle",
                      warmup=0.2)
    lrs = _lrs(s, 10)
    peak = int(np.argmax(lrs))
    assert lrs[peak] == pytest.approx(0.4) and peak == 9  # 20% of 50 batches
    assert lrs[0] == pytest.approx(0.4 / 25)  # OneCycleLR's div_factor
    assert lrs[-1] < 1e-3 and all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))


def test_a_trials_schedule_steps_every_batch_and_is_in_its_checkpoint(tiny_mnist, tmp_path):
    settings = TrainSettings(epochs=2, batch_size=32, optimizer={"name": "sgd", "lr": 0.05}, schedule="cosine")
    data = _data(tiny_mnist, settings)
    steps = -(-len(data.train) // 32)
    events = run_trial(_job(settings), data, CheckpointStorage(str(tmp_path)))
    next(e for e in events if isinstance(e, EpochDone))
    events.close()  # stopped after epoch 1, as an executor stops a trial
    _, meta = load_tensors(tmp_path / CheckpointStorage.key(SPEC.name, 3))
    assert json.loads(meta["schedule"])["last_epoch"] == steps  # one scheduler step per batch
    lr = json.loads(meta["optim.param_groups"])[0]["lr"]
    assert lr == pytest.approx(0.05 * 0.5 * (1 + math.cos(math.pi * steps / (2 * steps))))


# --- loss and optimisers --------------------------------------------------------------------------------

def test_label_smoothing_changes_the_training_loss_as_torchs_does(tiny_mnist):
    settings = TrainSettings(epochs=1, batch_size=32, optimizer="sgd", label_smoothing=0.2)
    data = _data(tiny_mnist, settings)
    state = init_state(SPEC, settings, (28, 28, 1), 3, PLAN)
    before = copy.deepcopy(state.model)
    xb, yb = data.train.x[:32], data.train.y[:32]
    loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.int64)
    state.model.train()
    train_step(state.model, state.optimizer, PLAN, None, settings.label_smoothing)(xb, yb, loss_sum, correct)
    logits = before(xb.float() / 255)
    want = F.cross_entropy(logits, yb, label_smoothing=0.2)
    assert loss_sum.item() / 32 == pytest.approx(want.item(), rel=1e-6)
    assert want.item() != pytest.approx(F.cross_entropy(logits, yb).item(), rel=1e-3)


def test_nesterov_momentum_and_weight_decay_reach_torch():
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = make_optimizer(OptimizerSpec(name="sgd", args={"lr": 0.1, "momentum": 0.9, "nesterov": True,
                                                         "weight_decay": 5e-4}), params)
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert (group["nesterov"], group["momentum"], group["weight_decay"], group["lr"]) == (True, 0.9, 5e-4, 0.1)
    assert make_optimizer(OptimizerSpec(name="sgd"), params).param_groups[0]["nesterov"] is False


# --- through the CLI ------------------------------------------------------------------------------------

RECIPE = '''augment = ["flip", "crop(2)", "translate(1)", "cutout(6)"]
schedule = "cosine"
warmup = 0.25
label_smoothing = 0.1
normalize = "channel"
'''


def _recipe_study(path: Path, epochs: int, seeds, optimizer: str = "adam") -> Path:
    write_tiny_study(path, epochs=epochs, seeds=seeds)
    text = path.read_text().replace('optimizer = "adam"\n', f"optimizer = {optimizer}\n" + RECIPE)
    path.write_text(text)
    return path


def test_kill_9_and_resume_with_augmentation_and_a_schedule_is_bit_identical(tiny_mnist, one_thread, tmp_path):
    study = _recipe_study(tmp_path / "tiny.toml", epochs=3, seeds=[0],
                          optimizer='{name = "sgd", lr = 0.05, momentum = 0.9, nesterov = true}')
    run_here(study, tmp_path / "ref", tiny_mnist)
    out = tmp_path / "out"

    def one_epoch_done() -> bool:
        return any(out.glob("trials/*/seed-*/checkpoint.safetensors"))

    kill_when(start_run(study, out, tiny_mnist), one_epoch_done)
    run_here(study, out, tiny_mnist)
    want = epoch_metrics(tmp_path / "ref" / "study.db")
    assert len(want) == 2 * 3
    assert epoch_metrics(out / "study.db") == want
    assert trial_results(out / "study.db") == trial_results(tmp_path / "ref" / "study.db")
    assert all(state == "complete" for state, _, _ in trial_results(out / "study.db").values())


BAD = {
    "unknown_augment": ('augment = ["blur(3)"]', 'unknown augmentation "blur(3)"'),
    "crop_no_padding": ('augment = ["crop"]', "crop needs its padding"),
    "cutout_too_big": ('augment = ["cutout(999)"]', "cutout needs its square size"),
    "augment_not_a_list": ('augment = "flip"', "augment is a list"),
    "twice": ('augment = ["flip", "flip"]', "flip is listed twice"),
    "unknown_schedule": ('schedule = "linear"', "train.schedule"),
    "negative_warmup": ("warmup = -1", "train.warmup"),
    "warmup_too_long": ("warmup = 50", "warmup of 50 epochs"),
    "smoothing_one": ("label_smoothing = 1.0", "train.label_smoothing"),
    "unknown_normalize": ('normalize = "std"', "train.normalize"),
    "gamma": ('schedule = "step"\nstep_gamma = 2.0', "train.step_gamma"),
    "nesterov_without_momentum": ('optimizer = {name = "sgd", nesterov = true}', "nesterov needs a momentum"),
    "nesterov_not_bool": ('optimizer = {name = "sgd", momentum = 0.9, nesterov = 1.0}', "nesterov: Input should be"),
    "nesterov_on_adam": ('optimizer = {name = "adam", nesterov = true}', 'adam has no argument "nesterov"'),
    "negative_momentum": ('optimizer = {name = "sgd", momentum = -0.5}', "momentum must be in [0, 1)"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_recipe_values_exit_2_with_one_line(case, tmp_path, capsys):
    line, expected = BAD[case]
    study = write_tiny_study(tmp_path / "s.toml")
    text = study.read_text()
    if line.startswith("optimizer"):
        text = text.replace('optimizer = "adam"', line)
    else:
        text = text.replace("[train]\n", "[train]\n" + line + "\n")
    study.write_text(text)
    code = main(["models", str(study)])
    err = capsys.readouterr().err
    assert code == 2, err[-500:]
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err


def test_a_models_train_overrides_take_the_recipe(tmp_path, capsys):
    study = write_tiny_study(tmp_path / "s.toml")
    text = study.read_text().replace('name = "small-b"\n', 'name = "small-b"\ntrain = {augment = ["bogus"]}\n')
    study.write_text(text)
    assert main(["models", str(study)]) == 2
    assert 'model "small-b"' in capsys.readouterr().err
    from convstudy.spec import build_study
    good = build_study({"name": "x", "train": {"schedule": "cosine"},
                        "models": [{"name": "a", "layers": ["conv(4,3)", "flatten", "dense(10)"],
                                    "train": {"augment": ["Flip", "crop( 3 )"], "label_smoothing": 0.1}}]})
    settings = good.models[0].settings(good.train)
    assert (settings.augment, settings.label_smoothing, settings.schedule) == (("flip", "crop(3)"), 0.1, "cosine")
    assert build_study(good.to_dict()) == good


@pytest.mark.parametrize("train, override, expected", [
    ({"epochs": 12, "warmup": 5}, {"epochs": 2}, "warmup of 5 epochs is longer than the 2 epochs"),
    ({"epochs": 4, "schedule": "one-cycle"}, {"warmup": 4}, "one-cycle needs a warmup shorter than the training"),
    ({"epochs": 3, "warmup": 2}, {"schedule": "one-cycle", "epochs": 2}, "one-cycle needs a warmup shorter"),
])
def test_a_models_merged_settings_are_checked_naming_the_model(train, override, expected, tmp_path, capsys):
    """Each part is valid alone ([train] and the override); only the merge breaks a recipe rule."""
    from convstudy.spec import build_study
    from convstudy.errors import UserError

    layers = ["conv(4,3)", "flatten", "dense(10)"]
    ok = {"name": "x", "train": train, "models": [{"name": "a", "layers": layers}]}
    build_study(ok)
    bad = {**ok, "models": [{"name": "a", "layers": layers}, {"name": "short", "layers": layers, "train": override}]}
    with pytest.raises(UserError) as err:
        build_study(bad, source="s.toml")
    message = str(err.value)
    assert message.startswith('s.toml: model "short", ') and expected in message and "\n" not in message
    study = tmp_path / "s.yaml"
    study.write_text(json.dumps(bad))  # JSON is YAML; from a study file the CLI says the same in one line
    assert main(["models", str(study)]) == 2
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1 and 'model "short"' in err_text and expected in err_text


# Issue 25 item 12: keys the chosen schedule never reads were dropped without a word.
IGNORED = {
    "every_with_cosine": ({"schedule": "cosine", "step_every": 2}, {}, 's.yaml: [train]: step_every is for schedule = '
                          '"step", but no model takes it from [train] with that schedule (schedule = "cosine")'),
    "gamma_with_constant": ({"step_gamma": 0.5}, {}, "s.yaml: [train]: step_gamma is for schedule"),
    "every_past_epochs": ({"epochs": 3, "schedule": "step", "step_every": 3}, {},
                          "s.yaml: [train]: step_every = 3 is not below the 3 epochs, so the lr would never step"),
    "model_every_with_one_cycle": ({}, {"schedule": "one-cycle", "step_every": 1},
                                   's.yaml: model "b", train: step_every is for schedule = "step", but the model '
                                   'trains with "one-cycle"'),
    "model_gamma_under_cosine": ({"schedule": "cosine"}, {"step_gamma": 0.5}, 'model "b", train: step_gamma is for'),
    "model_epochs_below_every": ({"schedule": "step", "step_every": 2}, {"epochs": 2},
                                 'model "b", train with [train]: step_every = 2 is not below the 2 epochs'),
}


@pytest.mark.parametrize("case", sorted(IGNORED))
def test_a_schedule_key_the_schedule_ignores_exits_2_naming_where(case, tmp_path, capsys):
    import convstudy

    train, override, expected = IGNORED[case]
    layers = ["conv(4,3)", "flatten", "dense(10)"]
    data = {"name": "x", "train": {"epochs": 6, **train},
            "models": [{"name": "a", "layers": layers}, {"name": "b", "layers": layers, "train": override}]}
    study = tmp_path / "s.yaml"
    study.write_text(json.dumps(data))
    for command in (["models", str(study)], ["run", str(study), "--out", str(tmp_path / "out")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "out").exists()
    from convstudy.errors import UserError
    from convstudy.spec import build_study

    with pytest.raises(UserError, match="step"):  # a Study built in Python is refused by run() the same way
        convstudy.run(build_study(data), out=tmp_path / "out")


def test_schedule_keys_a_model_or_a_space_level_uses_are_accepted(tmp_path, capsys):
    layers = ["conv(4,3)", "flatten", "dense(10)"]
    study = tmp_path / "s.yaml"
    study.write_text(json.dumps({
        "name": "x", "train": {"epochs": 6, "schedule": "cosine", "step_every": 2, "step_gamma": 0.5},
        "models": [{"name": "a", "layers": layers}, {"name": "b", "layers": layers, "train": {"schedule": "step"}}],
        "spaces": [{"name": "s", "factors": {"sched": ["step", "cosine"]}, "layers": layers,
                    "train": {"schedule": "{sched}", "step_every": 3}}]}))
    assert main(["models", str(study)]) == 0, capsys.readouterr().err


def test_a_trial_with_augmentation_and_a_schedule_resumes_exactly(tiny_mnist, tmp_path):
    settings = TrainSettings(epochs=2, batch_size=32, optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9},
                             augment=["flip", "translate(2)", "cutout(6)"], schedule="one-cycle", warmup=0.3,
                             label_smoothing=0.1, normalize="channel")
    data = _data(tiny_mnist, settings)
    whole = _events(settings, data, tmp_path / "whole")
    events = run_trial(_job(settings), data, CheckpointStorage(str(tmp_path / "cut")))
    done = next(e for e in events if isinstance(e, EpochDone))
    events.close()  # after the first epoch
    resumed = _events(settings, data, tmp_path / "cut")

    def results(evs):
        return ([(e.job.seed, e.result.epoch, e.result.loss, e.result.val_loss, e.result.val_accuracy)
                 for e in evs if isinstance(e, EpochDone)],
                {e.job.seed: (e.test_loss, e.test_accuracy, e.weights) for e in evs if isinstance(e, Finished)})

    want_epochs, want_done = results(whole)
    got_epochs, got_done = results(resumed)
    assert done.result.epoch == 1 and got_epochs == [r for r in want_epochs if r[1] == 2]
    for seed, (loss, acc, weights) in want_done.items():
        assert got_done[seed][:2] == (loss, acc)
        assert all(torch.equal(weights[k], got_done[seed][2][k]) for k in weights)
