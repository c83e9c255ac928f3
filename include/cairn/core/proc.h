// Facts about processes on this machine, read from /proc: whether a process recorded earlier
// (pid + start time) is still the same live process; this process's resident memory and the
// memory it can still use.
#pragma once

#include <cstdint>
#include <string>

#include "cairn/core/status.h"

namespace cairn::core {

// The start time of process `pid` in clock ticks since boot (/proc/PID/stat field 22), or 0
// when there is no such process.
uint64_t process_start_time(int pid);

// True when `pid` names a live process and, when `start_time` is not 0, it is the process that
// started then (a recycled pid is another process). A zombie counts as dead.
bool process_alive(int pid, uint64_t start_time);

// True when `pid` names a process stopped by a signal (SIGSTOP, SIGTSTP: /proc/PID/stat state
// 'T') or held by a tracer ('t').
bool process_stopped(int pid);

// The cores this process may run on (its CPU affinity; the hardware's count when it cannot be
// read), at least 1.
int usable_cores();

// This process's resident memory now (VmRSS) and its high-water mark since it started (VmHWM),
// in bytes; 0 when /proc cannot be read. Shared memory this process has touched counts.
int64_t resident_bytes();
int64_t peak_resident_bytes();
// The file-backed part of the resident memory now (RssFile): the binary's and its libraries'
// pages that have run (and mapped files read), in bytes; 0 when /proc cannot be read.
int64_t file_resident_bytes();
// Starts the high-water mark (VmHWM) again from the resident memory now (/proc/self/clear_refs
// "5"): a profile run in this process before training is not the job's peak. False when the
// kernel refuses.
bool reset_peak_resident();
// The high-water mark (VmHWM) and the resident shared memory (RssShmem: the shared-memory
// checkpoint slots this process mapped), in bytes, in one read of /proc/self/status (a
// training step takes both); 0 each when it cannot be read.
struct PeakResident {
  int64_t peak = 0, shared = 0;
};
PeakResident peak_and_shared_resident();

// Bytes this process can still use: MemAvailable from /proc/meminfo, lowered by a cgroup
// (v2) memory limit when one is set. NotFound when neither can be read.
Result<int64_t> available_memory_bytes();

// The kernel's transparent huge page mode: "always", "madvise" or "never", the bracketed word
// of `path` (/sys/kernel/mm/transparent_hugepage/enabled); "" when it cannot be read or holds
// no such word (a kernel built without them). Under "never" or "" the block cache's large
// blocks are faulted in 4 KiB at a time (see block_cache.h).
std::string transparent_hugepage_mode(
    const std::string& path = "/sys/kernel/mm/transparent_hugepage/enabled");

// Raises this process's soft limit of open files to its hard limit (a server holding many
// connections needs more than the usual 1024) and returns the soft limit now in force.
int64_t raise_open_files_limit();

}  // namespace cairn::core
