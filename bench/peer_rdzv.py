#!/usr/bin/python3
"""The PyTorch peer of bench/control_plane's first phase: torchrun's c10d rendezvous
(torch.distributed.elastic's DynamicRendezvousHandler with the C10dRendezvousBackend over a
torch.distributed.TCPStore) driven by N simulated nodes that all join at once.

  /usr/bin/python3 bench/peer_rdzv.py --nodes 16,64,256 [--timeout 120] [--procs P]

For each N this process hosts the TCPStore server (is_master=True on 127.0.0.1, a free port), as
torchrun's agent on node 0 does. Every node has its own TCPStore client connection,
C10dRendezvousBackend and handler, built as torchrun builds them
(c10d_rendezvous_backend.create_backend, then dynamic_rendezvous.create_handler) from
RendezvousParameters with min_nodes = max_nodes = N, is_host=False and torch's default timeouts.
Once every node is connected, a start signal releases all of them into next_rendezvous() at once.

By default every node is a process of its own, as a real agent is, forked from a forkserver that
has already imported torch. --procs P instead spreads the nodes over P processes as threads; on
torch 1.13 that crashes the interpreter sooner or later: Store.compare_set builds its bytes
result without holding the GIL (pytorch/pytorch#123983, fixed in 2024), and the c10d backend
calls compare_set for every change, so two nodes in one process corrupt Python's allocator.

"first round" is the time from the start signal to the last node returning from
next_rendezvous() holding the round (a rank and a world of N): the same definition as
bench/control_plane's first full round with --nnodes N:N, where every node calls Join at once and
the time runs to the last node holding the round. Differences to keep in mind when comparing:
control_plane also runs one spare node (N + 1 join) and its agents poll every 0.2 s; here exactly
N nodes join (a spare would sit in the wait list until --timeout), and torch's nodes behave as
torch 1.13's do: a node first sleeps a random 0 to 0.3 s, then every change to the rendezvous is
a compare_set of the whole pickled state (which lists every node), retried at once when another
node won, and a node waiting for the others re-reads that state once a second. A node whose last
heartbeat in the state is older than keep_alive_interval * keep_alive_max_attempt is dropped
from the round by whichever node writes next. The simulated nodes share the machine's cores
with the store (as control_plane's agents share them with the master), so the nodes' CPU
seconds, which on a cluster would be spread over N machines, are printed too. Most of those
go, in torch 1.13, to naming events rather than to the rendezvous: every write of the state,
won or lost, records an event whose name comes from get_method_name(), which calls
inspect.stack() twice, even with event logging off.

To show where the time goes, every node's writes of the state are counted: "won" (its
compare_set went through), "lost" (another node had written first; it re-reads and tries
again) and "expired" (nodes found with an expired heartbeat in a state just written, which
torch logs as "removed ... since they had no heartbeat"; several writers may count the same
node). These counters wrap the handler's state holder (torch 1.13's
_BackendRendezvousStateHolder.sync) without changing what it does; they are left out if that
internal differs.

Printed: the machine, torch's and Python's versions, the rendezvous parameters and the handler
settings actually in use (keep-alive interval and attempts, heartbeat, join, last-call and close
timeouts), then one row per N: the first round, the median node's time, failed nodes, processes,
the CPU seconds of this process (the store) and of the nodes from the start signal to the end of
the round, and the size of the rendezvous state at the end. A size that does not finish within
--timeout is printed as such with the number of nodes that had returned; its processes are
killed and the larger sizes are skipped.
"""
import argparse
import ctypes
import multiprocessing
import os
import resource
import signal
import statistics
import sys
import threading
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.elastic.rendezvous import RendezvousParameters
from torch.distributed.elastic.rendezvous import c10d_rendezvous_backend
from torch.distributed.elastic.rendezvous import dynamic_rendezvous

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

HOST = "127.0.0.1"
READ_TIMEOUT_S = 60  # torch's default read_timeout for the c10d backend's TCPStore
MIN_SETUP_S = 60  # at least this long for the processes to start and every node to connect
FORKSERVER_PRELOAD = ["torch", "torch.distributed.elastic.rendezvous.dynamic_rendezvous",
                      "torch.distributed.elastic.rendezvous.c10d_rendezvous_backend"]

# per-node status in the shared array
PENDING, RETURNED, FAILED, SETUP_FAILED = 0, 1, 2, 3
# the shared write counters
WRITES_WON, WRITES_LOST, EXPIRED, COUNTED_NODES = 0, 1, 2, 3


def cpu_seconds(who=resource.RUSAGE_SELF):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def rendezvous_parameters(nodes, port, run_id, join_timeout):
    """The parameters a torchrun agent would build for `--rdzv-backend c10d --nnodes N:N`, with
    the store hosted elsewhere (is_host=False: every node is a client)."""
    return RendezvousParameters(
        backend="c10d",
        endpoint=f"{HOST}:{port}",
        run_id=run_id,
        min_nodes=nodes,
        max_nodes=nodes,
        is_host=False,
        read_timeout=READ_TIMEOUT_S,
        join_timeout=join_timeout,
    )


def make_handler(params):
    """One node's handler, as torchrun's registry makes it for the c10d backend."""
    backend, store = c10d_rendezvous_backend.create_backend(params)
    return dynamic_rendezvous.create_handler(store, backend, params)


def handler_settings(join_timeout):
    """The settings a node's handler runs with, read from a handler built the same way but over
    an in-process store."""
    params = rendezvous_parameters(1, 0, "settings-probe", join_timeout)
    store = dist.HashStore()
    backend = c10d_rendezvous_backend.C10dRendezvousBackend(store, params.run_id)
    return dynamic_rendezvous.create_handler(store, backend, params).settings


def count_state_writes(handler, counters):
    """Counts this node's writes of the rendezvous state into the shared counters (see the
    description); does nothing if the handler's state holder is not the one of torch 1.13."""
    holder = getattr(handler, "_state_holder", None)
    if holder is None or not hasattr(holder, "_dead_nodes") or not hasattr(holder, "sync"):
        return
    sync = holder.sync

    def counted_sync():
        has_set = sync()
        if has_set is not None:  # None: a read, no write
            with counters.get_lock():
                counters[WRITES_WON if has_set else WRITES_LOST] += 1
                if has_set:
                    counters[EXPIRED] += len(holder._dead_nodes)
        return has_set

    holder.sync = counted_sync
    with counters.get_lock():
        counters[COUNTED_NODES] += 1


def die_with_parent():
    """Node processes must not outlive the forkserver, which ends with this script."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# ---------------------------------------------------------------- node processes

def run_nodes(proc_index, node_ids, nodes, port, run_id, join_timeout, shared):
    """A node process: its one node in the main thread, or (--procs) one thread per node."""
    die_with_parent()
    reported = threading.Lock()
    first_error = []

    def report(node, what, exc):
        with reported:
            if not first_error:
                first_error.append(node)
                print(f"peer_rdzv: process {proc_index}, node {node}: {what}: "
                      f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    def count(counter):
        with counter.get_lock():
            counter.value += 1

    def node_main(node, wait_for_start):
        params = rendezvous_parameters(nodes, port, run_id, join_timeout)
        try:
            handler = make_handler(params)
        except Exception as exc:  # noqa: BLE001 - reported, counted as a failed node
            shared["status"][node] = SETUP_FAILED
            report(node, "setup", exc)
            count(shared["ready"])
            count(shared["done"])
            return
        count_state_writes(handler, shared["writes"])
        count(shared["ready"])
        wait_for_start()
        try:
            _, rank, world_size = handler.next_rendezvous()
            shared["returned_at"][node] = time.monotonic()
            shared["rank"][node] = rank
            shared["world"][node] = world_size
            shared["status"][node] = RETURNED
        except Exception as exc:  # noqa: BLE001 - reported, counted as a failed node
            shared["returned_at"][node] = time.monotonic()
            shared["status"][node] = FAILED
            report(node, "next_rendezvous", exc)
        count(shared["done"])

    cpu_at_start = []

    def wait_for_start():
        shared["start"].wait()
        cpu_at_start.append(cpu_seconds())

    if len(node_ids) == 1:
        node_main(node_ids[0], wait_for_start)
    else:
        release = threading.Event()
        threads = [threading.Thread(target=node_main, args=(i, release.wait), daemon=True)
                   for i in node_ids]
        for t in threads:
            t.start()
        wait_for_start()
        release.set()
        for t in threads:
            t.join()
    if cpu_at_start:
        shared["node_cpu"][proc_index] = cpu_seconds() - cpu_at_start[0]
    # The node's keep-alive thread runs on until the parent has read everything; the main
    # thread only waits meanwhile (no Python runs beside a compare_set).
    shared["stop"].wait()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ---------------------------------------------------------------- one size

class Result:
    def __init__(self, nodes, procs):
        self.nodes = nodes
        self.procs = procs
        self.setup_ok = True
        self.setup_s = 0.0
        self.finished = False  # every node returned or failed within the timeout
        self.crashed = False  # a process died during the round
        self.elapsed_s = 0.0  # from the start signal to the end of the wait
        self.returned = 0
        self.failed = 0
        self.first_round_s = None
        self.median_s = None
        self.store_cpu_s = 0.0
        self.node_cpu_s = None
        self.state_kib = None
        self.ranks_ok = False
        self.writes = None  # won, lost, expired; None if not counted
        self.note = ""


def stop_processes(workers, shared, grace_s=10):
    shared["stop"].set()
    deadline = time.monotonic() + grace_s
    for w in workers:
        w.join(timeout=max(0.0, deadline - time.monotonic()))
    for w in workers:
        if w.is_alive():
            w.kill()
    for w in workers:
        w.join()


def run_size(ctx, nodes, procs, timeout_s, join_timeout):
    res = Result(nodes, procs)
    store = dist.TCPStore(HOST, 0, None, True, timedelta(seconds=READ_TIMEOUT_S),
                          wait_for_workers=False)
    run_id = f"peer-rdzv-{nodes}-{os.getpid()}"
    shared = {
        "start": ctx.Event(),
        "stop": ctx.Event(),
        "ready": ctx.Value("i", 0),
        "done": ctx.Value("i", 0),
        "returned_at": ctx.Array("d", nodes, lock=False),
        "status": ctx.Array("b", nodes, lock=False),
        "rank": ctx.Array("i", nodes, lock=False),
        "world": ctx.Array("i", nodes, lock=False),
        "node_cpu": ctx.Array("d", procs, lock=False),
        "writes": ctx.Array("q", 4),
    }
    for p in range(procs):
        shared["node_cpu"][p] = -1.0
    workers = [
        ctx.Process(target=run_nodes, name=f"peer-rdzv-{p}",
                    args=(p, list(range(p, nodes, procs)), nodes, store.port, run_id,
                          join_timeout, shared))
        for p in range(procs)
    ]
    setup_start = time.monotonic()
    try:
        # Every node connected and holding its handler.
        setup_deadline = setup_start + max(timeout_s, MIN_SETUP_S)
        for w in workers:
            w.start()
        while shared["ready"].value < nodes:
            crashed = [w for w in workers if w.exitcode is not None]
            if time.monotonic() > setup_deadline or crashed:
                res.setup_ok = False
                res.note = (f"{shared['ready'].value}/{nodes} nodes connected in "
                            f"{time.monotonic() - setup_start:.0f} s")
                if crashed:
                    res.note += (f"; {len(crashed)} process(es) died (exit codes "
                                 f"{sorted({w.exitcode for w in crashed})})")
                return res
            time.sleep(0.02)
        res.setup_s = time.monotonic() - setup_start

        # All at once.
        cpu0 = cpu_seconds()
        t0 = time.monotonic()
        shared["start"].set()
        deadline = t0 + timeout_s
        while shared["done"].value < nodes and time.monotonic() < deadline:
            if any(w.exitcode is not None for w in workers):
                break
            time.sleep(0.02)
        res.store_cpu_s = cpu_seconds() - cpu0
        res.elapsed_s = time.monotonic() - t0
        writes = shared["writes"][:]
        if writes[COUNTED_NODES] == nodes:
            res.writes = (writes[WRITES_WON], writes[WRITES_LOST], writes[EXPIRED])

        status = list(shared["status"])
        res.returned = status.count(RETURNED)
        res.failed = status.count(FAILED) + status.count(SETUP_FAILED)
        res.finished = status.count(PENDING) == 0
        crashed = [w for w in workers if w.exitcode is not None]
        if crashed:
            res.crashed = True
            res.note = (f"{len(crashed)} process(es) died (exit codes "
                        f"{sorted({w.exitcode for w in crashed})})")
        if res.returned:
            times = [shared["returned_at"][i] - t0 for i in range(nodes) if status[i] == RETURNED]
            res.median_s = statistics.median(times)
            if res.returned == nodes:
                res.first_round_s = max(times)
                res.ranks_ok = (sorted(shared["rank"][:]) == list(range(nodes))
                                and set(shared["world"][:]) == {nodes})
        if res.finished:
            try:
                # The state as the c10d backend keeps it: base64 of the pickled state.
                res.state_kib = len(store.get("torch.rendezvous." + run_id)) / 1024
            except RuntimeError:
                pass
            grace = time.monotonic() + 10
            while time.monotonic() < grace and min(shared["node_cpu"][:]) < 0:
                time.sleep(0.02)
            if min(shared["node_cpu"][:]) >= 0:
                res.node_cpu_s = sum(shared["node_cpu"][:])
        return res
    finally:
        stop_processes([w for w in workers if w.pid is not None], shared)
        del store


# ---------------------------------------------------------------- main

def fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


def fmt_writes(writes, width=0):
    if writes is None:
        return f"{'n/a':>{width}}" if width else "n/a"
    if width:
        return "".join(f"{w:>{width}d}" for w in writes)
    return f"won {writes[0]}, lost {writes[1]}, expired {writes[2]}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", default="16,64,256", help="comma-separated node counts")
    ap.add_argument("--timeout", type=float, default=120,
                    help="seconds allowed for each size's first round")
    ap.add_argument("--procs", type=int, default=0,
                    help="processes to spread the nodes over as threads (default 0: one process "
                         "per node; fewer crash on torch 1.13, see the description)")
    ap.add_argument("--join-timeout", type=int, default=600,
                    help="the rendezvous' join_timeout in seconds (torch's default: 600)")
    a = ap.parse_args()
    sizes = [int(s) for s in a.nodes.split(",") if s.strip()]
    if not sizes or min(sizes) < 1 or a.procs < 0:
        ap.error("--nodes needs positive counts and --procs 0 or more")

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(FORKSERVER_PRELOAD)

    s = handler_settings(a.join_timeout)
    t = s.timeout
    print(benchlib.machine_line())
    print(f"peer: torch {torch.__version__}, python {sys.version.split()[0]}; "
          "DynamicRendezvousHandler + C10dRendezvousBackend over TCPStore")
    print(f"rendezvous parameters: backend=c10d endpoint={HOST}:<free port, one store per size, "
          f"hosted by this process> run_id=peer-rdzv-<N>-<pid> min_nodes=max_nodes=N "
          f"is_host=False read_timeout={READ_TIMEOUT_S} join_timeout={a.join_timeout}")
    print(f"handler settings: keep_alive_interval {s.keep_alive_interval.total_seconds():g} s, "
          f"keep_alive_max_attempt {s.keep_alive_max_attempt}, "
          f"heartbeat timeout {t.heartbeat.total_seconds():g} s, "
          f"join {t.join.total_seconds():g} s, last_call {t.last_call.total_seconds():g} s, "
          f"close {t.close.total_seconds():g} s")
    if a.procs:
        layout = (f"N nodes as threads over {a.procs} processes (may crash: compare_set without "
                  "the GIL on torch 1.13)")
    else:
        layout = "one process per node (forked from a forkserver with torch imported)"
    print(f"layout: {layout}, one TCPStore client per node; first round = start signal to the "
          f"last node's next_rendezvous() returning; --timeout {a.timeout:g} s per size")
    print()
    print(f"{'nodes':>6} {'first round s':>14} {'median s':>9} {'failed':>7} {'procs':>6} "
          f"{'store cpu s':>12} {'nodes cpu s':>12} {'state KiB':>10}"
          f"{'won':>8}{'lost':>8}{'expired':>8}")
    sys.stdout.flush()

    for i, n in enumerate(sizes):
        procs = min(a.procs, n) if a.procs else n
        print(f"peer_rdzv: {n} nodes...", file=sys.stderr, flush=True)
        r = run_size(ctx, n, procs, a.timeout, a.join_timeout)
        if r.setup_ok:
            print(f"peer_rdzv: {n} nodes connected in {r.setup_s:.1f} s", file=sys.stderr,
                  flush=True)
        note = f"  ({r.note})" if r.note else ""
        if not r.setup_ok:
            print(f"{n:6d} did not start: {r.note}", flush=True)
        elif r.first_round_s is not None:
            if not r.ranks_ok:
                note += "  (ranks or world sizes wrong)"
            print(f"{n:6d} {r.first_round_s:14.2f} {r.median_s:9.2f} {r.failed:7d} {procs:6d} "
                  f"{r.store_cpu_s:12.2f} {fmt(r.node_cpu_s, '12.2f')} "
                  f"{fmt(r.state_kib, '10.1f')}{fmt_writes(r.writes, 8)}{note}", flush=True)
            continue
        elif r.finished:
            print(f"{n:6d} failed: {r.returned}/{n} nodes returned, {r.failed} failed "
                  f"(median {fmt(r.median_s, '.2f')} s, store cpu {r.store_cpu_s:.2f} s; "
                  f"writes {fmt_writes(r.writes)}){note}",
                  flush=True)
        elif r.crashed:
            print(f"{n:6d} stopped after {r.elapsed_s:.1f} s: {r.returned}/{n} nodes "
                  f"returned, {r.failed} failed (store cpu {r.store_cpu_s:.2f} s; "
                  f"writes {fmt_writes(r.writes)}){note}",
                  flush=True)
        else:
            print(f"{n:6d} did not finish within {a.timeout:g} s: {r.returned}/{n} nodes "
                  f"returned, {r.failed} failed (store cpu {r.store_cpu_s:.2f} s; "
                  f"writes {fmt_writes(r.writes)}){note}",
                  flush=True)
        skipped = sizes[i + 1:]
        if skipped:
            print(f"(skipped: {','.join(map(str, skipped))})", flush=True)
        break


if __name__ == "__main__":
    main()
