// Stack dumps through gdb, or the kernel's per-thread view without it.
#include "cairn/elastic/stacks.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cairn/elastic/process.h"
#include "cairn/elastic/worker_env.h"

namespace cairn::elastic {
namespace {

std::string read_small(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

std::string kernel_view(pid_t pid) {
  std::string out;
  std::error_code ec;
  for (auto& t :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::string dir = t.path().string();
    out += "thread " + t.path().filename().string() + " (" + read_small(dir + "/comm") +
           ") waiting in " + read_small(dir + "/wchan") + "\n";
    std::string k = read_small(dir + "/stack");
    if (!k.empty()) out += k + "\n";
  }
  return out.empty() ? "no threads readable under /proc/" + std::to_string(pid) + "\n" : out;
}

}  // namespace

std::string dump_stacks(pid_t pid, double timeout_s) {
  const char* path = std::getenv("PATH");
  auto gdb = find_executable("gdb", path ? path : "/usr/bin:/bin");
  if (!gdb.ok())
    return "gdb is not installed (apt-get install gdb gives user-space stacks); the kernel's "
           "view of pid " +
           std::to_string(pid) + ":\n" + kernel_view(pid);
  SpawnOptions so;
  so.argv = {*gdb, "-p", std::to_string(pid), "-batch", "-nx", "-ex", "thread apply all bt"};
  so.env = {"PATH=/usr/bin:/bin", "LC_ALL=C"};
  auto proc = ProcessHandle::Spawn(so);
  if (!proc.ok()) return "cannot start gdb: " + proc.status().ToString() + "\n" + kernel_view(pid);
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  int fds[2] = {(*proc)->stdout_fd(), (*proc)->stderr_fd()};
  while (fds[0] >= 0 || fds[1] >= 0) {
    auto left = std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      out += "\n(gdb did not finish within " + std::to_string(int(timeout_s)) + " s)\n";
      break;
    }
    pollfd p[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
    if (::poll(p, 2, int(left * 1000) + 1) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i] < 0 || p[i].revents == 0) continue;
      char buf[8192];
      ssize_t n = ::read(fds[i], buf, sizeof(buf));
      if (n > 0) {
        if (i == 0) out.append(buf, size_t(n));  // gdb's chatter on stderr is left out
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        fds[i] = -1;
      }
    }
  }
  (*proc)->signal_group(SIGKILL);
  (*proc)->wait(2.0);
  return out.empty() ? "gdb printed nothing; the kernel's view:\n" + kernel_view(pid) : out;
}

MainThreadWait main_thread_waits_for(const std::string& stacks, pid_t pid) {
  // gdb heads each thread "Thread N (Thread 0x... (LWP TID) "name"):" (a process without
  // threads: "Thread N (process PID ..."), then one "#K ..." line per frame (innermost first),
  // then a blank line.
  const std::string lwp = "(LWP " + std::to_string(pid) + ")";
  const std::string process = "(process " + std::to_string(pid);
  std::istringstream in(stacks);
  bool main = false;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("Thread ", 0) == 0) {
      main = line.find(lwp) != std::string::npos || line.find(process) != std::string::npos;
      continue;
    }
    if (!main || line.rfind("#", 0) != 0) continue;
    if (line.find("cairn::comm::Pending::wait") != std::string::npos)
      return MainThreadWait::kCollective;
    if (line.find("cairn::elastic::MasterClient::") != std::string::npos ||
        line.find("cairn::elastic::ShardClient::") != std::string::npos)
      return MainThreadWait::kMaster;
  }
  return MainThreadWait::kNothing;
}

}  // namespace cairn::elastic
