// Warm standby workers: the worker side parks at the top of main; the agent side starts,
// checks, activates and retires them.
#include "cairn/elastic/standby.h"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "cairn/core/malloc_tuning.h"

namespace cairn::elastic {
namespace {

constexpr std::string_view kMagic = "cairn-activate 1\n";
constexpr size_t kMaxMessage = 16u << 20;

// "NAME" of "NAME=value".
std::string_view name_of(std::string_view entry) { return entry.substr(0, entry.find('=')); }

// The entries of `env` that are not round variables, sorted (to_envp's order is by name).
std::vector<std::string> stable_part(const std::vector<std::string>& env) {
  std::vector<std::string> out;
  for (const std::string& e : env)
    if (!is_round_variable(name_of(e)) && name_of(e).substr(0, 14) != "CAIRN_STANDBY_")
      out.push_back(e);
  std::sort(out.begin(), out.end());
  return out;
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "cairn: error: standby worker: %s\n", what.c_str());
  std::fflush(stderr);
  std::_Exit(2);
}

}  // namespace

bool is_round_variable(std::string_view name) {
  // LOCAL_RANK and LOCAL_WORLD_SIZE are not among them: a standby serves one local rank of a
  // node whose worker count is fixed, so it has them from its start.
  static constexpr std::array<std::string_view, 10> kRound = {"RANK",
                                                              "WORLD_SIZE",
                                                              "GROUP_RANK",
                                                              "GROUP_WORLD_SIZE",
                                                              "ROLE_RANK",
                                                              "ROLE_WORLD_SIZE",
                                                              "MASTER_ADDR",
                                                              "MASTER_PORT",
                                                              "TORCHELASTIC_RESTART_COUNT",
                                                              "TORCHELASTIC_RUN_ID"};
  return std::find(kRound.begin(), kRound.end(), name) != kRound.end();
}

std::string activation_message(const std::vector<std::string>& env) {
  std::string m(kMagic);
  for (const std::string& e : env) {
    m += e;
    m += '\0';
  }
  return m;
}

Result<std::vector<std::string>> parse_activation(std::string_view message) {
  if (message.substr(0, kMagic.size()) != kMagic)
    return Status::InvalidArgument("the activation does not start with '" +
                                   std::string(kMagic.substr(0, kMagic.size() - 1)) + "'");
  message.remove_prefix(kMagic.size());
  std::vector<std::string> env;
  while (!message.empty()) {
    const size_t end = message.find('\0');
    if (end == std::string_view::npos)
      return Status::InvalidArgument("the activation's last entry has no terminating NUL");
    std::string_view entry = message.substr(0, end);
    const size_t eq = entry.find('=');
    if (eq == 0 || eq == std::string_view::npos)
      return Status::InvalidArgument("activation entry '" + std::string(entry.substr(0, 64)) +
                                     "' is not NAME=value");
    env.emplace_back(entry);
    message.remove_prefix(end + 1);
  }
  return env;
}

void await_activation_if_standby() {
  const char* fd_text = std::getenv(kStandbyFdVariable);
  if (fd_text == nullptr) return;
  char* end = nullptr;
  const long fd = std::strtol(fd_text, &end, 10);
  if (end == fd_text || *end != '\0' || fd < 0 || fd > 1 << 20)
    die(std::string(kStandbyFdVariable) + "='" + fd_text + "' is not a descriptor");
  char name[17] = {};
  ::prctl(PR_GET_NAME, name);
  ::prctl(PR_SET_NAME, kStandbyProcessName);
  if (const char* p = std::getenv(kStandbyPrefaultVariable)) {
    const long long bytes = std::atoll(p);
    // Only when freed memory stays in the heap; otherwise the pages would go straight back.
    // Blocks of 256 MiB (below the 1 GiB mmap threshold), all held, then all freed: they
    // coalesce at the top of the heap.
    if (bytes > 0 && bytes <= (64ll << 30) && core::keep_freed_memory().keeps_freed) {
      std::vector<void*> blocks;
      for (long long left = bytes; left > 0; left -= 256ll << 20) {
        const size_t n = size_t(std::min(left, 256ll << 20));
        void* b = std::malloc(n);
        if (b == nullptr) break;
        // One write per page, through volatile: a memset of memory freed unread is optimized
        // away together with the malloc and the free.
        volatile char* page = static_cast<volatile char*>(b);
        for (size_t off = 0; off < n; off += 4096) page[off] = 0;
        blocks.push_back(b);
      }
      for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) std::free(*it);
    }
  }
  std::string message;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(int(fd), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      die("reading the activation from descriptor " + std::string(fd_text) + ": " +
          std::strerror(errno));
    if (n == 0) break;
    message.append(buf, size_t(n));
    if (message.size() > kMaxMessage) die("the activation is larger than 16 MiB");
  }
  if (message.empty()) std::_Exit(0);  // retired by the agent
  auto env = parse_activation(message);
  if (!env.ok()) die(env.status().message());
  ::clearenv();
  for (const std::string& e : *env) {
    const size_t eq = e.find('=');
    ::setenv(e.substr(0, eq).c_str(), e.c_str() + eq + 1, 1);
  }
  ::prctl(PR_SET_NAME, name);
  // The acknowledgement: the agent starts the rank afresh if it does not come.
  ssize_t ignored = ::send(int(fd), "k", 1, MSG_NOSIGNAL);
  (void)ignored;
  ::close(int(fd));
}

struct StandbyPool::Standby {
  int local_rank = 0;
  std::vector<std::string> argv;
  std::vector<std::string> stable_env;
  std::unique_ptr<ProcessHandle> process;
  UniqueFd activation;  // the agent's end of the socket
};

StandbyPool::StandbyPool() = default;
StandbyPool::~StandbyPool() { clear(); }

void StandbyPool::clear() {
  for (auto& s : standbys_) s->activation.reset();  // retire: each exits 0 on its own
  // One deadline for all of them; then whatever is left is killed (all at once) and reaped.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (auto& s : standbys_) {
    const double left =
        std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
    s->process->wait(std::max(0.0, left));
  }
  for (auto& s : standbys_) s->process->signal_group(SIGKILL);
  standbys_.clear();  // each handle reaps its process
}

pid_t StandbyPool::pid(int local_rank) const {
  for (const auto& s : standbys_)
    if (s->local_rank == local_rank) return s->process->pid();
  return 0;
}

void StandbyPool::fill(const std::vector<WorkerSpec>& specs,
                       const std::vector<int64_t>& prefault_bytes) {
  for (const WorkerSpec& spec : specs) {
    if (pid(spec.local_rank) != 0) continue;
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      spdlog::warn("no standby for local rank {}: socketpair: {}", spec.local_rank,
                   std::strerror(errno));
      continue;
    }
    UniqueFd mine(sv[0]), theirs(sv[1]);
    const timeval send_timeout{10, 0};  // a standby stuck before main must not stall the agent
    ::setsockopt(mine.get(), SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout));
    auto s = std::make_unique<Standby>();
    s->local_rank = spec.local_rank;
    s->argv = spec.argv;
    s->stable_env = stable_part(spec.env);
    SpawnOptions so;
    so.argv = spec.argv;
    so.env = s->stable_env;
    so.env.push_back(std::string(kStandbyFdVariable) + "=3");
    if (size_t(spec.local_rank) < prefault_bytes.size() &&
        prefault_bytes[size_t(spec.local_rank)] > 0)
      so.env.push_back(std::string(kStandbyPrefaultVariable) + "=" +
                       std::to_string(prefault_bytes[size_t(spec.local_rank)]));
    so.child_fd3 = theirs.get();
    auto process = ProcessHandle::Spawn(so);
    if (!process.ok()) {
      spdlog::warn("no standby for local rank {}: {}", spec.local_rank,
                   process.status().ToString());
      continue;
    }
    s->process = std::move(process).value();
    s->activation = std::move(mine);
    spdlog::debug("standby for local rank {}: pid {}", spec.local_rank, s->process->pid());
    standbys_.push_back(std::move(s));
  }
}

std::unique_ptr<ProcessHandle> StandbyPool::take(const WorkerSpec& spec) {
  auto it = std::find_if(standbys_.begin(), standbys_.end(),
                         [&](const auto& s) { return s->local_rank == spec.local_rank; });
  if (it == standbys_.end()) return nullptr;
  std::unique_ptr<Standby> s = std::move(*it);
  standbys_.erase(it);
  if (auto status = s->process->try_reap()) {
    spdlog::warn("the standby of local rank {} (pid {}) had ended ({}); starting the rank afresh",
                 spec.local_rank, s->process->pid(), status->ToString());
    return nullptr;
  }
  // A rebuilt or replaced binary: the standby runs the old image.
  std::error_code ec;
  const std::string image =
      std::filesystem::read_symlink("/proc/" + std::to_string(s->process->pid()) + "/exe", ec)
          .string();
  if (!ec && image.size() > 10 && image.compare(image.size() - 10, 10, " (deleted)") == 0) {
    spdlog::info(
        "the standby of local rank {} runs a binary since replaced; starting the rank "
        "afresh",
        spec.local_rank);
    return nullptr;
  }
  if (s->argv != spec.argv || s->stable_env != stable_part(spec.env)) {
    spdlog::info(
        "the standby of local rank {} was started for another command or environment; "
        "starting the rank afresh",
        spec.local_rank);
    return nullptr;  // ~Standby: the socket closes (retired), the handle kills and reaps it
  }
  const std::string message = activation_message(spec.env);
  std::string_view left = message;
  while (!left.empty()) {
    const ssize_t n = ::send(s->activation.get(), left.data(), left.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      spdlog::warn(
          "could not activate the standby of local rank {} (pid {}): {}; starting the "
          "rank afresh",
          spec.local_rank, s->process->pid(), std::strerror(errno));
      return nullptr;
    }
    left.remove_prefix(size_t(n));
  }
  // End of the message; then wait for the acknowledgement, which comes within a millisecond
  // or so from a parked standby (one that died meanwhile would fail the round at once).
  ::shutdown(s->activation.get(), SHUT_WR);
  pollfd p{s->activation.get(), POLLIN, 0};
  char ack = 0;
  if (::poll(&p, 1, 5000) <= 0 || ::recv(s->activation.get(), &ack, 1, 0) != 1 || ack != 'k') {
    spdlog::warn(
        "the standby of local rank {} (pid {}) did not acknowledge its activation; "
        "starting the rank afresh",
        spec.local_rank, s->process->pid());
    return nullptr;
  }
  s->activation.reset();
  return std::move(s->process);
}

}  // namespace cairn::elastic
