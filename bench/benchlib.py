"""Shared by the benchmark drivers (bench/*.py) and the PyTorch peers: the machine, the thread
and allocator settings both sides run with, and what each side reports it actually ran with.

The rule every bench follows: cairn and its peer run in the same invocation under the same
conditions (threads for OpenMP and for OpenBLAS, allocator, precision, what is timed), and the
header names both sides' settings, each side's GEMM peak measured inside its own processes, and
the ratio.

Nothing here imports torch at module level: the drivers that need no torch stay light, and the
peers import it themselves.
"""
import ctypes
import ctypes.util
import importlib.util
import json
import os
import sys
import time

# cairn's own allocator settings (src/core/malloc_tuning.cpp: mallopt M_MMAP_THRESHOLD 1 GiB,
# M_TRIM_THRESHOLD 2 GiB, M_ARENA_MAX 1), as the environment variables glibc reads at start-up.
CAIRN_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1073741824", "MALLOC_TRIM_THRESHOLD_": "2147483648",
                    "MALLOC_ARENA_MAX": "1"}
# Everything cairn tunes for its training processes, as environment variables for a peer: the
# allocator above, OpenMP's passive waiting and OpenBLAS's short spin (the `cairn` front and
# `cairn run` set OMP_WAIT_POLICY=PASSIVE and OPENBLAS_THREAD_TIMEOUT=4 for training;
# tools/cairn/commands.h says why).
CAIRN_TUNING_ENV = dict(CAIRN_MALLOC_ENV, OMP_WAIT_POLICY="PASSIVE", OPENBLAS_THREAD_TIMEOUT="4")
# Everything that changes threads or the allocator. A driver removes these from its own
# environment before setting them for a side, so that the caller's shell cannot give the two
# sides different settings.
SETTING_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "MALLOC_MMAP_THRESHOLD_",
                "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES",
                "CAIRN_MALLOC_DEFAULTS", "OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # <malloc.h>


# ---------------------------------------------------------------- the machine (drivers)

def cores():
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def loadavg():
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def huge_pages():
    """The kernel's transparent huge page mode (the bracketed word), or "not available"."""
    try:
        text = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
        return text[text.index("[") + 1:text.index("]")]
    except (OSError, ValueError):
        return "not available"


def machine_line():
    return (f"machine: {cores()} cores ({cpu_model()}), load average {loadavg():.1f}, "
            f"transparent huge pages {huge_pages()}")


def python_with_torch():
    """This interpreter when it has torch, else Debian's /usr/bin/python3 (python3-torch)."""
    return sys.executable if importlib.util.find_spec("torch") else "/usr/bin/python3"


def side_env(threads, malloc=None):
    """os.environ without any thread or allocator setting, plus OMP_NUM_THREADS and
    OPENBLAS_NUM_THREADS = threads, plus `malloc` (e.g. CAIRN_MALLOC_ENV)."""
    env = {k: v for k, v in os.environ.items() if k not in SETTING_VARS}
    env["OMP_NUM_THREADS"] = str(threads)
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    env.update(malloc or {})
    return env


def describe_env(env):
    """The thread and allocator variables of `env`, as KEY=VALUE words."""
    return " ".join(f"{k}={env[k]}" for k in SETTING_VARS if k in env) or "(none)"


def cairn_allocator(env):
    """What `cairn train` does with the allocator under `env` (see src/core/malloc_tuning.cpp)."""
    for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"):
        if k in env:
            return f"as set by {k} (cairn's mallopt skipped)"
    if "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        return "as set by GLIBC_TUNABLES (cairn's mallopt skipped)"
    if env.get("CAIRN_MALLOC_DEFAULTS") == "1":
        return "glibc defaults (CAIRN_MALLOC_DEFAULTS=1)"
    return "cairn's mallopt: mmap threshold 1 GiB, trim threshold 2 GiB"


def read_jsonl(path):
    """Complete JSON lines of a file that may still be appended to."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def start_event(run_dir):
    """The first `start` event of a cairn run directory (or {})."""
    return next((e for e in read_jsonl(os.path.join(run_dir, "events.jsonl"))
                 if e.get("event") == "start"), {})


def cairn_side_line(start, env, precision="fp32", world=1):
    """One line: the settings a cairn run reported in its `start` event, and its environment."""
    peak = start.get("peak_flops", 0) or 0
    return (f"cairn : {describe_env(env)}; it reports: torch threads {start.get('threads', '?')}, "
            f"BLAS threads {start.get('blas_threads', '?')}, OpenMP waiting "
            f"{start.get('omp_wait_policy', '?')}, OpenBLAS thread timeout "
            f"{start.get('openblas_thread_timeout', '?')}; allocator: {cairn_allocator(env)}; "
            f"precision {precision}; GEMM peak {peak / 1e9:.1f} GFLOP/s"
            + (f" over {world} workers measured at once ({peak / world / 1e9:.1f} each)" if world > 1 else ""))


def peer_side_line(r, env, where=None):
    """One line: the settings a peer reported (see peer_settings) and its environment (or
    `where` it ran, for a peer inside the driver's process)."""
    world = r.get("world", 1)
    peak = r.get("peak_flops", 0) or 0
    return (f"peer  : {where or describe_env(env)}; it reports: torch {r.get('torch', '?')}, torch threads "
            f"{r.get('threads', '?')}, BLAS threads {r.get('blas_threads', '?')}; allocator: "
            f"{r.get('allocator', '?')}; precision {r.get('precision', 'fp32')}; GEMM peak "
            f"{peak / 1e9:.1f} GFLOP/s"
            + (f" over {world} workers measured at once ({peak / world / 1e9:.1f} each)" if world > 1 else ""))


def wait_rusage(proc):
    """Waits for a subprocess.Popen; returns (exit code, peak RSS in MB)."""
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, ru.ru_maxrss / 1024


# ---------------------------------------------------------------- inside a peer process

def _openblas():
    """The loaded OpenBLAS (a library of this process exporting openblas_get_num_threads)."""
    seen = set()
    try:
        maps = open("/proc/self/maps").read().splitlines()
    except OSError:
        maps = []
    for line in maps:
        path = line.split()[-1] if len(line.split()) >= 6 else ""
        if not path.startswith("/") or path in seen or not path.split("/")[-1].startswith(("libopenblas", "libblas")):
            continue
        seen.add(path)
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(lib, "openblas_get_num_threads"):
            return lib
    return None


def blas_threads():
    """OpenBLAS's thread count in this process, -1 when the loaded BLAS does not say."""
    lib = _openblas()
    return lib.openblas_get_num_threads() if lib else -1


def set_threads(n):
    """What `cairn train` does with train.threads: torch's threads and OpenBLAS's."""
    import torch
    if n > 0:
        torch.set_num_threads(n)
        lib = _openblas()
        if lib:
            lib.openblas_set_num_threads(ctypes.c_int(n))


def gemm_peak(n=1024, seconds=0.5):
    """fp32 GEMM rate of this process, as cairn measures its own (run_log.cpp
    measure_gemm_flops: n x n, torch.mm into a preallocated output, `seconds` long)."""
    import torch
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)  # the global generator is left alone
        a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        c = torch.mm(a, b)
        t0, it = time.perf_counter(), 0
        while True:
            torch.mm(a, b, out=c)
            it += 1
            el = time.perf_counter() - t0
            if el >= seconds:
                return 2.0 * n ** 3 * it / el


class _MallInfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def allocator():
    """How glibc's malloc treats a 256 MiB block in this process, checked (not assumed): kept in
    the heap (mmap threshold raised, as cairn does) or mmapped (glibc's default)."""
    libc = _libc()
    if not hasattr(libc, "mallinfo2"):
        return "unknown (no mallinfo2)"
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    before = libc.mallinfo2().hblks
    p = libc.malloc(256 << 20)
    mapped = libc.mallinfo2().hblks > before
    libc.free(p)
    env = {k: os.environ[k] for k in CAIRN_MALLOC_ENV if k in os.environ}
    if mapped:
        return "glibc defaults (blocks of 256 MiB mmapped)" + (f" despite {describe_env(env)}" if env else "")
    return f"large blocks kept in the heap ({describe_env(env) if env else 'mallopt'})"


def keep_freed_memory():
    """cairn's allocator settings applied to this process (mallopt, as malloc_tuning.cpp does)."""
    libc = _libc()
    return (libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 0x7FFFFFFF) == 1
            and libc.mallopt(M_ARENA_MAX, 1) == 1)


def peer_settings(precision="fp32"):
    """What a peer process runs with, as it reports it."""
    import torch
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "blas_threads": blas_threads(),
            "allocator": allocator(), "precision": precision,
            "env": {k: os.environ[k] for k in SETTING_VARS if k in os.environ}}
