// Stack traces of every thread of a (hung) process, for the hang detector's report.
#pragma once

#include <sys/types.h>

#include <string>

namespace cairn::elastic {

// gdb's "thread apply all bt" of `pid` (gdb attaches, prints, detaches; bounded by `timeout_s`).
// Without gdb on PATH, the kernel's view (/proc/<pid>/task/*/{comm,wchan,stack}) and a note
// that gdb gives user-space stacks. Never fails: the text says what could not be read.
std::string dump_stacks(pid_t pid, double timeout_s);

}  // namespace cairn::elastic
