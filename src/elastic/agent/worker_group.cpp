// Worker group: spawn, forward output line by line, observe exits, stop with a grace period.
#include "cairn/elastic/worker_group.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>

#include "cairn/elastic/process.h"
#include "cairn/elastic/standby.h"
#include "elastic/agent/line_buffer_impl.h"

namespace cairn::elastic {
namespace {

using Clock = std::chrono::steady_clock;

Clock::time_point deadline_after(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(std::max(0.0, seconds)));
}

double seconds_until(Clock::time_point t) {
  return std::chrono::duration<double>(t - Clock::now()).count();
}

int to_poll_ms(double seconds) {
  if (seconds <= 0) return 0;
  return int(std::min(std::ceil(seconds * 1000.0), 3.6e6));
}

// Writes all of `data`; output that cannot be written (closed terminal, full disk) is dropped.
void write_all(int fd, std::string_view data) {
  while (fd >= 0 && !data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data.remove_prefix(size_t(n));
  }
}

}  // namespace

struct WorkerGroup::Worker {
  WorkerSpec spec;
  std::unique_ptr<ProcessHandle> process;
  UniqueFd log;
  std::string log_path;
  std::string prefix;  // "[rank R] "
  LineBuffer buffers[2];
  LineTail tail;
  bool exit_reported = false;

  explicit Worker(size_t tail_lines) : tail(tail_lines) {}
  int fd(int stream) const { return stream == 0 ? process->stdout_fd() : process->stderr_fd(); }
};

WorkerGroup::WorkerGroup(const WorkerGroupOptions& options) : options_(options) {}

WorkerGroup::~WorkerGroup() = default;  // each ProcessHandle kills and reaps its worker

Result<std::unique_ptr<WorkerGroup>> WorkerGroup::Start(std::vector<WorkerSpec> specs,
                                                        const WorkerGroupOptions& options,
                                                        StandbyPool* standbys) {
  std::unique_ptr<WorkerGroup> group(new WorkerGroup(options));
  for (WorkerSpec& spec : specs) {
    auto w = std::make_unique<Worker>(options.tail_lines);
    w->spec = std::move(spec);
    w->prefix = "[rank " + std::to_string(w->spec.rank) + "] ";
    if (!options.log_dir.empty()) {
      w->log_path = options.log_dir + "/worker-" + std::to_string(w->spec.rank) + ".log";
      w->log.reset(::open(w->log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
      if (!w->log.valid())
        return Status::IoError("cannot open " + w->log_path + ": " + std::strerror(errno));
      if (!options.log_header.empty()) write_all(w->log.get(), options.log_header + "\n");
    }
    if (standbys != nullptr) w->process = standbys->take(w->spec);
    if (w->process) {
      ++group->from_standby_;
    } else {
      SpawnOptions so;
      so.argv = w->spec.argv;
      so.env = w->spec.env;
      auto process = ProcessHandle::Spawn(so);
      if (!process.ok())
        return process.status().WithContext("starting rank " + std::to_string(w->spec.rank));
      w->process = std::move(process).value();
    }
    group->workers_.push_back(std::move(w));
  }
  return group;
}

int WorkerGroup::num_running() const {
  return int(std::count_if(workers_.begin(), workers_.end(),
                           [](const auto& w) { return !w->process->reaped(); }));
}

void WorkerGroup::signal_all(int signal) {
  for (auto& w : workers_) w->process->signal_group(signal);
}

void WorkerGroup::emit_line(Worker& w, int stream, std::string_view line) {
  std::string text(line);
  text += '\n';
  write_all(w.log.get(), text);
  const int echo = stream == 0 ? options_.echo_stdout_fd : options_.echo_stderr_fd;
  if (echo >= 0) write_all(echo, w.prefix + text);
  w.tail.push(line);
}

void WorkerGroup::close_stream(Worker& w, int stream) {
  w.buffers[stream].flush([&](std::string_view l) { emit_line(w, stream, l); });
  if (stream == 0)
    w.process->close_stdout();
  else
    w.process->close_stderr();
}

void WorkerGroup::read_stream(Worker& w, int stream) {
  char buf[65536];
  // Bounded per call so one chatty worker cannot starve the others; the rest comes next poll.
  for (int i = 0; i < 16; ++i) {
    const int fd = w.fd(stream);
    if (fd < 0) return;
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {  // end of stream or a read error: either way nothing more comes
      close_stream(w, stream);
      return;
    }
    w.buffers[stream].feed(std::string_view(buf, size_t(n)),
                           [&](std::string_view l) { emit_line(w, stream, l); });
  }
}

void WorkerGroup::collect_exits(std::vector<WorkerExit>* out) {
  for (auto& w : workers_) {
    if (w->exit_reported) continue;
    auto status = w->process->try_reap();
    if (!status) continue;
    // The worker is gone and its group killed: what it wrote is already in the pipes.
    for (int stream = 0; stream < 2; ++stream)
      for (int i = 0; i < 64 && w->fd(stream) >= 0; ++i) read_stream(*w, stream);
    w->exit_reported = true;
    out->push_back({w->spec.rank, w->spec.local_rank, w->process->pid(), *status});
  }
}

std::vector<WorkerExit> WorkerGroup::poll(double timeout_s) {
  std::vector<pollfd> fds;
  std::vector<std::pair<Worker*, int>> owners;  // stream 0/1, or 2 for the exit descriptor
  for (auto& w : workers_) {
    for (int stream = 0; stream < 2; ++stream) {
      if (w->fd(stream) < 0) continue;
      fds.push_back({w->fd(stream), POLLIN, 0});
      owners.emplace_back(w.get(), stream);
    }
    if (!w->exit_reported && w->process->exit_fd() >= 0) {
      fds.push_back({w->process->exit_fd(), POLLIN, 0});
      owners.emplace_back(w.get(), 2);
    }
  }
  // EINTR (a signal to the agent) simply returns early; the caller looks at its flags.
  int rc = ::poll(fds.data(), fds.size(), to_poll_ms(timeout_s));
  if (rc > 0) {
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents == 0 || owners[i].second == 2) continue;
      read_stream(*owners[i].first, owners[i].second);
    }
  }
  std::vector<WorkerExit> exits;
  collect_exits(&exits);
  return exits;
}

std::vector<WorkerExit> WorkerGroup::stop(int signal, double grace_s,
                                          const std::function<bool()>& hurry) {
  std::vector<WorkerExit> exits;
  collect_exits(&exits);
  signal_all(signal);
  const auto deadline = deadline_after(grace_s);
  while (num_running() > 0 && seconds_until(deadline) > 0 && !(hurry && hurry())) {
    for (WorkerExit& e : poll(std::min(seconds_until(deadline), 0.1))) exits.push_back(e);
  }
  if (num_running() > 0) {
    signal_all(SIGKILL);
    for (auto& w : workers_) w->process->wait(5.0);
    collect_exits(&exits);
  }
  drain(1.0);
  return exits;
}

void WorkerGroup::drain(double timeout_s) {
  const auto deadline = deadline_after(timeout_s);
  while (seconds_until(deadline) > 0) {
    std::vector<pollfd> fds;
    std::vector<std::pair<Worker*, int>> owners;
    for (auto& w : workers_)
      for (int stream = 0; stream < 2; ++stream)
        if (w->fd(stream) >= 0) {
          fds.push_back({w->fd(stream), POLLIN, 0});
          owners.emplace_back(w.get(), stream);
        }
    if (fds.empty()) return;
    if (::poll(fds.data(), fds.size(), to_poll_ms(seconds_until(deadline))) <= 0) continue;
    for (size_t i = 0; i < fds.size(); ++i)
      if (fds[i].revents != 0) read_stream(*owners[i].first, owners[i].second);
  }
  for (auto& w : workers_)
    for (int stream = 0; stream < 2; ++stream)
      if (w->fd(stream) >= 0) close_stream(*w, stream);
}

pid_t WorkerGroup::pid(int local_rank) const {
  for (const auto& w : workers_)
    if (w->spec.local_rank == local_rank && !w->process->reaped()) return w->process->pid();
  return 0;
}

void WorkerGroup::signal_one(int local_rank, int signal) {
  for (auto& w : workers_)
    if (w->spec.local_rank == local_rank && !w->process->reaped()) w->process->signal_group(signal);
}

std::vector<std::string> WorkerGroup::tail(int local_rank) const {
  for (const auto& w : workers_)
    if (w->spec.local_rank == local_rank) return w->tail.lines();
  return {};
}

std::string WorkerGroup::log_path(int local_rank) const {
  for (const auto& w : workers_)
    if (w->spec.local_rank == local_rank) return w->log_path;
  return {};
}

}  // namespace cairn::elastic
