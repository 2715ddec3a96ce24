"""A Ray cluster of separate nodes on this host loses a worker node mid-trial; the study must still match a local run.

Starts a head and N worker nodes with `ray start` (each its own process tree and --temp-dir), runs
`convstudy run --executor ray --address HEAD` on real MNIST with checkpoints in a shared --storage
directory, watches study.db until a trial is running on a worker node with an epoch done, SIGKILLs
that whole node (its `ray start`, raylet, agents and workers), waits for the study to end, runs the
same study with the local executor and one torch thread, and compares epoch rows, test results,
digests and the weights/predictions files bit for bit. Writes bench/results/ray_multinode.json.

    nice python bench/ray_multinode.py [--train-limit 10000] [--epochs 3] [--workers 2] [--keep]

Every Ray process it started is killed on the way out, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

STUDY = """\
name = "multinode"
description = "Two small CNNs for the multi-node Ray benchmark."
dataset = "mnist"
seeds = 2

[train]
epochs = {epochs}
batch_size = 32
optimizer = "adam"
validation = "holdout"

[[models]]
name = "c24"
layers = ["conv(24,3)", "pool(2)", "conv(48,3)", "pool(2)", "flatten", "dense(10)"]

[[models]]
name = "c32"
layers = ["conv(32,3)", "pool(2)", "conv(64,3)", "pool(2)", "flatten", "dense(10)"]
"""
RAY = str(Path(sys.executable).parent / "ray")
RESULTS = Path(__file__).resolve().parent / "results" / "ray_multinode.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """One `ray start --block` in its own session: its process tree is the node."""

    def __init__(self, name: str, root: Path, args: list[str]) -> None:
        self.name, self.temp = name, root / name
        self.log = open(root / f"{name}.log", "w")
        self.proc = subprocess.Popen([RAY, "start", "--block", "--temp-dir", str(self.temp),
                                      "--object-store-memory", str(150 * 2**20),
                                      "--dashboard-agent-listen-port", str(free_port()), *args],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        # Every process ever found in the tree (workers outlive a killed raylet); psutil's Process knows its
        # start time, so a pid reused by someone else's process is never signalled.
        self.seen: dict[int, psutil.Process] = {}

    def tree(self) -> list[psutil.Process]:
        if self.proc.poll() is not None:  # reaped: its pid may be someone else's now
            return []
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        self.seen.update((p.pid, p) for p in procs if p.pid not in self.seen)
        return procs

    def node_id(self) -> str | None:
        for p in self.tree():
            try:
                if m := re.search(r"--node_id=(\w+)", " ".join(p.cmdline())):
                    return m.group(1)
            except psutil.NoSuchProcess:
                pass
        return None

    def kill(self, sig: int = signal.SIGKILL) -> list[int]:
        """Send `sig` to every process of the node at once (snapshot first: a dead raylet orphans its workers)."""
        procs = self.tree()
        for p in procs:
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        return [p.pid for p in procs]

    def stop(self) -> None:
        self.kill(signal.SIGTERM)  # `ray start --block` stops its children on SIGTERM
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        for _ in range(3):
            self.kill(signal.SIGKILL)
            for p in self.seen.values():
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            time.sleep(0.5)
        self.proc.poll()
        self.log.close()

    def alive(self) -> list[int]:
        out = []
        for p in self.seen.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p.pid)
            except psutil.NoSuchProcess:
                pass
        return out


def interrupted(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def rows(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def cluster_nodes(address: str, want: int, timeout: float = 120) -> list[dict]:
    """ray.nodes() from a throwaway driver, once `want` nodes are alive."""
    code = ("import json, logging, ray; ray.init(address=%r, logging_level=logging.ERROR); "
            "print(json.dumps([{k: n[k] for k in ('NodeID', 'Alive', 'RayletSocketName', 'Resources')} "
            "for n in ray.nodes()]))" % address)
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        nodes = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else []
        if sum(n["Alive"] for n in nodes) >= want or time.monotonic() > deadline:
            return nodes
        time.sleep(2)


def holds_queue(node: Node) -> bool:
    """Whether convstudy's event queue actor (ray.util.queue) lives on this node."""
    for p in node.tree():
        try:
            if "_QueueActor" in " ".join(p.cmdline()):
                return True
        except psutil.NoSuchProcess:
            pass
    return False


def watch_and_kill(db: Path, driver: subprocess.Popen, nodes: list[Node], epochs: int,
                   timeout: float) -> dict | None:
    """Wait for a running trial with 1..epochs-1 epochs done on a worker node; SIGKILL that node.

    When a worker node holds the driver's event queue, that node is the one killed: the worst case.
    """
    sql = ("SELECT t.id, t.model, t.seed, (SELECT COUNT(*) FROM epochs e WHERE e.trial_id = t.id), "
           "(SELECT detail FROM events v WHERE v.kind = 'worker' AND v.trial_id = t.id ORDER BY v.id DESC LIMIT 1) "
           "FROM trials t WHERE t.state = 'running'")
    workers = nodes[1:]
    deadline = time.monotonic() + timeout
    while driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            running = rows(db, sql) if db.exists() else []
        except sqlite3.Error:  # the schema is not there yet
            continue
        queue_nodes = [n for n in workers if holds_queue(n)]
        found = []
        for tid, model, seed, done, worker in running:
            if not worker or not 1 <= done < epochs:
                continue
            pid = int(re.match(r"[^,]*:(\d+),", worker).group(1))
            node = next((n for n in workers if pid in {p.pid for p in n.tree()}), None)
            if node is not None and (node in queue_nodes or not queue_nodes):  # not on the head node
                found.append((tid, model, seed, done, pid, node))
        if not found:
            continue
        tid, model, seed, done, pid, node = found[0]
        node_id, queue = node.node_id(), node in queue_nodes
        queue_on = [n.name for n in nodes if holds_queue(n)]
        killed = node.kill(signal.SIGKILL)
        return {"trial_id": tid, "model": model, "seed": seed, "epochs_done_at_kill": done, "worker_pid": pid,
                "node": node.name, "node_id": node_id, "node_held_event_queue": queue,
                "event_queue_on": queue_on, "pids_killed": len(killed),
                "at": time.strftime("%H:%M:%S")}
    return None


def run_cli(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-m", "convstudy", "run", *args], env=env, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compare(a: Path, b: Path) -> dict:
    """What differs between two study directories: epoch rows, trial results and digests, result files."""
    # Not the checkpoint digests: a checkpoint holds each epoch's wall time, so they differ between any two runs.
    epochs = ("SELECT t.model, t.seed, e.epoch, e.loss, e.accuracy, e.val_loss, e.val_accuracy "
              "FROM epochs e JOIN trials t ON t.id = e.trial_id ORDER BY 1, 2, 3")
    trials = ("SELECT model, seed, state, test_loss, test_accuracy, weights_digest, predictions_digest "
              "FROM trials ORDER BY 1, 2")
    ea, eb = rows(a / "study.db", epochs), rows(b / "study.db", epochs)
    ta, tb = rows(a / "study.db", trials), rows(b / "study.db", trials)
    files = sorted(p.relative_to(a) for p in a.glob("trials/*/seed-*/*.safetensors"))
    other = sorted(p.relative_to(b) for p in b.glob("trials/*/seed-*/*.safetensors"))
    differ = [str(f) for f in files if f not in other or sha256(a / f) != sha256(b / f)]
    return {"epoch_rows": len(ea), "epoch_rows_identical": ea == eb, "trial_rows_identical": ta == tb,
            "files_compared": len(files), "files_identical": files == other and not differ, "files_differing": differ,
            "weights_digests": {f"{m} seed {s}": w for m, s, _, _, _, w, _ in ta}}


def victim_story(db: Path, tid: int) -> dict:
    """What study.db says happened to the killed trial."""
    [(state, attempts, error)] = rows(db, f"SELECT state, attempts, error FROM trials WHERE id = {tid}")
    events = rows(db, f"SELECT kind, detail FROM events WHERE trial_id = {tid} ORDER BY id")
    resumed = [int(m.group(1)) for k, d in events if k == "worker" and (m := re.search(r"resuming after epoch (\d+)", d or ""))]
    return {"state": state, "attempts": attempts, "error": error, "restarts": sum(k == "restart" for k, _ in events),
            "worker_events": [d for k, d in events if k == "worker"], "resumed_after_epoch": resumed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="/work/shared/data/mnist")
    ap.add_argument("--train-limit", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="worker nodes, one CPU each")
    ap.add_argument("--head-cpus", type=int, default=1, help="CPUs the head node offers to trials")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds the Ray study may take")
    ap.add_argument("--output", type=Path, default=RESULTS, help=f"the JSON summary (default: {RESULTS})")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (kept anyway on failure)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rmn-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    study = root / "multinode.toml"
    study.write_text(STUDY.format(epochs=args.epochs))
    # No token auth: a token another Ray on this host left in ~/.ray turns it on for the head only, and the
    # worker nodes then fail to join; this cluster listens on this host alone.
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")  # for every node and driver
    env = dict(os.environ)
    common = [str(study), "--data-dir", args.data_dir, "--train-limit", str(args.train_limit), "--device", "cpu",
              "--quiet"]
    summary: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                     "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "load_before": os.getloadavg()},
                     "versions": versions(), "setup": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()} | {"models": ["c24", "c32"], "seeds": 2}}
    nodes: list[Node] = []
    driver = None
    old_term = signal.signal(signal.SIGTERM, interrupted)
    try:
        port = free_port()
        address = f"127.0.0.1:{port}"
        nodes.append(Node("head", root, ["--head", "--port", str(port), "--num-cpus", str(args.head_cpus),
                                          "--include-dashboard", "false", "--dashboard-port", str(free_port()),
                                          "--ray-client-server-port", str(free_port())]))
        cluster_nodes(address, 1)  # a worker node started before the head's GCS answers fails to join
        for i in range(args.workers):
            nodes.append(Node(f"worker{i + 1}", root, ["--address", address, "--num-cpus", "1"]))
        listed = cluster_nodes(address, 1 + args.workers)
        summary["nodes"] = {n.name: n.node_id() for n in nodes}
        summary["cluster_cpus"] = sum(n["Resources"].get("CPU", 0) for n in listed if n["Alive"])
        if sum(n["Alive"] for n in listed) < 1 + args.workers:
            raise RuntimeError(f"only {sum(n['Alive'] for n in listed)} Ray nodes came up; see {root}/*.log")

        t0 = time.monotonic()
        driver = run_cli([*common, "--executor", "ray", "--address", address, "--cpus-per-trial", "1",
                          "--out", str(root / "ray"), "--storage", str(root / "shared-ckpt")], env, root / "ray.log")
        kill = watch_and_kill(root / "ray" / "study.db", driver, nodes, args.epochs, args.timeout)
        summary["kill"] = kill
        while (rc := driver.poll()) is None and time.monotonic() - t0 < args.timeout:
            for node in nodes:  # note each node's worker pids, to tell where the lost trial resumed
                node.tree()
            time.sleep(0.5)
        # rc None: the driver hung; counted as a failure below, killed in `finally`
        log = (root / "ray.log").read_text(errors="replace")
        summary["ray_run"] = {"rc": rc, "seconds": round(time.monotonic() - t0, 1), "traceback": "Traceback" in log,
                              "log_tail": log.splitlines()[-12:]}
        ray_db = root / "ray" / "study.db"
        summary["ray_run"]["trials"] = [dict(zip(("model", "seed", "state", "attempts"), r)) for r in
                                        rows(ray_db, "SELECT model, seed, state, attempts FROM trials ORDER BY id")]
        if kill:
            summary["victim"] = victim_story(ray_db, kill["trial_id"])
            resumed_on = [next((n.name for n in nodes if int(w.split(",")[0].rsplit(":", 1)[1]) in n.seen), "?")
                          for w in summary["victim"]["worker_events"]]
            summary["victim"]["nodes"] = resumed_on
    except KeyboardInterrupt:
        summary["error"] = "interrupted"
    except Exception as exc:
        summary["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if driver is not None and driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        for node in reversed(nodes):
            node.stop()
        summary["ray_processes_left"] = sorted(pid for n in nodes for pid in n.alive())
        signal.signal(signal.SIGTERM, old_term)

    if "error" not in summary:
        t0 = time.monotonic()
        local = run_cli([*common, "--executor", "local", "--out", str(root / "local")],
                        {**env, "OMP_NUM_THREADS": "1"}, root / "local.log")
        summary["local_run"] = {"rc": local.wait(), "seconds": round(time.monotonic() - t0, 1)}
        summary["comparison"] = compare(root / "ray", root / "local")
    summary["machine"]["load_after"] = os.getloadavg()
    summary["checks"] = checks(summary, args.epochs)
    summary["ok"] = all(summary["checks"].values())
    keep = args.keep or not summary["ok"]  # a failure keeps its logs and study directories to look at
    summary["workdir"] = str(root) if keep else None
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


def checks(s: dict, epochs: int) -> dict[str, bool]:
    """The acceptance points, each True or False."""
    kill, victim, ray_run, cmp = s.get("kill"), s.get("victim", {}), s.get("ray_run", {}), s.get("comparison", {})
    resumed = victim.get("resumed_after_epoch", [])
    return {
        "no_error": "error" not in s,
        "killed_mid_trial": bool(kill) and 1 <= kill["epochs_done_at_kill"] < epochs,
        "event_queue_on_driver_node": bool(kill) and kill["event_queue_on"] == ["head"],
        "ray_study_exited_0": ray_run.get("rc") == 0,
        "every_trial_complete": bool(ray_run.get("trials")) and all(t["state"] == "complete" for t in ray_run["trials"]),
        "victim_retried_once": victim.get("attempts") == 2 and victim.get("restarts") == 1,
        "victim_resumed_from_checkpoint": bool(resumed) and resumed[-1] >= 1,
        "victim_resumed_on_another_node": bool(kill) and victim.get("nodes", [None])[-1] not in (None, "?", kill["node"]),
        "no_traceback": ray_run.get("traceback") is False,
        "local_exited_0": s.get("local_run", {}).get("rc") == 0,
        "epoch_rows_identical": cmp.get("epoch_rows_identical") is True,
        "trial_rows_identical": cmp.get("trial_rows_identical") is True,
        "files_identical": cmp.get("files_identical") is True and cmp.get("files_compared", 0) > 0,
        "no_ray_process_left": not s.get("ray_processes_left"),
    }


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def versions() -> dict[str, str]:
    import ray
    import torch

    import convstudy

    return {"python": platform.python_version(), "ray": ray.__version__, "torch": torch.__version__,
            "convstudy": convstudy.__version__}


if __name__ == "__main__":
    sys.exit(main())
