// Process facts from /proc.
#include "cairn/core/proc.h"

#include <sched.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace cairn::core {
namespace {

// The fields of /proc/PID/stat after the command name, which may itself hold spaces and ')'.
bool stat_fields(int pid, std::string* out) {
  if (pid <= 0) return false;
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  FILE* f = std::fopen(path, "re");
  if (!f) return false;
  char buf[1024];
  size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  buf[n] = 0;
  const char* close = std::strrchr(buf, ')');
  if (!close || close[1] != ' ') return false;
  *out = close + 2;  // "S ppid pgrp ..." : field 3 onwards
  return true;
}

// The "Name:   N kB" lines of /proc/self/status for `count` names, in bytes, in one read
// (0 for a name absent or when the file cannot be read).
void status_kib_fields(const char* const* names, int64_t* out, size_t count) {
  std::fill(out, out + count, 0);
  FILE* f = std::fopen("/proc/self/status", "re");
  if (!f) return;
  char line[256];
  while (std::fgets(line, sizeof(line), f))
    for (size_t i = 0; i < count; ++i) {
      const size_t n = std::strlen(names[i]);
      if (std::strncmp(line, names[i], n) == 0 && line[n] == ':')
        out[i] = int64_t(std::strtoll(line + n + 1, nullptr, 10)) * 1024;
    }
  std::fclose(f);
}

int64_t status_kib_field(const char* name) {
  int64_t bytes = 0;
  status_kib_fields(&name, &bytes, 1);
  return bytes;
}

}  // namespace

int64_t resident_bytes() { return status_kib_field("VmRSS"); }

int usable_cores() {
  cpu_set_t set;
  if (::sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return int(std::max(1u, std::thread::hardware_concurrency()));
}
int64_t peak_resident_bytes() { return status_kib_field("VmHWM"); }
int64_t file_resident_bytes() { return status_kib_field("RssFile"); }

PeakResident peak_and_shared_resident() {
  const char* const names[] = {"VmHWM", "RssShmem"};
  int64_t bytes[2];
  status_kib_fields(names, bytes, 2);
  return {bytes[0], bytes[1]};
}

bool reset_peak_resident() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  return bool(f);
}

std::string transparent_hugepage_mode(const std::string& path) {
  std::ifstream f(path);
  std::string text;
  if (!f || !std::getline(f, text)) return "";
  const size_t open = text.find('['), close = text.find(']');
  if (open == std::string::npos || close == std::string::npos || close < open) return "";
  const std::string mode = text.substr(open + 1, close - open - 1);
  return mode == "always" || mode == "madvise" || mode == "never" ? mode : "";
}

Result<int64_t> available_memory_bytes() {
  int64_t avail = -1;
  std::ifstream meminfo("/proc/meminfo");
  for (std::string line; std::getline(meminfo, line);) {
    if (line.rfind("MemAvailable:", 0) != 0) continue;
    std::istringstream ss(line.substr(13));
    int64_t kib = 0;
    if (ss >> kib) avail = kib * 1024;
  }
  // cgroup v2: the limit of this process's group, less what the group uses already.
  std::ifstream max_f("/sys/fs/cgroup/memory.max"), cur_f("/sys/fs/cgroup/memory.current");
  std::string max_s;
  int64_t cur = 0;
  if (max_f >> max_s && max_s != "max" && cur_f >> cur) {
    const int64_t room = std::stoll(max_s) - cur;
    if (avail < 0 || room < avail) avail = room > 0 ? room : 0;
  }
  if (avail < 0)
    return Status::NotFound("neither /proc/meminfo nor the cgroup tells the free memory");
  return avail;
}

uint64_t process_start_time(int pid) {
  std::string f;
  if (!stat_fields(pid, &f)) return 0;
  // Field 3 is the state; starttime is field 22, the 20th after the state.
  const char* p = f.c_str();
  for (int i = 0; i < 19 && p; ++i) {
    p = std::strchr(p, ' ');
    if (p) ++p;
  }
  return p ? std::strtoull(p, nullptr, 10) : 0;
}

bool process_alive(int pid, uint64_t start_time) {
  std::string f;
  if (!stat_fields(pid, &f) || f.empty() || f[0] == 'Z' || f[0] == 'X') return false;
  return start_time == 0 || process_start_time(pid) == start_time;
}

bool process_stopped(int pid) {
  std::string f;
  return stat_fields(pid, &f) && !f.empty() && (f[0] == 'T' || f[0] == 't');
}

int64_t raise_open_files_limit() {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) != 0) return -1;
  if (r.rlim_cur < r.rlim_max) {
    rlimit raised = r;
    raised.rlim_cur = r.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) r = raised;
  }
  return r.rlim_cur == RLIM_INFINITY ? INT64_MAX : int64_t(r.rlim_cur);
}

}  // namespace cairn::core
