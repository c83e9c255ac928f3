// Facts about processes on this machine, read from /proc: whether a process recorded earlier
// (pid + start time) is still the same live process.
#pragma once

#include <cstdint>

namespace cairn::core {

// The start time of process `pid` in clock ticks since boot (/proc/PID/stat field 22), or 0
// when there is no such process.
uint64_t process_start_time(int pid);

// True when `pid` names a live process and, when `start_time` is not 0, it is the process that
// started then (a recycled pid is another process). A zombie counts as dead.
bool process_alive(int pid, uint64_t start_time);

}  // namespace cairn::core
