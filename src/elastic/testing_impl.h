// Helpers for the elastic module's tests: a per-test time bound and a scratch directory.
#pragma once

#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "cairn/elastic/exit_status.h"

namespace cairn::elastic {
// Readable gtest failure messages for ExitStatus.
inline void PrintTo(const ExitStatus& s, std::ostream* os) { *os << s.ToString(); }
}  // namespace cairn::elastic

namespace cairn::elastic::testing {

// Ends the test process with SIGALRM if the test runs longer than `seconds`, so a hung child
// or a lost wake-up fails the test instead of stalling the suite.
class Deadline {
 public:
  explicit Deadline(unsigned seconds) { ::alarm(seconds); }
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;
  ~Deadline() { ::alarm(0); }
};

// A fresh directory under the system temp dir, removed with everything in it on destruction.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name) {
    static int counter = 0;
    path_ = (std::filesystem::temp_directory_path() /
             ("cairn_" + name + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++)))
                .string();
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Everything on `fd` until end of stream (bounded by `timeout_s`).
inline std::string read_all(int fd, double timeout_s = 10) {
  std::string out;
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  char buf[4096];
  while (std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n == 0) break;
    if (n > 0) out.append(buf, size_t(n));
  }
  return out;
}

inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string line; std::getline(ss, line);) out.push_back(line);
  return out;
}

}  // namespace cairn::elastic::testing
