"""Recovery from a killed worker: cairn (`cairn run` restarting the group, the workers
resuming from their in-memory checkpoints) against PyTorch DDP over Gloo restarting from a
torch.save checkpoint, same model, batch and kill, in one invocation; then the goodput of a
long cairn run with a worker killed every --kill-every seconds.

  /usr/bin/python3 bench/recovery.py --cairn build/bin/cairn --data data/kjv [--duration 600 --kill-every 60]

Both sides train a GPT-2 (4 layers, d=256, vocab 50304, sequences of 128, global batch 8 in
micro-batches of 4) on 2 processes with --threads threads each (default: the cores divided by
the processes): OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = --threads for every worker of both
sides, cairn's also train.threads, the peer's --threads (torch.set_num_threads and
openblas_set_num_threads). The peer runs with cairn's allocator settings
(MALLOC_MMAP_THRESHOLD_=1073741824, MALLOC_TRIM_THRESHOLD_=2147483648; --peer-malloc glibc for
glibc's defaults). cairn runs under `cairn run --max-restarts` with
`cairn train --resume-or-start` and an in-memory checkpoint every step
(ckpt.memory_interval=1). The peer (bench/peer_recovery.py) saves model + optimizer state
with torch.save (fsynced) every --peer-save-every steps; this script supervises it as torchrun's
agent would: it hosts the job's TCPStore in its own process (the workers connect to it as
clients, TORCHELASTIC_USE_AGENT_STORE=True, a key prefix per restart), polls the workers every
0.1 s, and when one dies it stops the other (SIGTERM) and starts both again. Each side's GEMM
peak is measured inside its workers on their first start.

Recovery: a worker (rank 0, then rank 1, alternately) is killed with SIGKILL halfway through a
step, --warm-steps steps after the (re)start; recovery is the wall time from the kill to the
end of the first step completed after the restart (so it includes that step). The phases come
from events.jsonl, the workers' log lines and the peer's own log. Steps lost: last step
completed before the restart minus the step resumed from. For cairn, how many restarts
started every worker from a warm standby (`from_standby` of `workers_started`).

Goodput: productive time over wall time (launch of `cairn run` to the SIGTERM that ends the
run; exit code 143 is expected), two ways. As logged: each step of the final trajectory counted
once, by its own step_time (which includes the checkpoint's pause and whatever the background
copy slowed it by). Against a run without checkpoints: each step of the final trajectory counted
once at the mean step_time of short runs of the same job with no checkpoints (--reference-steps
steps, run just before and just after, and averaged: the machine is shared and its speed drifts;
both are printed and a drift over 10% is flagged), so that time lost to saving counts as lost. Every other
second is downtime, attributed to startup, the phases of each recovery, work lost (the step in
progress at a kill and steps recomputed after a rollback), time between steps (outside
step_time) and the step in progress at the SIGTERM.

--hogs N starts N busy-looping processes at the workers' priority while either side's kills are
timed: recovery on a loaded machine (the steady-state and goodput runs are not loaded).

--duration 0 skips the goodput run. Targets (printed, not asserted): recovery within 2 s and
at least 2x faster than the peer; goodput at least 95%.
"""
import argparse
import datetime
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib  # noqa: E402

POLL_S = 0.1  # the peer's supervisor, like cairn run's --monitor-interval default
GRACE_S = 10.0  # SIGTERM to SIGKILL for the peer's survivors, like cairn run's --grace-period


# ---------------------------------------------------------------- small helpers

def loadavg():
    """The 1-minute load average: the machine is shared, and 2 cores are all there is."""
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


read_jsonl = benchlib.read_jsonl


def wait_until(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def rank_of(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for kv in f.read().split(b"\0"):
                if kv.startswith(b"RANK="):
                    return int(kv[5:])
    except OSError:
        pass
    return None


def children(pid):
    r = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=10)
    return [int(p) for p in r.stdout.split()]


def kill_group(proc):
    """SIGKILL a process started with start_new_session=True and everything in its group."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def flash_slot_names(run_dir, world):
    """cairn's shared-memory segment names for a run directory (FNV-1a of its absolute path)."""
    h = 1469598103934665603
    for c in os.path.abspath(run_dir).rstrip("/").encode():
        h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return [f"/dev/shm/cairn-{h & 0xFFFFFFFFFFFF:012x}-r{r}-{i}" for r in range(world) for i in (0, 1)]


def log_line_time(line):
    """Unix time of a cairn log line ('YYYY-mm-dd HH:MM:SS.mmm level ...', local time)."""
    try:
        return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
    except ValueError:
        return None


# ---------------------------------------------------------------- the two jobs

class CairnJob:
    """`cairn run` with `cairn train --resume-or-start` and an in-memory checkpoint every step."""

    def __init__(self, a, tmp, name, max_restarts, memory_interval=1, max_steps=1_000_000):
        self.a, self.world = a, a.world
        self.run = os.path.join(tmp, name)
        self.cfg = os.path.join(tmp, name + ".yaml")
        with open(self.cfg, "w") as f:
            f.write(f"""model: {{arch: gpt2, n_layer: {a.n_layer}, n_head: 4, n_embd: {a.n_embd},
        vocab_size: 50304, block_size: {a.seq_len}}}
train: {{micro_batch_size: {a.micro_batch}, global_batch_size: {a.batch}, seq_len: {a.seq_len},
        max_steps: {max_steps}, eval_interval: 0, eval_batches: 1, warmup_steps: 10,
        log_interval: 1000000, threads: {a.threads}}}
ckpt: {{memory_interval: {memory_interval}}}
data: {{path: {os.path.abspath(a.data)}}}
""")
        self.cmd = [a.cairn, "run", "--nproc-per-node", str(self.world), "--max-restarts",
                    str(max_restarts), "--run-dir", self.run, "--",
                    a.cairn, "train", self.cfg, "--resume-or-start", "--no-progress"]
        self.proc = None
        self.out = None

    def env(self):
        return benchlib.side_env(self.a.threads)

    def start(self):
        env = self.env()
        self.out = open(self.run + ".out", "w")
        self.launched = time.time()
        self.proc = subprocess.Popen(self.cmd, env=env, stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def rows(self):
        return read_jsonl(os.path.join(self.run, "metrics.jsonl"))

    def events(self):
        return read_jsonl(os.path.join(self.run, "events.jsonl"))

    def worker_pid(self, rank):
        if self.proc.poll() is not None:
            raise RuntimeError(f"cairn run exited early ({self.proc.returncode}); see {self.run}.out")
        # The agent names each round's pids (a worker activated from a standby keeps the
        # standby's /proc/PID/environ, which has no RANK).
        started = [e for e in self.events() if e.get("event") == "workers_started"]
        live = children(self.proc.pid)
        if started and "pids" in started[-1]:
            pid = started[-1]["pids"].get(str(rank))
            return pid if pid in live else None
        for pid in live:
            if rank_of(pid) == rank:
                return pid
        return None

    def stop(self, timeout=120):
        """SIGTERM to `cairn run` (it forwards it; the workers checkpoint and exit)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            raise RuntimeError(f"cairn run did not stop within {timeout} s of SIGTERM")

    def cleanup(self):
        for pid in children(self.proc.pid) if self.proc and self.proc.poll() is None else []:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        kill_group(self.proc)
        if self.out:
            self.out.close()
        for seg in flash_slot_names(self.run, self.world):
            if os.path.exists(seg):
                os.remove(seg)

    def worker_log_times(self, rank=0):
        """(time, message) of the timestamped lines of a worker's log, every round."""
        out = []
        path = os.path.join(self.run, "logs", f"worker-{rank}.log")
        if os.path.exists(path):
            for line in open(path, errors="replace"):
                t = log_line_time(line)
                if t is not None:
                    out.append((t, line[24:].strip()))
        return out


class PeerJob:
    """bench/peer_recovery.py on `world` processes, supervised here as torchrun would."""

    def __init__(self, a, tmp, name, save_every, max_steps=1_000_000):
        self.a, self.world = a, a.world
        self.ckpt = os.path.join(tmp, name + ".pt")
        self.log = os.path.join(tmp, name + ".jsonl")
        self.cmd = [a.python, os.path.join(HERE, "peer_recovery.py"), "--n-layer", str(a.n_layer),
                    "--n-embd", str(a.n_embd), "--seq-len", str(a.seq_len), "--batch", str(a.batch),
                    "--max-steps", str(max_steps), "--save-every", str(save_every),
                    "--ckpt", self.ckpt, "--log", self.log, "--threads", str(a.threads)]
        self.tmp, self.name = tmp, name
        self.store = None  # the job's TCPStore, hosted here as torchrun's agent hosts it
        self.procs = []
        self.sup_events = []  # the supervisor's own: worker_failed, restart, workers_started
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = None
        self.error = None
        self.round = 0

    def env(self):
        return benchlib.side_env(self.a.threads,
                                 benchlib.CAIRN_TUNING_ENV if self.a.peer_malloc == "cairn" else None)

    def _spawn(self):
        procs = []
        for rank in range(self.world):
            env = dict(self.env(), WORLD_SIZE=str(self.world), RANK=str(rank), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(self.store.port), TORCHELASTIC_USE_AGENT_STORE="True",
                       TORCHELASTIC_RESTART_COUNT=str(self.round))
            out = open(os.path.join(self.tmp, f"{self.name}-r{rank}.out"), "a")
            procs.append(subprocess.Popen(self.cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True))
            out.close()
        with self.lock:
            self.procs = procs
        self.sup_events.append({"event": "workers_started", "round": self.round, "time": time.time()})

    def _stop_all(self, sig):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.time() + GRACE_S
        for p in self.procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                kill_group(p)

    def _supervise(self):
        try:
            self._spawn()
            while not self.stopping.is_set():
                time.sleep(POLL_S)
                codes = [p.poll() for p in self.procs]
                if all(c == 0 for c in codes):
                    return
                failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
                if not failed:
                    continue
                self.sup_events.append({"event": "worker_failed", "rank": failed[0][0],
                                        "code": failed[0][1], "time": time.time()})
                self._stop_all(signal.SIGTERM)
                self.round += 1
                self.sup_events.append({"event": "restart", "count": self.round, "time": time.time()})
                if not self.stopping.is_set():
                    self._spawn()
        except Exception as e:  # reported by the main thread
            self.error = e

    def start(self):
        import datetime as dt
        import torch.distributed as dist  # the driver runs on python3-torch, as the peer does
        self.store = dist.TCPStore("127.0.0.1", 0, None, True, dt.timedelta(seconds=300),
                                   wait_for_workers=False)
        self.launched = time.time()
        self.thread = threading.Thread(target=self._supervise, daemon=True)
        self.thread.start()

    def rows(self):
        return [r for r in read_jsonl(self.log) if "step_time" in r]

    def settings(self):
        return next((e for e in read_jsonl(self.log) if e.get("event") == "settings"), {})

    def events(self):
        return sorted([r for r in read_jsonl(self.log) if "event" in r] + list(self.sup_events),
                      key=lambda e: e["time"])

    def worker_pid(self, rank):
        if self.error:
            raise RuntimeError(f"peer supervisor failed: {self.error}")
        with self.lock:
            p = self.procs[rank] if rank < len(self.procs) else None
        return p.pid if p is not None and p.poll() is None else None

    def stop(self, timeout=60):
        self.stopping.set()
        if self.thread:
            self.thread.join(timeout=timeout)
        self._stop_all(signal.SIGTERM)

    def cleanup(self):
        self.stopping.set()
        for p in self.procs:
            kill_group(p)
        if self.thread:
            self.thread.join(timeout=GRACE_S + 5)
        for p in self.procs:
            kill_group(p)
        self.store = None  # closes the store's server


# ---------------------------------------------------------------- kills and recoveries

def kill_worker(job, rank, timeout=120):
    """SIGKILL the worker of `rank`; returns the unix time of the kill."""
    pid = wait_until(lambda: job.worker_pid(rank), timeout, f"the worker of rank {rank}")
    t = time.time()
    os.kill(pid, signal.SIGKILL)
    return t


def rows_since(job, since):
    return [x for x in job.rows() if x["time"] > since]


def kill_cycles(job, a, timeout):
    """a.kills kills, each halfway through a step a.warm_steps steps after the (re)start.
    Returns [(kill time, rank, last step completed before the kill)]."""
    kills = []
    since = 0.0
    for k in range(a.kills):
        rows = wait_until(lambda: (lambda r: r if len(r) >= a.warm_steps else None)(rows_since(job, since)),
                          timeout, f"{a.warm_steps} steps before kill {k + 1}")
        half = statistics.median(x["step_time"] for x in rows) / 2
        # Right after the next step completes, then half a step on.
        n = len(rows_since(job, since))
        wait_until(lambda: len(rows_since(job, since)) > n, timeout, "a step")
        time.sleep(half)
        rank = k % job.world
        t = kill_worker(job, rank)
        last = max(x["step"] for x in job.rows() if x["time"] <= t)
        kills.append((t, rank, last))
        since = t
    wait_until(lambda: len(rows_since(job, since)) >= 2, timeout, "two steps after the last kill")
    return kills


def steady_step(rows, kills, skip=2):
    """Mean wall time per step (end to end of consecutive steps: the step, its checkpoint and
    whatever else runs between steps), leaving out the first `skip` steps after the launch and
    after each kill."""
    starts = [0.0] + [t for t, *_ in kills]
    v = []
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else float("inf")
        ends = [r["time"] for r in rows if s < r["time"] <= e][skip:]
        v += [b - a for a, b in zip(ends, ends[1:])]
    return statistics.mean(v) if v else float("nan")


def first_after(events, name, t, **match):
    for e in events:
        if e["event"] == name and e["time"] >= t and all(e.get(k) == v for k, v in match.items()):
            return e
    return None


def cairn_phases(job, kill_t, end_t):
    """Boundaries (phase ending there, time) of a cairn recovery from the kill at kill_t to the
    first step completed at end_t."""
    ev = [e for e in job.events() if kill_t <= e["time"] <= end_t]
    b = [("kill", kill_t)]
    failed = first_after(ev, "worker_failed", kill_t)
    if failed:
        b.append(("detect the failure (agent polling)", failed["time"]))
    persisted = first_after(ev, "checkpoint_persisted", kill_t, reason="worker_failed")
    if persisted:
        b.append(("stop the other worker (SIGKILL)", persisted["time"] - persisted["duration_ms"] / 1e3))
        b.append(("persist the memory checkpoint (agent)", persisted["time"]))
    restart = first_after(ev, "restart", kill_t)
    if restart:
        b.append(("decide the restart" if persisted else "stop the other worker (SIGKILL)", restart["time"]))
    started = first_after(ev, "workers_started", kill_t)
    if started:
        b.append(("spawn the workers", started["time"]))
        # An activated standby may log before the agent writes workers_started.
        logs = [(t, m) for t, m in job.worker_log_times(0) if started["time"] - 0.2 <= t <= end_t]
        up = next((t for t, m in logs if "run directory" in m), None)
        if up:
            b.append(("activate the standbys (no process start)"
                      if started.get("from_standby") == job.world
                      else "process start (exec, libtorch, config)", up))
        ready = next((t for t, m in logs if "process group ready" in m), None)
        if ready:
            b.append(("form the process group (Gloo)", ready))
    loaded = first_after(ev, "checkpoint_loaded", kill_t)
    if loaded:
        b.append(("build the model and engine", loaded["time"] - loaded["duration_ms"] / 1e3))
        b.append((f"load the checkpoint ({loaded.get('source')})", loaded["time"]))
    start = first_after(ev, "start", kill_t)
    if start:
        b.append(("measure the GEMM peak", start["time"]))
    b.append(("recompute the first step", end_t))
    return b, loaded


def peer_phases(job, kill_t, end_t):
    ev = [e for e in job.events() if kill_t <= e["time"] <= end_t]
    b = [("kill", kill_t)]
    for name, label in (("worker_failed", "detect the failure (supervisor polling)"),
                        ("restart", "stop the other worker (SIGTERM)"),
                        ("workers_started", "spawn the workers"),
                        ("process_start", "start python"),
                        ("imported", "import torch"),
                        ("group_ready", "form the process group (Gloo)")):
        e = first_after(ev, name, kill_t)
        if e:
            b.append((label, e["time"]))
    loaded = first_after(ev, "checkpoint_loaded", kill_t)
    if loaded:
        b.append(("build the model and optimizer", loaded["time"] - loaded["duration_ms"] / 1e3))
        b.append(("torch.load + load_state_dict", loaded["time"]))
    start = first_after(ev, "start", kill_t)
    if start:
        b.append(("wrap in DDP", start["time"]))
    b.append(("recompute the first step", end_t))
    return b, loaded


def durations(bounds):
    """[(label, seconds)] from ordered boundaries; out-of-order ones are merged into the next."""
    out, prev = [], bounds[0][1]
    for label, t in bounds[1:]:
        if t < prev:
            continue
        out.append((label, t - prev))
        prev = t
    return out


def recoveries(job, kills, phases):
    rows = job.rows()
    out = []
    for t, rank, last in kills:
        # The first step completed by the restarted workers: a step the survivors finished
        # just after the kill (its all-reduce was done) is not one, and it was not lost.
        started = first_after(job.events(), "workers_started", t)
        restart_t = started["time"] if started else t
        first = next(x for x in rows if x["time"] > restart_t)
        last = max([last] + [x["step"] for x in rows if x["time"] <= restart_t])
        bounds, loaded = phases(job, t, first["time"])
        resumed = loaded["step"] if loaded else 0
        out.append({"rank": rank, "recovery": first["time"] - t, "phases": durations(bounds),
                    "last": last, "resumed": resumed, "lost": last - resumed,
                    "first_step_time": first["step_time"],
                    "from_standby": started.get("from_standby") if started else None})
    return out


def print_recoveries(title, recs, world):
    print(f"  {title}: kill -> first completed step after the restart")
    for i, r in enumerate(recs):
        print(f"    kill {i + 1} (rank {r['rank']}): {r['recovery']:6.2f} s; last step {r['last']}, "
              f"resumed from {r['resumed']}, {r['lost']} step(s) lost"
              + (f"; {r['from_standby']} of {world} workers from warm standbys"
                 if r["from_standby"] is not None else ""))
    labels = []
    for r in recs:
        labels += [l for l, _ in r["phases"] if l not in labels]
    print("    phases, median over kills:")
    for label in labels:
        v = [d for r in recs for l, d in r["phases"] if l == label]
        print(f"      {label:44s} {statistics.median(v) * 1e3:8.0f} ms")
    print(f"      {'(its step_time)':44s} "
          f"{statistics.median(r['first_step_time'] for r in recs) * 1e3:8.0f} ms")


def baseline(job, steps, timeout):
    """Runs `job` until `steps` steps complete, then stops it; returns its mean wall time per
    step (steady_step) and its mean step_time, both without the first 2 steps."""
    try:
        job.start()
        wait_until(lambda: len(job.rows()) >= steps, timeout, f"{steps} baseline steps")
        rows = job.rows()
        return steady_step(rows, []), statistics.mean(r["step_time"] for r in rows[2:steps])
    finally:
        try:
            job.stop()
        finally:
            job.cleanup()


# ---------------------------------------------------------------- goodput

def goodput(job, a):
    """Runs cairn for a.duration seconds with a kill every a.kill_every seconds (the job is
    started by this function)."""
    kills = []
    try:
        job.start()
        t0 = job.launched
        end = t0 + a.duration
        k = 1
        while True:
            nxt = t0 + k * a.kill_every
            if nxt >= end:
                break
            while time.time() < nxt:
                if job.proc.poll() is not None:
                    raise RuntimeError(f"cairn run exited early ({job.proc.returncode}); see {job.run}.out")
                time.sleep(min(0.2, max(0.0, nxt - time.time())))
            rank = (k - 1) % job.world
            kills.append((kill_worker(job, rank), rank))
            k += 1
        while time.time() < end:
            time.sleep(min(0.5, max(0.0, end - time.time())))
        t1 = time.time()
        rc = job.stop(timeout=120)
        exited = time.time()
    finally:
        job.cleanup()
    return analyze_goodput(job, t0, t1, exited, rc, kills)


def analyze_goodput(job, t0, t1, exited, rc, kills):
    rows = [r for r in job.rows() if r["time"] <= t1]
    last_idx = {r["step"]: i for i, r in enumerate(rows)}
    cats = {}

    def add(name, s):
        cats[name] = cats.get(name, 0.0) + max(0.0, s)

    productive = 0.0
    pending = sorted(t for t, _ in kills)  # kills not yet matched with the gap they open
    cursor, first = t0, True
    recovery_phases = {}
    for i, r in enumerate(rows):
        begin = r["time"] - r["step_time"]
        here = [t for t in pending if t <= begin]
        pending = [t for t in pending if t > begin]
        if first:
            add("startup (launch -> first step)", begin - cursor)  # a kill before it counts here
        elif here:
            # A kill can land in a step that still completes on rank 0 (its peer dies after the
            # last collective); the recovery then starts at that step's end.
            k = max(here[0], cursor)
            add("lost: step in progress at the kill", k - cursor)
            bounds, _ = cairn_phases(job, here[0], r["time"])
            bounds = ([("kill", k)] + [(l, t) for l, t in bounds[1:] if t <= begin]
                      + [("start event -> first step began", begin)])
            for label, d in durations(bounds):
                recovery_phases[label] = recovery_phases.get(label, 0.0) + d
                add("recovery", d)
        else:
            add("between steps (outside step_time)", begin - cursor)
        if last_idx[r["step"]] == i:
            productive += r["step_time"]
        else:
            add("lost: steps recomputed after a rollback", r["step_time"])
        cursor, first = r["time"], False
    add("step in progress at the SIGTERM", t1 - cursor)
    wall = t1 - t0
    started = [e for e in job.events() if e.get("event") == "workers_started" and e["time"] <= t1]
    return {"wall": wall, "productive": productive, "cats": cats, "phases": recovery_phases,
            "kills": len(kills), "steps": len(last_idx), "rc": rc, "shutdown": exited - t1,
            "rows": rows, "restarts": len(started[1:]),
            "from_standby": sum(1 for e in started[1:] if e.get("from_standby") == job.world)}


# ---------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cairn", default="build/bin/cairn")
    p.add_argument("--data", default="data/kjv")
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=8, help="global batch (sequences)")
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--python", default=benchlib.python_with_torch(), help="the peer's interpreter")
    p.add_argument("--threads", type=int, default=0,
                   help="threads per worker, both sides, OpenMP and OpenBLAS (default: cores / world, at least 1)")
    p.add_argument("--peer-malloc", choices=["cairn", "glibc"], default="cairn",
                   help="the peer's allocator: cairn's settings (as MALLOC_* variables) or glibc's defaults")
    p.add_argument("--kills", type=int, default=5, help="kills timed for the recovery figures")
    p.add_argument("--warm-steps", type=int, default=4, help="steps after each (re)start before a kill")
    p.add_argument("--peer-save-every", type=int, default=1, help="the peer's steps between torch.save")
    p.add_argument("--baseline-steps", type=int, default=8,
                   help="steps of the runs without checkpoints (0: skip them)")
    p.add_argument("--duration", type=float, default=600, help="seconds of the goodput run (0: skip)")
    p.add_argument("--kill-every", type=float, default=60, help="seconds between kills in the goodput run")
    p.add_argument("--reference-steps", type=int, default=20,
                   help="steps of the goodput run's reference without checkpoints")
    p.add_argument("--timeout", type=float, default=300, help="longest wait for any one thing")
    p.add_argument("--hogs", type=int, default=0,
                   help="busy-looping processes at the workers' priority while the kills are timed "
                        "(both sides): recovery on a loaded machine")
    a = p.parse_args()
    a.cairn = os.path.abspath(a.cairn)
    a.threads = a.threads or max(1, benchlib.cores() // a.world)
    print(benchlib.machine_line() + f"; {a.world} workers per side, {a.threads} thread(s) each for "
          f"OpenMP and OpenBLAS")
    print(f"recovery: GPT-2 {a.n_layer} layers, d={a.n_embd}, vocab 50304, global batch {a.batch} x "
          f"{a.seq_len} (micro-batch {a.micro_batch}), fp32; {a.kills} SIGKILLs of one worker, "
          f"{a.warm_steps} steps after each (re)start"
          + (f"; {a.hogs} busy-looping process(es) share the cores while the kills are timed" if a.hogs else ""))
    sys.stdout.flush()
    # A SIGTERM to this script unwinds through the cleanup below like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    jobs = []

    def track(job):
        jobs.append(job)
        return job

    with tempfile.TemporaryDirectory(prefix="recovery-", dir=os.path.dirname(os.path.abspath(a.data))) as tmp:
        try:
            run_all(a, tmp, track)
        finally:
            for j in jobs:
                try:
                    j.cleanup()
                except Exception as e:  # keep cleaning up the others
                    print(f"cleanup: {e}", file=sys.stderr)


class Hogs:
    """`n` processes that busy-loop at this script's priority while the block runs."""

    def __init__(self, n):
        self.n, self.procs = n, []

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
            p.wait()
        return False


def run_all(a, tmp, track):
    # 1. cairn
    cj = track(CairnJob(a, tmp, "cairn", max_restarts=a.kills + 1))
    with Hogs(a.hogs):
        cj.start()
        ckills = kill_cycles(cj, a, a.timeout)
        rc = cj.stop()
    cj.cleanup()
    crec = recoveries(cj, ckills, cairn_phases)
    cstep = steady_step(cj.rows(), ckills)
    # 2. the peer
    pj = track(PeerJob(a, tmp, "peer", a.peer_save_every))
    with Hogs(a.hogs):
        pj.start()
        pkills = kill_cycles(pj, a, a.timeout)
        pj.stop()
    pj.cleanup()
    prec = recoveries(pj, pkills, peer_phases)
    pstep = steady_step(pj.rows(), pkills)
    saves = [r["save_s"] for r in pj.rows() if r["save_s"] > 0]
    # Steady steps with and without checkpoints come from runs without kills: the steps between
    # kills share the machine with what a restart leaves running (the next warm standbys
    # starting, the slots being prepared), which is the restart's cost, not the checkpoints'.
    cbase = pbase = cmem = pmem = None
    if a.baseline_steps > 0:
        cbase, _ = baseline(track(CairnJob(a, tmp, "cairn-base", 0, memory_interval=0)),
                            a.baseline_steps + 3, a.timeout)
        cmem, _ = baseline(track(CairnJob(a, tmp, "cairn-mem", 0, memory_interval=1)),
                           a.baseline_steps + 3, a.timeout)
        pbase, _ = baseline(track(PeerJob(a, tmp, "peer-base", 0)), a.baseline_steps + 3, a.timeout)
        pmem, _ = baseline(track(PeerJob(a, tmp, "peer-save", a.peer_save_every)),
                           a.baseline_steps + 3, a.timeout)

    cmed = statistics.median(r["recovery"] for r in crec)
    pmed = statistics.median(r["recovery"] for r in prec)
    print(benchlib.cairn_side_line(benchlib.start_event(cj.run), cj.env(), "fp32", a.world))
    print(benchlib.peer_side_line(pj.settings(), pj.env())
          + "; store hosted by the supervisor (TORCHELASTIC_USE_AGENT_STORE=True)")
    print_recoveries(f"cairn (memory checkpoint every step; cairn run exited {rc} on SIGTERM)", crec, a.world)
    warm = sum(1 for r in crec if r["from_standby"] == a.world)
    print(f"    warm standbys: {warm} of {len(crec)} restarts started every worker from a standby")
    print_recoveries(f"pytorch DDP (torch.save every {a.peer_save_every} step(s), fsynced)", prec, a.world)
    print(f"  recovery median: cairn {cmed:.2f} s, pytorch {pmed:.2f} s; ratio pytorch/cairn {pmed / cmed:.2f}x "
          f"(above 1: cairn recovers faster)")
    print(f"    target: cairn within 2 s: {'met' if cmed <= 2 else 'MISSED'} ({cmed:.2f} s); "
          f"at least 2x faster than the peer: {'met' if pmed / cmed >= 2 else 'MISSED'} ({pmed / cmed:.2f}x)")
    if cbase:
        print(f"  wall time per step without kills ({a.baseline_steps} steps after 3), cairn  : "
              f"{cmem * 1e3:5.0f} ms with a memory checkpoint every step, {cbase * 1e3:.0f} ms "
              f"without checkpoints ({cmem / cbase - 1:+.0%})")
        print(f"  wall time per step without kills ({a.baseline_steps} steps after 3), pytorch: "
              f"{pmem * 1e3:5.0f} ms with torch.save every {a.peer_save_every} step(s)"
              + (f" (the save alone {statistics.median(saves) * 1e3:.0f} ms)" if saves else "")
              + f", {pbase * 1e3:.0f} ms without ({pmem / pbase - 1:+.0%})")
    print(f"  wall time per step between kills (steps 3-{a.warm_steps} after each restart, which "
          f"share the machine with the next standbys' start): cairn {cstep * 1e3:.0f} ms, "
          f"pytorch {pstep * 1e3:.0f} ms")
    print(f"  load average now {loadavg():.1f}")
    sys.stdout.flush()

    # 3. goodput, between two reference runs of the same job without checkpoints: the machine
    # is shared, so its speed is measured on both sides of the run and the drift printed
    if a.duration > 0:
        n_kills = int((a.duration - 1e-9) // a.kill_every)

        def reference(name):
            return baseline(track(CairnJob(a, tmp, name, max_restarts=n_kills + 2, memory_interval=0)),
                            a.reference_steps + 2, a.timeout)[1]

        before = reference("goodput-ref")
        g = goodput(track(CairnJob(a, tmp, "goodput", max_restarts=n_kills + 2)), a)
        after = reference("goodput-ref-after")
        print_goodput(a, g, (before, after), a.reference_steps)


def print_goodput(a, g, refs, ref_steps):
    """refs: the mean step_time without checkpoints measured just before and just after the run."""
    wall, prod = g["wall"], g["productive"]
    gp = prod / wall
    ref_step = statistics.mean(refs)
    drift = max(refs) / min(refs) - 1
    honest = g["steps"] * ref_step / wall
    print(f"goodput: cairn, {wall:.0f} s of wall time, a worker killed every {a.kill_every:.0f} s "
          f"({g['kills']} kills), {g['steps']} distinct steps; cairn run exited {g['rc']} "
          f"{g['shutdown']:.1f} s after the SIGTERM (143 expected)")
    print(f"  productive (step_time of each final step once): {prod:8.1f} s")
    down = wall - prod
    print(f"  downtime                                      : {down:8.1f} s")
    for name, s in sorted(g["cats"].items(), key=lambda kv: -kv[1]):
        print(f"    {name:44s}{s:8.1f} s  ({s / wall:5.1%})")
        if name == "recovery":
            for label, d in sorted(g["phases"].items(), key=lambda kv: -kv[1]):
                print(f"      {label:42s}{d:8.1f} s  ({d / max(1, g['kills']):.2f} s per kill)")
    per_kill = sum(v for k, v in g["cats"].items() if k == "recovery" or k.startswith("lost"))
    print(f"  downtime per kill (recovery + lost work): {per_kill / max(1, g['kills']):.2f} s")
    print(f"  warm standbys: {g['from_standby']} of {g['restarts']} restarts started every worker from a standby")
    print(f"  goodput as logged (each final step at its own step_time): {gp:.1%}  "
          f"(target >= 95%: {'met' if gp >= 0.95 else 'MISSED'})")
    lo, hi = (g["steps"] * r / wall for r in sorted(refs))
    print(f"  goodput against a run without checkpoints: {honest:.1%}  ({g['steps']} steps x "
          f"{ref_step * 1e3:.0f} ms, the mean step_time of {ref_steps} steps of the same job without "
          f"checkpoints, {refs[0] * 1e3:.0f} ms just before and {refs[1] * 1e3:.0f} ms just after the run; "
          f"{lo:.1%} to {hi:.1%} with either alone; the steps' own mean was "
          f"{prod / max(1, g['steps']) * 1e3:.0f} ms, so checkpointing cost "
          f"{prod - g['steps'] * ref_step:+.1f} s inside the steps)")
    if drift > 0.10:
        print(f"  WARNING: the machine's speed drifted by {drift:.0%} between the two references; "
              f"the figure against a run without checkpoints is not reliable, the one as logged is")
    print(f"  load average now {loadavg():.1f}")


if __name__ == "__main__":
    main()
