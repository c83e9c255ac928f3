// bench/shard_bench: the master's shard service under load from client processes, as training
// puts it under load. The master runs in a process of its own (its gRPC threads); every client
// is a forked process with its own channel, one thread, as every training rank is. Two paths:
//
//   1. raw GetShards: each client loops GetShards(done = the shards it got last, want = W).
//      Requests/s, shards/s and the latency of one request. Target: at least 10,000 requests/s.
//   2. the path training takes (`data.sharding: dynamic`, train/dynamic_data.cpp): `world` ranks
//      and a step quota of `quota` shards per step. Each rank calls ShardClient::next_for_step
//      (ShardState::acquire_for_step on the master) until the step has no shard left for it,
//      reports the shards it took as done (flush, before the step's collective), then all
//      ranks meet at a barrier (the step's collective). With "snap" rank 0 also takes the
//      service's snapshot after every step and the others wait for it, as a memory checkpoint
//      every step does (ckpt.memory_interval=1). No compute: steps/s is the most the service
//      lets training do, and ms/step what it adds to every step. Every step must hand out
//      exactly `quota` shards, every rank at least one; the bench fails otherwise.
//
// usage: shard_bench [SECONDS per configuration, default 3]
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "cairn/elastic/master_client.h"
#include "cairn/elastic/master_server.h"
#include "cairn/elastic/shard_client.h"

using namespace cairn;
using namespace cairn::elastic;

namespace {

constexpr char kToken[] = "bench-token";
constexpr char kRawDataset[] = "raw";
constexpr int kMaxSteps = 1 << 18;  // step counters in shared memory (a step index wraps)

using Clock = std::chrono::steady_clock;
double micros_since(Clock::time_point t) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t).count();
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "shard_bench: %s\n", what.c_str());
  std::fflush(stderr);
  _exit(1);
}

// Shared by the parent and the clients of one configuration (an anonymous shared mapping made
// before the fork).
struct Shared {
  std::atomic<int> ready{0};
  std::atomic<int> go{0};
  std::atomic<int> stop{0};
  std::atomic<int> quit{0};  // the step path's decision to stop, taken at a barrier
  pthread_barrier_t barrier;
  std::atomic<int> taken[kMaxSteps];       // shards handed out per step, over the ranks
  std::atomic<int> ranks_with[kMaxSteps];  // ranks that took at least one
};

// What a client sends back through its pipe.
struct ClientResult {
  int64_t shards = 0;
  int64_t steps = 0;                // the step path
  double seconds = 0;               // from go to the end of its loop
  std::vector<double> latency_us;   // every request
  std::vector<double> snapshot_us;  // rank 0's snapshots
};

void write_all(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) _exit(3);
    c += w;
    n -= size_t(w);
  }
}

bool read_all(int fd, void* p, size_t n) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    ssize_t r = ::read(fd, c, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    c += r;
    n -= size_t(r);
  }
  return true;
}

void send_result(int fd, const ClientResult& r) {
  write_all(fd, &r.shards, sizeof r.shards);
  write_all(fd, &r.steps, sizeof r.steps);
  write_all(fd, &r.seconds, sizeof r.seconds);
  for (const auto* v : {&r.latency_us, &r.snapshot_us}) {
    const uint64_t n = v->size();
    write_all(fd, &n, sizeof n);
    write_all(fd, v->data(), n * sizeof(double));
  }
}

bool receive_result(int fd, ClientResult* r) {
  if (!read_all(fd, &r->shards, sizeof r->shards) || !read_all(fd, &r->steps, sizeof r->steps) ||
      !read_all(fd, &r->seconds, sizeof r->seconds))
    return false;
  for (auto* v : {&r->latency_us, &r->snapshot_us}) {
    uint64_t n = 0;
    if (!read_all(fd, &n, sizeof n)) return false;
    v->resize(n);
    if (!read_all(fd, v->data(), n * sizeof(double))) return false;
  }
  return true;
}

MasterClientOptions client_options(const std::string& address) {
  MasterClientOptions o;
  o.address = address;
  o.job_token = kToken;
  return o;
}

// The master in a child process: serves until the parent closes `control` (or dies).
// Returns the child's pid; *address is the master's.
pid_t start_master(std::string* address, int* control) {
  int addr_pipe[2], ctl_pipe[2];
  if (::pipe(addr_pipe) != 0 || ::pipe(ctl_pipe) != 0) die("pipe failed");
  pid_t pid = ::fork();
  if (pid < 0) die("fork failed");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::close(addr_pipe[0]);
    ::close(ctl_pipe[1]);
    MasterServerOptions mo;
    mo.listen_address = "127.0.0.1:0";
    mo.job_token = kToken;
    auto server = MasterServer::Start(mo);
    if (!server.ok()) die(server.status().ToString());
    {
      // The raw path's dataset: enough one-sample shards for every raw configuration.
      auto c = MasterClient::Open(client_options((*server)->address()));
      if (!c.ok()) die(c.status().ToString());
      ShardParams p;
      p.num_samples = int64_t(1) << 23;
      p.shard_size = 1;
      p.num_epochs = 1;
      p.lease_s = 600;
      auto created = (*c)->create_dataset(kRawDataset, p);
      if (!created.ok()) die(created.status().ToString());
    }
    const std::string a = (*server)->address() + "\n";
    write_all(addr_pipe[1], a.data(), a.size());
    ::close(addr_pipe[1]);
    char b;
    while (::read(ctl_pipe[0], &b, 1) != 0 && errno == EINTR) {
    }
    _exit(0);  // the server's threads go with the process
  }
  ::close(addr_pipe[1]);
  ::close(ctl_pipe[0]);
  std::string a;
  char ch;
  while (read_all(addr_pipe[0], &ch, 1) && ch != '\n') a += ch;
  ::close(addr_pipe[0]);
  if (a.empty()) die("the master did not start");
  *address = a;
  *control = ctl_pipe[1];
  return pid;
}

void wait_for_go(Shared* sh) {
  sh->ready.fetch_add(1);
  while (sh->go.load() == 0) std::this_thread::sleep_for(std::chrono::microseconds(100));
}

// A raw client: GetShards in a loop.
ClientResult raw_client(const std::string& address, Shared* sh, int index, int want) {
  auto c = MasterClient::Open(client_options(address));
  if (!c.ok()) die(c.status().ToString());
  const std::string worker = "w" + std::to_string(index);
  std::vector<Shard> done;
  if (auto b = (*c)->get_shards(kRawDataset, worker, done, 0); !b.ok())  // connect first
    die("GetShards failed: " + b.status().ToString());
  ClientResult r;
  r.latency_us.reserve(1 << 16);
  wait_for_go(sh);
  const auto t0 = Clock::now();
  while (sh->stop.load() == 0) {
    const auto t = Clock::now();
    auto b = (*c)->get_shards(kRawDataset, worker, done, want);
    r.latency_us.push_back(micros_since(t));
    if (!b.ok()) die("GetShards failed: " + b.status().ToString());
    r.shards += int64_t(b->shards.size());
    done = b->shards;
  }
  r.seconds = micros_since(t0) / 1e6;
  return r;
}

struct StepConfig {
  int world = 1;
  int quota = 8;
  bool snapshot = false;
};

// Rank `rank` of the step path: what the trainer does with DynamicData, minus the compute.
ClientResult step_client(const std::string& address, Shared* sh, int rank, const StepConfig& cfg,
                         const std::string& dataset) {
  ShardClientOptions co;
  co.client = client_options(address);
  co.dataset = dataset;
  co.worker = "rank-" + std::to_string(rank);
  co.params.shard_size = 4;  // micro_batch_size
  co.params.num_samples = 65536;
  co.params.num_epochs = 1000;
  co.params.seed = 1;
  co.params.lease_s = 600;  // as DynamicData
  co.params.max_attempts = 1000;
  co.prefetch = 1;
  auto client = ShardClient::Open(co);  // creates the dataset (or finds it), connects
  if (!client.ok()) die(client.status().ToString());
  ShardClient& c = **client;
  ClientResult r;
  r.latency_us.reserve(1 << 16);
  wait_for_go(sh);
  const auto t0 = Clock::now();
  for (int64_t step = 1;; ++step) {
    StepQuota q;
    q.step = step;
    q.rank = rank;
    q.world = cfg.world;
    q.quota = cfg.quota;
    std::vector<Shard> trained;
    for (;;) {
      const auto t = Clock::now();
      auto s = c.next_for_step(q);
      r.latency_us.push_back(micros_since(t));
      if (!s.ok()) die("next_for_step: " + s.status().ToString());
      if (!*s) break;
      trained.push_back(**s);
    }
    for (const Shard& s : trained) c.done(s, step);
    if (!trained.empty()) {
      const auto t = Clock::now();
      if (Status s = c.flush(); !s.ok()) die("flush: " + s.ToString());
      r.latency_us.push_back(micros_since(t));
    }
    sh->taken[step % kMaxSteps].fetch_add(int(trained.size()));
    if (!trained.empty()) sh->ranks_with[step % kMaxSteps].fetch_add(1);
    r.shards += int64_t(trained.size());
    // The step's collective (rank 0 snapshots only after every rank's completions are in).
    pthread_barrier_wait(&sh->barrier);
    if (cfg.snapshot && rank == 0) {
      const auto t = Clock::now();
      auto snap = c.snapshot(step);
      r.snapshot_us.push_back(micros_since(t));
      if (!snap.ok()) die("snapshot: " + snap.status().ToString());
    }
    // One decision for every rank: stop after this step or not (the broadcast of the
    // snapshot, when there is one).
    if (pthread_barrier_wait(&sh->barrier) == PTHREAD_BARRIER_SERIAL_THREAD)
      sh->quit.store(sh->stop.load());
    pthread_barrier_wait(&sh->barrier);
    r.steps = step;
    if (sh->quit.load()) break;
  }
  r.seconds = micros_since(t0) / 1e6;
  return r;
}

template <typename Body>
std::vector<ClientResult> run_clients(int n, double seconds, Shared* sh, Body body) {
  std::vector<pid_t> pids;
  std::vector<int> fds;
  for (int i = 0; i < n; ++i) {
    int p[2];
    if (::pipe(p) != 0) die("pipe failed");
    pid_t pid = ::fork();
    if (pid < 0) die("fork failed");
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::close(p[0]);
      send_result(p[1], body(i));
      _exit(0);  // no static destructors of the parent's state in a child
    }
    ::close(p[1]);
    pids.push_back(pid);
    fds.push_back(p[0]);
  }
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (sh->ready.load() < n) {
    if (Clock::now() > deadline) die("the clients did not connect within 120 s");
    int status;
    if (pid_t done = ::waitpid(-1, &status, WNOHANG); done > 0)
      die("a client exited before the start");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  sh->go.store(1);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  sh->stop.store(1);
  std::vector<ClientResult> out(static_cast<size_t>(n));
  bool ok = true;
  for (int i = 0; i < n; ++i) {
    ok = receive_result(fds[size_t(i)], &out[size_t(i)]) && ok;
    ::close(fds[size_t(i)]);
  }
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  if (!ok) die("a client failed");
  return out;
}

Shared* new_shared(int barrier_count) {
  void* m =
      ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) die("mmap failed");
  auto* sh = new (m) Shared();
  pthread_barrierattr_t attr;
  pthread_barrierattr_init(&attr);
  pthread_barrierattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_barrier_init(&sh->barrier, &attr, unsigned(barrier_count));
  pthread_barrierattr_destroy(&attr);
  return sh;
}

void free_shared(Shared* sh) {
  pthread_barrier_destroy(&sh->barrier);
  sh->~Shared();
  ::munmap(sh, sizeof(Shared));
}

struct Latency {
  double p50 = 0, p99 = 0;
  size_t n = 0;
};

Latency percentiles(std::vector<double> v) {
  Latency l;
  l.n = v.size();
  if (v.empty()) return l;
  std::sort(v.begin(), v.end());
  l.p50 = v[v.size() / 2];
  l.p99 = v[std::min(v.size() - 1, v.size() * 99 / 100)];
  return l;
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 3.0;
  if (!(seconds > 0)) {
    std::fprintf(stderr, "usage: shard_bench [SECONDS per configuration, default 3]\n");
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  std::string address;
  int control = -1;
  const pid_t master = start_master(&address, &control);
  std::printf("machine: %u cores; load average at start: ", std::thread::hardware_concurrency());
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    double l = 0;
    if (std::fscanf(f, "%lf", &l) == 1) std::printf("%.1f", l);
    std::fclose(f);
  }
  std::printf(
      "\nshard service on %s (a master process of its own); every client a process of "
      "its own, one thread, its own channel; %.1f s per configuration\n",
      address.c_str(), seconds);

  std::printf("\n1. raw GetShards(done = the shards got last, want):\n");
  std::printf("%8s %6s %12s %12s %10s %10s %14s\n", "clients", "want", "requests/s", "shards/s",
              "p50 us", "p99 us", "vs 10,000/s");
  for (int want : {1, 16})
    for (int clients : {1, 4, 16}) {
      Shared* sh = new_shared(clients);
      auto res = run_clients(clients, seconds, sh,
                             [&](int i) { return raw_client(address, sh, i, want); });
      free_shared(sh);
      std::vector<double> all;
      int64_t shards = 0;
      double took = 0;
      for (auto& r : res) {
        all.insert(all.end(), r.latency_us.begin(), r.latency_us.end());
        shards += r.shards;
        took = std::max(took, r.seconds);
      }
      const Latency l = percentiles(all);
      std::printf("%8d %6d %12.0f %12.0f %10.0f %10.0f %13.2fx\n", clients, want,
                  double(l.n) / took, double(shards) / took, l.p50, l.p99,
                  double(l.n) / took / 1e4);
      std::fflush(stdout);
    }

  std::printf(
      "\n2. the training path: per step, each rank next_for_step (acquire_for_step) until "
      "the step has none left for it, then flush its done shards; a barrier per step "
      "(the step's collective); snap: rank 0 snapshots the service every step; no compute\n");
  std::printf("%6s %6s %5s %10s %9s %12s %10s %10s %12s %12s\n", "ranks", "quota", "snap",
              "steps/s", "ms/step", "requests/s", "p50 us", "p99 us", "snapshot p50",
              "shards/step");
  int failures = 0;
  int config = 0;
  for (StepConfig cfg : {StepConfig{1, 8, false}, StepConfig{2, 8, false}, StepConfig{4, 16, false},
                         StepConfig{16, 32, false}, StepConfig{1, 8, true}, StepConfig{2, 8, true},
                         StepConfig{4, 16, true}, StepConfig{16, 32, true}}) {
    const std::string dataset = "steps-" + std::to_string(config++);
    Shared* sh = new_shared(cfg.world);
    auto res = run_clients(cfg.world, seconds, sh,
                           [&](int rank) { return step_client(address, sh, rank, cfg, dataset); });
    std::vector<double> all;
    for (auto& r : res) all.insert(all.end(), r.latency_us.begin(), r.latency_us.end());
    const int64_t steps = res[0].steps;
    const double took = res[0].seconds;
    // Every step: exactly `quota` shards, every rank at least one (quota >= world).
    int64_t bad = 0, total = 0;
    for (int64_t s = 1; s <= std::min<int64_t>(steps, kMaxSteps - 1); ++s) {
      const int t = sh->taken[s].load();
      total += t;
      if (t != cfg.quota || sh->ranks_with[s].load() != cfg.world) ++bad;
    }
    free_shared(sh);
    const Latency l = percentiles(all);
    const Latency snap = percentiles(res[0].snapshot_us);
    char snap_text[32] = "-";
    if (cfg.snapshot) std::snprintf(snap_text, sizeof snap_text, "%.0f us", snap.p50);
    char per_step[48];
    std::snprintf(per_step, sizeof per_step, "%.1f%s", steps ? double(total) / double(steps) : 0.0,
                  bad ? " WRONG" : "");
    std::printf("%6d %6d %5s %10.0f %9.2f %12.0f %10.0f %10.0f %12s %12s\n", cfg.world, cfg.quota,
                cfg.snapshot ? "yes" : "no", double(steps) / took,
                steps ? took * 1e3 / double(steps) : 0.0, double(l.n + snap.n) / took, l.p50, l.p99,
                snap_text, per_step);
    if (bad) {
      std::printf(
          "       %lld of %lld steps did not hand out exactly %d shards with every rank "
          "taking one\n",
          static_cast<long long>(bad), static_cast<long long>(steps), cfg.quota);
      ++failures;
    }
    std::fflush(stdout);
  }
  ::close(control);
  int status;
  ::waitpid(master, &status, 0);
  return failures ? 1 : 0;
}
