"""Whether two study directories hold the same numbers: epoch rows, test results, weights and predictions, bit for bit.

    python bench/same_numbers.py OUT_A OUT_B
"""
import sqlite3, sys
from pathlib import Path
import torch
from safetensors.torch import load_file
a, b = map(Path, sys.argv[1:3])
q1 = "SELECT t.model, t.seed, e.epoch, e.loss, e.accuracy, e.val_loss, e.val_accuracy FROM epochs e JOIN trials t ON t.id=e.trial_id ORDER BY 1,2,3"
q2 = "SELECT model, seed, state, test_loss, test_accuracy FROM trials ORDER BY 1,2"
for q in (q1, q2):
    ra = sqlite3.connect(a / "study.db").execute(q).fetchall(); rb = sqlite3.connect(b / "study.db").execute(q).fetchall()
    print("rows identical:", ra == rb, len(ra))
    if ra != rb:
        for x, y in zip(ra, rb):
            if x != y: print(" ", x, "\n ", y)
ok = True
for f in sorted(a.glob("trials/*/seed-*/*.safetensors")):
    g = b / f.relative_to(a)
    ta, tb = load_file(f), load_file(g)
    same = ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    ok &= same
    print(f.relative_to(a), "identical" if same else "DIFFERENT")
print("ALL TENSORS IDENTICAL" if ok else "TENSORS DIFFER")
