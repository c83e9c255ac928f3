// Stack traces of every thread of a (hung) process, for the hang detector's report.
#pragma once

#include <sys/types.h>

#include <string>

namespace cairn::elastic {

// gdb's "thread apply all bt" of `pid` (gdb attaches, prints, detaches; bounded by `timeout_s`).
// Without gdb on PATH, the kernel's view (/proc/<pid>/task/*/{comm,wchan,stack}) and a note
// that gdb gives user-space stacks. Never fails: the text says what could not be read.
std::string dump_stacks(pid_t pid, double timeout_s);

// True when `stacks` (dump_stacks' gdb text) shows the main thread of `pid` blocked in one of
// cairn's collectives (comm::Pending::wait): waiting for other ranks rather than hung itself.
// False for the kernel's view, or when the main thread is not found. Pure.
bool main_thread_waits_in_collective(const std::string& stacks, pid_t pid);

}  // namespace cairn::elastic
