// bench/control_plane: one `cairn master` against thousands of simulated agents.
//
// The master is the real binary in a process of its own (so its CPU seconds and peak memory are
// its own). The simulated agents live in a few client processes; each process drives its share
// of the nodes with gRPC's callback API over one connection per 16 nodes, doing what the agent
// of `cairn run` does:
//
//   1. join: every node calls Join at once and polls it every 0.2 s until it holds a round
//      (`--nnodes N:N` and N + 1 nodes, so one is a spare, polling on);
//   2. heartbeats: every member heartbeats at 1 Hz for a while (p50/p99 latency, calls/s);
//   3. node loss: one member stops calling; the master drops it after the heartbeat timeout and
//      opens a round; the others learn it from their next heartbeat, join again, and the spare
//      takes the lost node's place. "re-form" is the time from the master opening that round
//      (its events.jsonl) to the last node holding it;
//   4. capacity: every member heartbeats at 4 Hz for a while (what the master sustains);
//   5. SIGTERM to the master under that load: seconds until it exits.
//
// Printed per N: the first full round, the heartbeats, the re-form, the master's CPU seconds
// and peak resident memory, the journal's bytes, and the client processes' CPU seconds (they
// share the machine's cores with the master).
//
// usage: control_plane [--cairn PATH] [--nodes 256,1024,...] [--clients P] [--heartbeat-s S]
//                      [--keep]   (keep the master's log, journal and events of each size)
//                      [--kill-master]  (kill -9 the master as the first node gets its round,
//                                        check that round's record is on disk, restart it from
//                                        its journal on the same port; the agents go on)
//                      [--check]  (exit 1 unless every phase completed: rounds formed and
//                                  re-formed, no call failed, SIGTERM obeyed within 2 s)
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cairn.grpc.pb.h"
#include "cairn/elastic/master_client.h"
#include "cairn/elastic/shard_client.h"

namespace {

constexpr char kToken[] = "control-plane-bench-token";
constexpr int kNodesPerChannel = 16;
constexpr double kJoinPollS = 0.2;
constexpr double kHeartbeatTimeoutS = 5;
constexpr int kBuckets = 160;  // latency histogram: 10% wide buckets from 10 us

enum Phase : int { kWait = 0, kJoin, kHeartbeat, kCapacity, kStop };

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "control_plane: %s\n", what.c_str());
  std::fflush(stderr);
  _exit(1);
}

int bucket_of(double seconds) {
  const double us = seconds * 1e6;
  if (us <= 10) return 0;
  return std::min(kBuckets - 1, int(std::log(us / 10) / std::log(1.1)) + 1);
}
double bucket_upper_s(int b) { return 10e-6 * std::pow(1.1, b); }

struct Histogram {
  std::atomic<int64_t> count[kBuckets];
  void add(double seconds) { count[bucket_of(seconds)].fetch_add(1, std::memory_order_relaxed); }
  int64_t total() const {
    int64_t n = 0;
    for (const auto& c : count) n += c.load();
    return n;
  }
  double quantile(double q) const {
    const int64_t n = total();
    if (n == 0) return 0;
    int64_t seen = 0;
    for (int b = 0; b < kBuckets; ++b) {
      seen += count[b].load();
      if (double(seen) >= q * double(n)) return bucket_upper_s(b);
    }
    return bucket_upper_s(kBuckets - 1);
  }
};

// Shared by the parent and the client processes (an anonymous shared mapping made before the
// forks), followed by per-node arrays.
struct Shared {
  std::atomic<int> ready{0};
  std::atomic<int> phase{kWait};
  std::atomic<int> dead{-1};        // the node told to stop calling
  std::atomic<int> terminating{0};  // the master was sent SIGTERM: failures are expected
  std::atomic<int64_t> joins{0}, heartbeats{0}, errors{0}, exhausted{0}, outstanding{0};
  std::atomic<double> client_cpu_s{0};
  Histogram join_latency, heartbeat_latency, capacity_latency;
  std::atomic<int64_t> capacity_calls{0};
  // the shard phase: ranks on the step-quota path
  pthread_barrier_t barrier;
  std::atomic<int> shard_ready{0}, shard_stop{0}, shard_quit{0};
  std::atomic<int64_t> shard_calls{0}, shard_steps{0};
  Histogram shard_latency;
  // per node: the round it holds (0: none) and when it got it (unix seconds)
  std::atomic<int64_t>* round() { return reinterpret_cast<std::atomic<int64_t>*>(this + 1); }
  std::atomic<double>* got_at(int nodes) {
    return reinterpret_cast<std::atomic<double>*>(round() + nodes);
  }
  static size_t bytes(int nodes) { return sizeof(Shared) + size_t(nodes) * 16; }
};

std::string node_id(int i) {
  char b[32];
  std::snprintf(b, sizeof b, "sim-%05d", i);
  return b;
}

// --- a client process: its share of the simulated agents -----------------------------------
class Clients {
 public:
  Clients(Shared* sh, int nodes, int process, int processes, const std::string& address)
      : sh_(sh), nodes_(nodes) {
    for (int i = process; i < nodes; i += processes) mine_.push_back(i);
    const size_t channels = (mine_.size() + kNodesPerChannel - 1) / kNodesPerChannel;
    for (size_t c = 0; c < channels; ++c) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      args.SetInt("cairn.bench.channel", int(c));
      auto ch = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
      if (!ch->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(30)))
        die("a client channel did not connect to " + address);
      stubs_.push_back(cairn::v1::Master::NewStub(ch));
    }
    state_.resize(size_t(nodes));
    for (size_t k = 0; k < mine_.size(); ++k)
      state_[size_t(mine_[k])].channel = k / kNodesPerChannel;
  }

  void run() {
    sh_->ready.fetch_add(1);
    while (sh_->phase.load() == kWait) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    {
      std::lock_guard<std::mutex> lock(mu_);
      const double now = unix_now();
      for (int i : mine_) due_.push({now, i});
    }
    while (sh_->phase.load() != kStop) {
      std::vector<int> fire;
      {
        std::unique_lock<std::mutex> lock(mu_);
        const double now = unix_now();
        while (!due_.empty() && due_.top().first <= now) {
          fire.push_back(due_.top().second);
          due_.pop();
        }
        if (fire.empty()) {
          const double wait = due_.empty() ? 0.005 : std::min(0.005, due_.top().first - now);
          cv_.wait_for(lock, std::chrono::duration<double>(std::max(wait, 0.0)));
          continue;
        }
      }
      for (int i : fire) call(i);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (sh_->outstanding.load() > 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    const double cpu = double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                       1e-6 * double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
    double cur = sh_->client_cpu_s.load();
    while (!sh_->client_cpu_s.compare_exchange_weak(cur, cur + cpu)) {
    }
  }

 private:
  struct Node {
    int64_t round = 0;
    size_t channel = 0;
  };
  template <class Req, class Resp>
  struct Call {
    grpc::ClientContext ctx;
    Req req;
    Resp resp;
    double sent = 0;
  };

  cairn::v1::Master::Stub* stub(int i) { return stubs_[state_[size_t(i)].channel].get(); }

  void schedule(int i, double at) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      due_.push({at, i});
    }
    cv_.notify_one();
  }

  // As MasterClient: the master's retry hint, 50 ms (jittered) when it had no thread free, else
  // the node's next poll.
  double retry_after_s(const grpc::ClientContext& ctx, const grpc::Status& s, double fallback) {
    if (s.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) return fallback;
    const auto& md = ctx.GetServerTrailingMetadata();
    auto it = md.find(cairn::elastic::kRetryAfterMetadataKey);
    thread_local std::mt19937 rng{std::random_device{}()};
    const double jitter = 1.0 + 0.5 * std::uniform_real_distribution<double>(-1, 1)(rng);
    if (it == md.end()) return 0.05 * jitter;
    return std::atof(std::string(it->second.data(), it->second.size()).c_str()) / 1000.0 * jitter;
  }

  void failed(const grpc::Status& s) {
    if (sh_->terminating.load()) return;
    if (sh_->errors.fetch_add(1) < 3)
      std::fprintf(stderr, "control_plane: a call failed: %d %s\n", int(s.error_code()),
                   s.error_message().c_str());
    if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) sh_->exhausted.fetch_add(1);
  }

  void call(int i) {
    if (sh_->dead.load() == i || sh_->phase.load() == kStop) return;
    Node& n = state_[size_t(i)];
    const double hz = sh_->phase.load() == kCapacity ? 4.0 : 1.0;
    sh_->outstanding.fetch_add(1);
    if (n.round == 0) {
      using JoinCall = Call<cairn::v1::JoinRequest, cairn::v1::JoinResponse>;
      auto* c = new JoinCall;
      c->ctx.AddMetadata(cairn::elastic::kJobTokenMetadataKey, kToken);
      c->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
      auto* spec = c->req.mutable_node();
      spec->set_node_id(node_id(i));
      spec->set_host("127.0.0.1");
      spec->set_nproc(8);
      spec->set_store_port(29500);
      spec->set_incarnation(1);
      c->req.set_last_round(sh_->round()[i].load() > 0 ? sh_->round()[i].load() : 0);
      c->req.set_only_self(true);
      c->sent = unix_now();
      stub(i)->async()->Join(&c->ctx, &c->req, &c->resp, [this, c, i, &n](grpc::Status s) {
        const double now = unix_now();
        sh_->joins.fetch_add(1);
        sh_->join_latency.add(now - c->sent);
        if (!s.ok()) {
          failed(s);
          schedule(i, now + retry_after_s(c->ctx, s, kJoinPollS));
        } else if (c->resp.has_round()) {
          n.round = c->resp.round().number();
          sh_->got_at(nodes_)[i].store(now);
          sh_->round()[i].store(n.round);
          schedule(i, now + 1.0);
        } else {
          schedule(i, now + kJoinPollS);
        }
        sh_->outstanding.fetch_sub(1);
        delete c;
      });
      return;
    }
    using HbCall = Call<cairn::v1::HeartbeatRequest, cairn::v1::HeartbeatResponse>;
    auto* c = new HbCall;
    c->ctx.AddMetadata(cairn::elastic::kJobTokenMetadataKey, kToken);
    c->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    c->req.set_node_id(node_id(i));
    c->req.set_round(n.round);
    c->req.set_last_step(100);
    c->sent = unix_now();
    const bool capacity = sh_->phase.load() == kCapacity;
    stub(i)->async()->Heartbeat(
        &c->ctx, &c->req, &c->resp, [this, c, i, &n, hz, capacity](grpc::Status s) {
          const double now = unix_now();
          if (!s.ok()) {
            failed(s);
            schedule(i, now + retry_after_s(c->ctx, s, 1.0 / hz));
          } else {
            sh_->heartbeats.fetch_add(1);
            (capacity ? sh_->capacity_latency : sh_->heartbeat_latency).add(now - c->sent);
            if (capacity) sh_->capacity_calls.fetch_add(1);
            if (c->resp.rejoin()) {
              n.round = 0;
              schedule(i, now);
            } else {
              schedule(i, std::max(now, c->sent + 1.0 / hz));
            }
          }
          sh_->outstanding.fetch_sub(1);
          delete c;
        });
  }

  Shared* sh_;
  int nodes_;
  std::vector<int> mine_;
  std::vector<std::unique_ptr<cairn::v1::Master::Stub>> stubs_;
  std::vector<Node> state_;
  std::mutex mu_;
  std::condition_variable cv_;
  using Due = std::pair<double, int>;
  std::priority_queue<Due, std::vector<Due>, std::greater<Due>> due_;
};

// --- a rank of the shard phase -----------------------------------------------------------------
// What the trainer does with `data.sharding: dynamic` (as bench/shard_bench's step path): take
// the step's shards (ShardClient::next_for_step) until none is left for this rank, report them
// done before the step's collective (a process-shared barrier), and go on to the next step.
constexpr int kRanks = 8;
constexpr int kQuota = 16;  // shards per step over the ranks

void shard_rank(Shared* sh, const std::string& address, int rank) {
  cairn::elastic::ShardClientOptions co;
  co.client.address = address;
  co.client.job_token = kToken;
  co.dataset = "control-plane";
  co.worker = "rank-" + std::to_string(rank);
  co.params.shard_size = 4;
  co.params.num_samples = 1 << 20;
  co.params.num_epochs = 1000;
  co.params.seed = 1;
  co.params.lease_s = 600;
  co.params.max_attempts = 1000;
  co.prefetch = 1;
  auto client = cairn::elastic::ShardClient::Open(co);
  if (!client.ok()) die("shard client: " + client.status().ToString());
  sh->shard_ready.fetch_add(1);
  pthread_barrier_wait(&sh->barrier);
  for (int64_t step = 1;; ++step) {
    cairn::elastic::StepQuota q{step, rank, kRanks, kQuota};
    std::vector<cairn::elastic::Shard> took;
    for (;;) {
      const double t = unix_now();
      auto shard = (*client)->next_for_step(q);
      sh->shard_latency.add(unix_now() - t);
      sh->shard_calls.fetch_add(1);
      if (!shard.ok()) die("next_for_step: " + shard.status().ToString());
      if (!*shard) break;
      took.push_back(**shard);
    }
    for (const auto& shard : took) (*client)->done(shard, step);
    if (!took.empty()) {
      const double t = unix_now();
      if (cairn::Status st = (*client)->flush(); !st.ok()) die("flush: " + st.ToString());
      sh->shard_latency.add(unix_now() - t);
      sh->shard_calls.fetch_add(1);
    }
    if (pthread_barrier_wait(&sh->barrier) == PTHREAD_BARRIER_SERIAL_THREAD) {
      sh->shard_quit.store(sh->shard_stop.load());
      sh->shard_steps.fetch_add(1);
    }
    pthread_barrier_wait(&sh->barrier);
    if (sh->shard_quit.load()) return;
  }
}

// --- the parent ------------------------------------------------------------------------------
struct Master {
  pid_t pid = -1;
  std::string address;
  std::string dir;
};

// The master on `port` (0: a free one); `fresh` empties `dir` first (else the master replays
// the journal there).
Master start_master(const std::string& cairn, const std::string& dir, int nodes, int port = 0,
                    bool fresh = true) {
  if (fresh) {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  int out[2];
  if (::pipe(out) != 0) die("pipe failed");
  pid_t pid = ::fork();
  if (pid < 0) die("fork failed");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::dup2(out[1], 1);
    const std::string log = dir + "/master.log";
    const int err = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (err >= 0) ::dup2(err, 2);
    ::setenv("CAIRN_JOB_TOKEN", kToken, 1);
    const std::string nn = std::to_string(nodes) + ":" + std::to_string(nodes);
    const std::string timeout = std::to_string(kHeartbeatTimeoutS);
    const std::string journal = dir + "/master.journal";
    const std::string run_dir = dir + "/run";
    const std::string port_arg = std::to_string(port);
    ::execl(cairn.c_str(), cairn.c_str(), "master", "--host", "127.0.0.1", "--port",
            port_arg.c_str(), "--nnodes", nn.c_str(), "--journal", journal.c_str(),
            "--heartbeat-timeout", timeout.c_str(), "--max-calls-per-s", "1000000000", "--run-dir",
            run_dir.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  ::close(out[1]);
  std::string line;
  char ch;
  while (::read(out[0], &ch, 1) == 1 && ch != '\n') line += ch;
  ::close(out[0]);
  const std::string key = "listening on ";
  const size_t at = line.find(key);
  if (at == std::string::npos) die("the master did not start (see " + dir + "/master.log)");
  Master m;
  m.pid = pid;
  m.address = line.substr(at + key.size(), line.find(' ', at + key.size()) - at - key.size());
  m.dir = dir;
  return m;
}

double master_cpu_s(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t close = s.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(s.substr(close + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i)
    if (i == 14 || i == 15) ticks += std::atof(field.c_str());
  return ticks / double(::sysconf(_SC_CLK_TCK));
}

double master_peak_mb(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;
  return 0;
}

// When the master opened round `number` (unix seconds), from its events.jsonl; 0 if not found.
double round_opened_at(const std::string& dir, int64_t number) {
  std::ifstream f(dir + "/run/events.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.value("event", "") == "master_round_opened" &&
        j.value("number", int64_t(0)) == number)
      return j.value("time", 0.0);
  }
  return 0;
}

// Runs `body` in a child process that dies with this one; returns the child's pid.
template <class Body>
pid_t fork_child(Body&& body) {
  pid_t pid = ::fork();
  if (pid < 0) die("fork failed");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    body();
    _exit(0);
  }
  return pid;
}

template <class Pred>
bool wait_until(Pred pred, double timeout_s) {
  const double end = unix_now() + timeout_s;
  while (!pred()) {
    if (unix_now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

struct Row {
  int nodes = 0;
  double first_round_s = -1, reform_s = -1, detect_s = -1;
  double hb_rate = 0, hb_p50_ms = 0, hb_p99_ms = 0;
  double cap_rate = 0, cap_p50_ms = 0, cap_p99_ms = 0;
  double join_p99_ms = 0;
  double shard_rate = 0, shard_p50_ms = 0, shard_p99_ms = 0;
  int64_t errors = 0, exhausted = 0;
  double master_cpu_s = 0, master_mb = 0, client_cpu_s = 0, sigterm_s = -1;
  // --kill-master: the master killed as the first node got its round, restarted from its
  // journal; whether that round was in the journal (it had been heard of), and whether the
  // restarted master listened again
  bool killed = false, round_was_durable = false;
  int64_t journal_bytes = 0;
};

// Whether the journal in `dir` holds the completion of round `number`.
bool journal_completes(const std::string& dir, int64_t number) {
  std::ifstream f(dir + "/master.journal");
  std::string line;
  while (std::getline(f, line)) {
    const size_t space = line.find(' ');
    if (space == std::string::npos) continue;
    auto j = nlohmann::json::parse(line.substr(space + 1), nullptr, false);
    if (j.is_object() && j.value("type", "") == "round_completed" &&
        j["round"].value("number", int64_t(0)) == number)
      return true;
  }
  return false;
}

Row run(const std::string& cairn, int n, int processes, double heartbeat_s, bool keep,
        bool kill_master) {
  Row row;
  row.nodes = n;
  const int total = n + 1;  // one spare
  const std::string dir = "/tmp/cairn-control-plane-" + std::to_string(::getpid());
  Master m = start_master(cairn, dir, n);
  void* mem = ::mmap(nullptr, Shared::bytes(total), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) die("mmap failed");
  auto* sh = new (mem) Shared();
  pthread_barrierattr_t attr;
  pthread_barrierattr_init(&attr);
  pthread_barrierattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_barrier_init(&sh->barrier, &attr, kRanks);
  pthread_barrierattr_destroy(&attr);
  std::vector<pid_t> clients;
  for (int p = 0; p < processes; ++p)
    clients.push_back(fork_child([&] {
      Clients c(sh, total, p, processes, m.address);
      c.run();
    }));
  if (!wait_until([&] { return sh->ready.load() == processes; }, 120))
    die("the client processes did not connect");

  auto holding = [&](int64_t min_round) {
    int k = 0;
    for (int i = 0; i < total; ++i) k += sh->round()[i].load() >= min_round ? 1 : 0;
    return k;
  };
  // 1. everybody joins at once
  const double t0 = unix_now();
  sh->phase.store(kJoin);
  if (kill_master && wait_until([&] { return holding(1) >= 1; }, 300)) {
    // A node heard of round 1: its record must be on disk. Kill -9, check, restart.
    ::kill(m.pid, SIGKILL);
    int status = 0;
    ::waitpid(m.pid, &status, 0);
    row.killed = true;
    row.round_was_durable = journal_completes(dir, 1);
    const std::string port = m.address.substr(m.address.rfind(':') + 1);
    m = start_master(cairn, dir, n, std::atoi(port.c_str()), /*fresh=*/false);
  }
  if (wait_until([&] { return holding(1) >= n; }, 300)) {
    double last = 0;
    for (int i = 0; i < total; ++i) last = std::max(last, sh->got_at(total)[i].load());
    row.first_round_s = last - t0;
  }
  // Calls failed while the killed master was down; the count starts again once it is back.
  if (row.killed) sh->errors.store(0);
  // 2. heartbeats at 1 Hz
  sh->phase.store(kHeartbeat);
  const int64_t hb0 = sh->heartbeats.load();
  const double th = unix_now();
  std::this_thread::sleep_for(std::chrono::duration<double>(heartbeat_s));
  row.hb_rate = double(sh->heartbeats.load() - hb0) / (unix_now() - th);
  row.hb_p50_ms = 1e3 * sh->heartbeat_latency.quantile(0.5);
  row.hb_p99_ms = 1e3 * sh->heartbeat_latency.quantile(0.99);
  // 3. a member stops calling; the spare takes its place
  int64_t r = 0;
  int victim = -1;
  for (int i = 0; i < total && victim < 0; ++i)
    if ((r = sh->round()[i].load()) > 0) victim = i;
  if (victim >= 0) {
    const double tk = unix_now();
    sh->dead.store(victim);
    sh->round()[victim].store(0);
    if (wait_until([&] { return holding(r + 1) >= n; }, 120)) {
      double last = 0;
      for (int i = 0; i < total; ++i)
        if (sh->round()[i].load() > r) last = std::max(last, sh->got_at(total)[i].load());
      const double opened = round_opened_at(dir, r + 1);
      if (opened > 0) {
        row.detect_s = opened - tk;
        row.reform_s = last - opened;
      }
    }
  }
  // 4. the shard phase, while every node heartbeats at 1 Hz
  {
    std::vector<pid_t> ranks;
    for (int r = 0; r < kRanks; ++r)
      ranks.push_back(fork_child([&] { shard_rank(sh, m.address, r); }));
    if (!wait_until([&] { return sh->shard_ready.load() == kRanks; }, 60))
      die("the shard ranks did not connect");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // past the first steps
    const int64_t c0 = sh->shard_calls.load();
    const double t = unix_now();
    std::this_thread::sleep_for(std::chrono::duration<double>(heartbeat_s));
    row.shard_rate = double(sh->shard_calls.load() - c0) / (unix_now() - t);
    sh->shard_stop.store(1);
    for (pid_t pid : ranks) {
      int status = 0;
      ::waitpid(pid, &status, 0);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("a shard rank failed");
    }
    row.shard_p50_ms = 1e3 * sh->shard_latency.quantile(0.5);
    row.shard_p99_ms = 1e3 * sh->shard_latency.quantile(0.99);
  }
  // 5. capacity: heartbeats at 4 Hz
  sh->phase.store(kCapacity);
  std::this_thread::sleep_for(std::chrono::seconds(1));  // the cadence settles
  const int64_t c0 = sh->capacity_calls.load();
  const double tc = unix_now();
  std::this_thread::sleep_for(std::chrono::duration<double>(heartbeat_s));
  row.cap_rate = double(sh->capacity_calls.load() - c0) / (unix_now() - tc);
  row.cap_p50_ms = 1e3 * sh->capacity_latency.quantile(0.5);
  row.cap_p99_ms = 1e3 * sh->capacity_latency.quantile(0.99);
  row.join_p99_ms = 1e3 * sh->join_latency.quantile(0.99);
  row.master_cpu_s = master_cpu_s(m.pid);
  row.master_mb = master_peak_mb(m.pid);
  // 6. SIGTERM under that load
  row.errors = sh->errors.load();
  row.exhausted = sh->exhausted.load();
  const double ts = unix_now();
  sh->terminating.store(1);
  ::kill(m.pid, SIGTERM);
  int status = 0;
  if (wait_until([&] { return ::waitpid(m.pid, &status, WNOHANG) == m.pid; }, 30))
    row.sigterm_s = unix_now() - ts;
  else
    ::kill(m.pid, SIGKILL), ::waitpid(m.pid, &status, 0);
  sh->phase.store(kStop);
  for (pid_t pid : clients) ::waitpid(pid, &status, 0);
  row.client_cpu_s = sh->client_cpu_s.load();
  pthread_barrier_destroy(&sh->barrier);
  struct stat st {};
  if (::stat((dir + "/master.journal").c_str(), &st) == 0) row.journal_bytes = st.st_size;
  sh->~Shared();
  ::munmap(mem, Shared::bytes(total));
  if (keep)
    std::printf("(kept %s: the master's log, journal and events)\n", dir.c_str());
  else
    std::filesystem::remove_all(dir);
  return row;
}

std::string seconds_or_dash(double s) {
  if (s < 0) return "-";
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", s);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  std::string cairn =
      (std::filesystem::path(argv[0]).parent_path().parent_path() / "bin" / "cairn").string();
  std::vector<int> sizes = {256, 1024, 2048, 4096, 8192};
  int processes = 4;
  double heartbeat_s = 5;
  bool keep = false, kill_master = false, check = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has = i + 1 < argc;
    if (a == "--cairn" && has) {
      cairn = argv[++i];
    } else if (a == "--nodes" && has) {
      sizes.clear();
      std::stringstream ss(argv[++i]);
      std::string t;
      while (std::getline(ss, t, ',')) sizes.push_back(std::atoi(t.c_str()));
    } else if (a == "--clients" && has) {
      processes = std::atoi(argv[++i]);
    } else if (a == "--keep") {
      keep = true;
    } else if (a == "--kill-master") {
      kill_master = true;
    } else if (a == "--check") {
      check = true;
    } else if (a == "--heartbeat-s" && has) {
      heartbeat_s = std::atof(argv[++i]);
    } else {
      std::fprintf(stderr,
                   "usage: control_plane [--cairn PATH] [--nodes 256,1024,...] [--clients P] "
                   "[--heartbeat-s S] [--keep] [--kill-master] [--check]\n");
      return 2;
    }
  }
  for (int n : sizes)
    if (n < 2 || n > 65536) die("--nodes: each size must be in 2..65536");
  if (processes < 1 || processes > 64 || !(heartbeat_s > 0))
    die("--clients 1..64, --heartbeat-s > 0");
  if (::access(cairn.c_str(), X_OK) != 0) die("no cairn binary at " + cairn + " (--cairn PATH)");
  rlimit fl{};
  if (::getrlimit(RLIMIT_NOFILE, &fl) == 0) {
    fl.rlim_cur = fl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &fl);
  }
  std::printf(
      "machine: %u cores; master: %s master --nnodes N:N --heartbeat-timeout %.0f, journal on "
      "%s; N + 1 simulated agents (one spare) in %d client processes sharing the cores, one "
      "connection per %d nodes; Join polled every %.1f s, heartbeats 1 Hz (%.0f s) then 4 Hz "
      "(%.0f s)\n\n",
      std::thread::hardware_concurrency(), cairn.c_str(), kHeartbeatTimeoutS, "/tmp", processes,
      kNodesPerChannel, kJoinPollS, heartbeat_s, heartbeat_s);
  std::vector<Row> rows;
  for (int n : sizes) {
    std::fprintf(stderr, "control_plane: %d nodes...\n", n);
    rows.push_back(run(cairn, n, processes, heartbeat_s, keep, kill_master));
    const Row& r = rows.back();
    std::fprintf(stderr, "control_plane: %d nodes: first round %s s, re-form %s s\n", n,
                 seconds_or_dash(r.first_round_s).c_str(), seconds_or_dash(r.reform_s).c_str());
  }
  std::printf("rounds (targets at 4,096 nodes: first round < 5 s, re-form after a loss < 5 s)\n");
  std::printf("%6s %10s %10s %10s %10s %8s\n", "nodes", "round s", "loss s", "re-form s",
              "join p99", "errors");
  for (const Row& r : rows)
    std::printf("%6d %10s %10s %10s %8.1fms %8lld\n", r.nodes,
                seconds_or_dash(r.first_round_s).c_str(), seconds_or_dash(r.detect_s).c_str(),
                seconds_or_dash(r.reform_s).c_str(), r.join_p99_ms,
                static_cast<long long>(r.errors));
  std::printf("\nload (targets: 10,000 heartbeats/s with p99 < 50 ms; 10,000 shard calls/s)\n");
  std::printf("%6s %10s %8s %8s %12s %8s %8s %12s %8s %8s\n", "nodes", "hb/s 1 Hz", "p50", "p99",
              "hb/s 4 Hz", "p50", "p99", "shard/s", "p50", "p99");
  for (const Row& r : rows)
    std::printf("%6d %10.0f %6.1fms %6.1fms %12.0f %6.1fms %6.1fms %12.0f %6.2fms %6.2fms\n",
                r.nodes, r.hb_rate, r.hb_p50_ms, r.hb_p99_ms, r.cap_rate, r.cap_p50_ms,
                r.cap_p99_ms, r.shard_rate, r.shard_p50_ms, r.shard_p99_ms);
  std::printf("\nthe master (target: under 1 GB at 8,192 nodes; SIGTERM honoured within 2 s)\n");
  std::printf("%6s %12s %10s %12s %14s %10s\n", "nodes", "master cpu s", "peak MB", "journal KB",
              "clients cpu s", "SIGTERM s");
  for (const Row& r : rows)
    std::printf("%6d %12.1f %10.0f %12.0f %14.1f %10s\n", r.nodes, r.master_cpu_s, r.master_mb,
                double(r.journal_bytes) / 1024.0, r.client_cpu_s,
                seconds_or_dash(r.sigterm_s).c_str());
  std::printf(
      "\nround s: from the burst of Joins to the last member holding the first round. loss s: "
      "from a member's last call to the master opening the next round (the heartbeat timeout, "
      "%.0f s, plus its tick). re-form s: from that opening to the last node holding the new "
      "round. errors: failed calls before the SIGTERM (the clients retry them). hb/s: heartbeats "
      "served per second, every node at 1 Hz, then at 4 Hz (what the master sustains). shard/s: "
      "%d ranks on the step-quota path (%d shards a step), each call to next_for_step or flush "
      "counted, while the nodes heartbeat at 1 Hz. master cpu s: its CPU seconds over the whole "
      "run; clients cpu s: the simulated agents' (same cores).\n",
      kHeartbeatTimeoutS, kRanks, kQuota);
  int failed = 0;
  for (const Row& r : rows) {
    auto fail = [&](const std::string& why) {
      std::printf("CHECK FAILED at %d nodes: %s\n", r.nodes, why.c_str());
      ++failed;
    };
    if (kill_master) {
      std::printf("%d nodes: master killed as round 1 was first heard of; its record was %s\n",
                  r.nodes, r.round_was_durable ? "in the journal" : "NOT in the journal");
      if (!r.killed) fail("the master was not killed (no node got a round)");
      if (r.killed && !r.round_was_durable) fail("a round was heard of before it was durable");
    }
    if (!check) continue;
    if (r.first_round_s < 0) fail("the first round did not form");
    if (r.reform_s < 0) fail("no round re-formed after the loss of a node");
    if (r.errors > 0) fail(std::to_string(r.errors) + " calls failed");
    if (r.sigterm_s < 0 || r.sigterm_s > 2) fail("SIGTERM took " + seconds_or_dash(r.sigterm_s));
    if (!(r.shard_rate > 0)) fail("no shard was handed out");
  }
  if (failed > 0) return 1;
  return 0;
}
