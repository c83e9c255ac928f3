// Process facts from /proc.
#include "cairn/core/proc.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

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

}  // namespace

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

}  // namespace cairn::core
