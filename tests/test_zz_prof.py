import subprocess, sys, time
from test_fair import FAIR_STUDY
def test_prof(tiny_mnist, tmp_path):
    study = tmp_path / "fair.toml"; study.write_text(FAIR_STUDY)
    t=time.time()
    r = subprocess.run([sys.executable, "-m", "cProfile", "-o", "/tmp/prof/fair.prof", "-m", "convstudy", "run", str(study), "--out", str(tmp_path/"ref"), "--data-dir", str(tiny_mnist.dir), "--quiet"], env=tiny_mnist.env, capture_output=True, text=True)
    print("WALL", time.time()-t, r.returncode, r.stderr[-2000:])
