"""Whether a change keeps the numbers: epoch rows, test results, weights and predictions, bit for bit.

    python bench/same_numbers.py OUT_A OUT_B                  # compare two study directories
    python bench/same_numbers.py record REF.json [--data-dir D]  # run the reference studies, save their digests
    python bench/same_numbers.py check REF.json [--data-dir D]   # run them again, compare with REF.json

The reference studies (issue 27, acceptance 1), each on the CPU with one thread per trial on the real
MNIST copy: two seed models x two seeds x two epochs; a 3-model space raced over seeds 2..3; a
3-configuration TPE search with successive halving. Bits hold only on the kind of CPU that recorded them
(`auto` trains in bf16 where the CPU runs it natively, else fp32, and oneDNN's kernels differ by ISA), so
the reference names its CPU and a check on another kind says so.
"""
from __future__ import annotations

import argparse, hashlib, json, os, sqlite3, subprocess, sys, tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = ("SELECT t.model, t.seed, e.epoch, e.loss, e.accuracy, e.val_loss, e.val_accuracy "
          "FROM epochs e JOIN trials t ON t.id=e.trial_id ORDER BY 1,2,3")
TESTS = "SELECT model, seed, state, test_loss, test_accuracy FROM trials ORDER BY 1,2"
SEARCH = """name = "same-numbers-search"
dataset = "mnist"
seeds = 1

[train]
epochs = 2
batch_size = 128
validation = "holdout"

[search]
sampler = "tpe"
trials = 3
pruner = "successive-halving"
seed = 0

[search.space]
name = "cnn"
layers = ["conv({filters},{kernel},same)", "pool(2)", "flatten", "dense(10)"]
train = {optimizer = {name = "adam", lr = "{lr}"}}

[search.space.factors]
kernel = [3, 5]
filters = {low = 4, high = 8, step = 4}
lr = {low = 1e-3, high = 1e-2, log = true}
"""
# name -> (study argument, extra flags); every run adds --device cpu, --data-dir and --out.
STUDIES = {
    "study": ("seed", ["--models", "k3-2,k3-4", "--seeds", "2", "--epochs", "2", "--train-limit", "3000"]),
    "racing": (str(ROOT / "examples/space.toml"),
               ["--where", "filters=16", "--where", "bn=on", "--seeds", "2..3", "--epochs", "1", "--train-limit", "2000"]),
    "search": ("{search}", ["--train-limit", "2000"]),
}


def rows(out: Path, query: str) -> list[tuple]:
    with sqlite3.connect(out / "study.db") as db:
        return db.execute(query).fetchall()


def tensor_digest(path: Path) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (the file's metadata may hold times)."""
    h = hashlib.sha256()
    for name, t in sorted(load_file(path).items()):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def digests(out: Path) -> dict:
    """One study directory's numbers as digests: rows (repr of every float) and each tensor file."""
    sha = lambda x: hashlib.sha256(repr(x).encode()).hexdigest()
    ep, te = rows(out, EPOCHS), rows(out, TESTS)
    return {"epoch_rows": len(ep), "epochs": sha(ep), "trials": len(te), "tests": sha(te),
            "tensors": {str(f.relative_to(out)): tensor_digest(f) for f in sorted(out.glob("trials/*/seed-*/*.safetensors"))}}


def cpu_kind() -> dict:
    """What decides the bits on this CPU: its model, the ISA the kernels use, and whether bf16 is native."""
    from conv_fp32 import machine  # bench/conv_fp32.py: the CPU as every bench result names it

    from convstudy.train.device import cpu_has_native_bf16

    m = machine()
    return {"cpu": m["cpu"], "aten_isa": m["aten_isa"], "isa_cap": m["isa_cap"], "native_bf16": cpu_has_native_bf16()}


def run_all(data_dir: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        search = Path(tmp) / "search.toml"
        search.write_text(SEARCH)
        for name, (study, flags) in STUDIES.items():
            out = Path(tmp) / name
            cmd = [sys.executable, "-m", "convstudy", "run", study.format(search=search), *flags, "--device", "cpu",
                   "--data-dir", data_dir, "--out", str(out), "--quiet"]
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
            result[name] = digests(out)
    return result


def compare_dirs(a: Path, b: Path) -> bool:
    ok = True
    for q in (EPOCHS, TESTS):
        ra, rb = rows(a, q), rows(b, q)
        print("rows identical:", ra == rb, len(ra))
        ok &= ra == rb
        for x, y in zip(ra, rb):
            if x != y:
                print(" ", x, "\n ", y)
    for f in sorted(a.glob("trials/*/seed-*/*.safetensors")):
        g = b / f.relative_to(a)
        same = g.exists() and tensor_digest(f) == tensor_digest(g)
        ok &= same
        print(f.relative_to(a), "identical" if same else "DIFFERENT")
    return ok


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] not in ("record", "check"):
        ok = compare_dirs(Path(sys.argv[1]), Path(sys.argv[2]))
        print("ALL IDENTICAL" if ok else "DIFFERENT")
        return 0 if ok else 1
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["record", "check"])
    p.add_argument("ref", type=Path)
    p.add_argument("--data-dir", default="/work/shared/data/mnist")
    a = p.parse_args()
    got = run_all(a.data_dir)
    if a.mode == "record":
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        a.ref.write_text(json.dumps({"commit": commit, "torch": torch.__version__, "cpu": cpu_kind(), "studies": got},
                                    indent=1) + "\n")
        print(f"recorded {a.ref} at {commit}")
        return 0
    ref, here = json.loads(a.ref.read_text()), cpu_kind()
    want, ok = ref["studies"], True
    if ref.get("cpu") != here:
        print(f"note: the reference was recorded on {ref.get('cpu', 'an unnamed CPU')}, this is {here}: "
              "bits are compared, but only a reference from this kind of CPU is expected to match")
    for name in want:
        for key in ("epoch_rows", "epochs", "trials", "tests", "tensors"):
            if want[name][key] != got[name][key]:
                ok = False
                print(f"{name}: {key} DIFFERENT")
        print(f"{name}: {got[name]['epoch_rows']} epoch rows, {got[name]['trials']} trials, "
              f"{len(got[name]['tensors'])} tensor files")
    print("BIT-IDENTICAL TO THE REFERENCE" if ok else "DIFFERENT FROM THE REFERENCE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
