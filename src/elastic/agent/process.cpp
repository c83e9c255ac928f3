// Child processes: fork/exec into a new process group, output pipes, group signals, reaping.
#include "cairn/elastic/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

namespace cairn::elastic {
namespace {

Status errno_status(const std::string& what) {
  return Status::IoError(what + ": " + std::strerror(errno));
}

Result<std::pair<UniqueFd, UniqueFd>> make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return errno_status("cannot create a pipe");
  return std::make_pair(UniqueFd(fds[0]), UniqueFd(fds[1]));
}

ExitStatus from_siginfo(const siginfo_t& info) {
  if (info.si_code == CLD_EXITED) return ExitStatus::Exited(info.si_status);
  return ExitStatus::Signaled(info.si_status);
}

int open_pidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  long fd = ::syscall(SYS_pidfd_open, pid, 0);
  if (fd >= 0) {
    ::fcntl(int(fd), F_SETFD, FD_CLOEXEC);
    return int(fd);
  }
#endif
  return -1;
}

// Runs in the child between fork and exec: only async-signal-safe calls, no allocation.
[[noreturn]] void exec_child(const char* path, char* const* argv, char* const* envp, int out_w,
                             int err_w, int fd3, int status_w, pid_t parent) {
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  for (int s = 1; s < NSIG; ++s)
    if (s != SIGKILL && s != SIGSTOP) ::sigaction(s, &dfl, nullptr);
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);  // the agent died before prctl took effect
  int devnull = ::open("/dev/null", O_RDONLY);
  if (devnull >= 0 && devnull != 0) ::dup2(devnull, 0);
  if (out_w >= 0) ::dup2(out_w, 1);
  if (err_w >= 0) ::dup2(err_w, 2);
  unsigned first_closed = 3;
  if (fd3 >= 0) {    // Spawn keeps fd3 above 3, so no descriptor still needed is overwritten
    ::dup2(fd3, 3);  // dup2 clears FD_CLOEXEC on the copy
    first_closed = 4;
  }
#ifdef SYS_close_range
  ::syscall(SYS_close_range, first_closed, ~0U, CLOSE_RANGE_CLOEXEC);
#endif
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(path, argv, envp);
  int e = errno;
  ssize_t ignored = ::write(status_w, &e, sizeof(e));
  (void)ignored;
  ::_exit(127);
}

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
  if (this != &o) reset(o.release());
  return *this;
}

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Result<std::unique_ptr<ProcessHandle>> ProcessHandle::Spawn(const SpawnOptions& options) {
  if (options.argv.empty()) return Status::InvalidArgument("empty command");
  const std::string& path = options.argv[0];
  std::vector<char*> argv, envp;
  for (const std::string& a : options.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const std::string& e : options.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  UniqueFd out_r, out_w, err_r, err_w;
  if (options.capture_output) {
    CAIRN_ASSIGN_OR_RETURN(auto out, make_pipe());
    CAIRN_ASSIGN_OR_RETURN(auto err, make_pipe());
    out_r = std::move(out.first);
    out_w = std::move(out.second);
    err_r = std::move(err.first);
    err_w = std::move(err.second);
  }
  CAIRN_ASSIGN_OR_RETURN(auto status_pipe, make_pipe());
  // The child's descriptor 3, first copied above every descriptor the child rearranges (the
  // status pipe's write end too: it must survive the dup2 onto 3).
  UniqueFd fd3;
  if (options.child_fd3 >= 0) {
    status_pipe.second.reset(::fcntl(status_pipe.second.get(), F_DUPFD_CLOEXEC, 10));
    if (!status_pipe.second.valid()) return errno_status("cannot duplicate a pipe");
    fd3.reset(::fcntl(options.child_fd3, F_DUPFD_CLOEXEC, 10));
    if (!fd3.valid()) return errno_status("cannot duplicate the child's descriptor 3");
  }

  // Block signals across fork so no handler of the agent runs in the child before exec.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0)
    exec_child(path.c_str(), argv.data(), envp.data(), out_w.get(), err_w.get(), fd3.get(),
               status_pipe.second.get(), parent);
  int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) {
    errno = fork_errno;
    return errno_status("cannot fork for '" + path + "'");
  }
  ::setpgid(pid, pid);  // also done by the child; whichever runs first wins
  out_w.reset();
  err_w.reset();
  fd3.reset();
  status_pipe.second.reset();

  std::unique_ptr<ProcessHandle> h(new ProcessHandle());
  h->pid_ = pid;
  h->out_ = std::move(out_r);
  h->err_ = std::move(err_r);

  // The status pipe closes on exec (success) or carries exec's errno (failure).
  pollfd pfd{status_pipe.first.get(), POLLIN, 0};
  int rc;
  do {
    rc = ::poll(&pfd, 1, int(options.exec_timeout_s * 1000));
  } while (rc < 0 && errno == EINTR);
  if (rc == 0)
    return Status::Timeout("'" + path + "' did not start within " +
                           std::to_string(options.exec_timeout_s) + " s");
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(status_pipe.first.get(), &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  if (n == sizeof(child_errno)) {
    h->wait(options.exec_timeout_s);
    std::string msg = "cannot execute '" + path + "': " + std::strerror(child_errno);
    return child_errno == ENOENT ? Status::NotFound(msg) : Status::IoError(msg);
  }
  h->pidfd_.reset(open_pidfd(pid));
  for (int fd : {h->out_.get(), h->err_.get()})
    if (fd >= 0) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  return h;
}

ProcessHandle::~ProcessHandle() {
  if (pid_ <= 0 || status_) return;
  ::kill(-pid_, SIGKILL);
  if (!wait(5.0)) spdlog::warn("process {} did not exit after SIGKILL; leaving it unreaped", pid_);
}

void ProcessHandle::signal_group(int signal) {
  if (pid_ > 0 && !status_) ::kill(-pid_, signal);
}

std::optional<ExitStatus> ProcessHandle::try_reap() {
  if (status_ || pid_ <= 0) return status_;
  siginfo_t info;
  std::memset(&info, 0, sizeof(info));
  // Peek without reaping: while the child is a zombie its pid and group cannot be reused, so
  // the group kill below cannot hit an unrelated process.
  if (::waitid(P_PID, pid_, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0)
    return std::nullopt;
  ::kill(-pid_, SIGKILL);
  std::memset(&info, 0, sizeof(info));
  while (::waitid(P_PID, pid_, &info, WEXITED) != 0 && errno == EINTR) {
  }
  status_ = from_siginfo(info);
  pidfd_.reset();
  return status_;
}

std::optional<ExitStatus> ProcessHandle::wait(double timeout_s) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(std::max(0.0, timeout_s)));
  while (true) {
    if (auto s = try_reap()) return s;
    auto left = std::chrono::duration<double>(deadline - Clock::now()).count();
    if (left <= 0) return std::nullopt;
    if (pidfd_.valid()) {
      pollfd pfd{pidfd_.get(), POLLIN, 0};
      ::poll(&pfd, 1, std::max(1, int(left * 1000)));
    } else {
      std::this_thread::sleep_for(std::chrono::duration<double>(std::min(left, 0.01)));
    }
  }
}

}  // namespace cairn::elastic
