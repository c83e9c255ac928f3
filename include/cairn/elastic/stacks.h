// Stack traces of every thread of a (hung) process, for the hang detector's report.
#pragma once

#include <sys/types.h>

#include <string>

namespace cairn::elastic {

// gdb's "thread apply all bt" of `pid` (gdb attaches, prints, detaches; bounded by `timeout_s`).
// Without gdb on PATH, the kernel's view (/proc/<pid>/task/*/{comm,wchan,stack}) and a note
// that gdb gives user-space stacks. Never fails: the text says what could not be read.
std::string dump_stacks(pid_t pid, double timeout_s);

// What the main thread of a silent worker waits for, read from its stacks.
enum class MainThreadWait {
  kNothing,     // not blocked on anyone (computing, stuck itself), or not found
  kCollective,  // one of cairn's collectives (comm::Pending::wait): other ranks
  kMaster,      // the elastic master: a call to it (MasterClient) or the shard client's wait
                // for its next shards (ShardClient)
};
// From `stacks` (dump_stacks' gdb text) of `pid`: the innermost of the main thread's frames that
// is a collective's wait or a master call decides. kNothing for the kernel's view. Pure.
MainThreadWait main_thread_waits_for(const std::string& stacks, pid_t pid);

}  // namespace cairn::elastic
