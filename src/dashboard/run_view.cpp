// A run directory read while it grows (see run_view.h).
#include "cairn/dashboard/run_view.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <utility>

#include "cairn/core/fs.h"
#include "cairn/core/median.h"
#include "cairn/dashboard/prometheus.h"
#include "cairn/elastic/goodput.h"

#ifndef CAIRN_VERSION
#define CAIRN_VERSION "unknown"
#endif

namespace cairn::dashboard {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A rank this many times slower than the median of the others is shown as a straggler.
constexpr double kStragglerRatio = 1.5;

// A line longer than this without its newline is not a JSON-lines row: dropped as unreadable.
constexpr size_t kLongestLine = size_t(1) << 20;

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

json page(const std::vector<json>& rows, size_t since, size_t limit) {
  json out = {{"rows", json::array()}, {"total", rows.size()}};
  const size_t from = std::min(since, rows.size());
  const size_t to = std::min(rows.size(), from + limit);
  for (size_t i = from; i < to; ++i) out["rows"].push_back(rows[i]);
  out["next"] = to;
  return out;
}

double number_or(const json& j, const char* key, double fallback) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : fallback;
}

// Membership as the elastic master recorded it (its master_* events): every node's latest
// state (joined, member, left, dropped, excluded), when it got there, its failures, and how
// many rounds completed. Nothing when the run had no master.
void membership(const std::vector<json>& events, json& s) {
  std::map<std::string, json> nodes;
  int64_t rounds = 0;
  for (const json& e : events) {
    const std::string kind = e.value("event", "");
    if (kind.rfind("master_", 0) != 0) continue;
    const double t = number_or(e, "time", 0);
    auto set = [&](const std::string& id, const std::string& state, const std::string& reason) {
      if (id.empty()) return;
      json& n = nodes[id];
      n["id"] = id;
      n["state"] = state;
      n["since"] = t;
      if (!reason.empty())
        n["reason"] = reason;
      else
        n.erase("reason");
      if (!n.contains("failures")) n["failures"] = 0;
    };
    if (kind == "master_node_joined" && e.contains("node") && e["node"].is_object()) {
      set(e["node"].value("id", ""), "joined", "");
      if (e["node"].contains("host")) nodes[e["node"].value("id", "")]["host"] = e["node"]["host"];
    } else if (kind == "master_round_completed" && e.contains("round") && e["round"].is_object()) {
      ++rounds;
      for (const json& m : e["round"].value("members", json::array()))
        if (m.is_object()) set(m.value("id", ""), "member", "");
    } else if (kind == "master_node_removed") {
      set(e.value("node_id", ""), e.value("reason", "removed"), "");
    } else if (kind == "master_node_excluded") {
      set(e.value("node_id", ""), "excluded", e.value("reason", ""));
    } else if (kind == "master_failure") {
      const std::string id = e.value("node_id", "");
      if (nodes.count(id)) nodes[id]["failures"] = nodes[id].value("failures", 0) + 1;
    }
  }
  if (nodes.empty() && rounds == 0) return;
  json list = json::array();
  for (auto& [id, n] : nodes) list.push_back(std::move(n));
  s["nodes"] = std::move(list);
  s["rounds"] = rounds;
}

// Each rank's forward and backward seconds over the last (up to) 10 steps that have them, and
// the slowest rank against the median of the others: a straggler is 1.5 times slower.
void ranks(const std::vector<json>& rows, json& s) {
  std::vector<double> sum;
  int n = 0;
  for (auto it = rows.rbegin(); it != rows.rend() && n < 10; ++it) {
    auto r = it->find("rank_compute_s");
    if (r == it->end() || !r->is_array() || r->empty()) continue;
    if (sum.empty()) sum.assign(r->size(), 0);
    if (r->size() != sum.size()) break;  // another world: only the newest one's steps
    for (size_t i = 0; i < sum.size(); ++i)
      sum[i] += (*r)[i].is_number() ? (*r)[i].get<double>() : 0;
    ++n;
  }
  if (n == 0) return;
  for (double& v : sum) v /= n;
  s["rank_compute_s"] = sum;
  if (sum.size() < 2) return;
  const size_t slowest = size_t(std::max_element(sum.begin(), sum.end()) - sum.begin());
  std::vector<double> others;
  for (size_t i = 0; i < sum.size(); ++i)
    if (i != slowest) others.push_back(sum[i]);
  const double median = core::median(std::move(others));
  if (!(median > 0)) return;
  s["slowest_rank"] = slowest;
  s["slowest_ratio"] = sum[slowest] / median;
  if (sum[slowest] / median >= kStragglerRatio) s["straggler"] = slowest;
}

}  // namespace

size_t JsonLinesTail::refresh() {
  const int fd = ::open(path_.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return 0;  // not written yet (or a link, which is not followed)
  FILE* f = ::fdopen(fd, "rb");
  if (!f) {
    ::close(fd);
    return 0;
  }
  struct stat st {};
  if (::fstat(fileno(f), &st) != 0) {
    std::fclose(f);
    return 0;
  }
  const uint64_t size = uint64_t(st.st_size);
  if (size < offset_) {  // replaced by a shorter file: read it again from the start
    offset_ = 0;
    partial_.clear();
    rows_.clear();
    skipped_ = 0;
    last_error_.clear();
  }
  const size_t before = rows_.size();
  if (size > offset_ && ::fseeko(f, off_t(offset_), SEEK_SET) == 0) {
    std::string chunk(size_t(size - offset_), '\0');
    const size_t got = std::fread(chunk.data(), 1, chunk.size(), f);
    chunk.resize(got);
    offset_ += got;
    size_t start = 0;
    for (size_t nl; (nl = chunk.find('\n', start)) != std::string::npos; start = nl + 1) {
      partial_.append(chunk, start, nl - start);
      std::string line;
      line.swap(partial_);
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_object()) {
        rows_.push_back(std::move(j));
      } else {
        ++skipped_;
        last_error_ = "not a JSON object: " + line.substr(0, 80);
      }
    }
    partial_.append(chunk, start, std::string::npos);
    if (partial_.size() > kLongestLine) {
      ++skipped_;
      last_error_ = "a line of more than 1 MiB without a newline";
      partial_.clear();
    }
  }
  std::fclose(f);
  return rows_.size() - before;
}

RunView::RunView(std::string run_dir)
    : dir_(std::move(run_dir)),
      metrics_(dir_ + "/metrics.jsonl"),
      events_(dir_ + "/events.jsonl") {}

void RunView::refresh() {
  metrics_.refresh();
  events_.refresh();
}

json RunView::metrics(size_t since, size_t limit) {
  core::MutexLock lock(mu_);
  refresh();
  return page(metrics_.rows(), since, limit);
}

json RunView::events(size_t since, size_t limit) {
  core::MutexLock lock(mu_);
  refresh();
  return page(events_.rows(), since, limit);
}

json RunView::status() {
  core::MutexLock lock(mu_);
  refresh();
  return status_locked();
}

json RunView::status_locked() {
  json s = {{"run_dir", dir_}, {"state", "waiting"}};
  const std::vector<json>& rows = metrics_.rows();
  const std::vector<json>& events = events_.rows();
  int64_t restarts = 0, failures = 0, hangs = 0, world = 0, max_steps = 0;
  double first_time = 0, end_time = 0;
  bool started = false, ended = false, under_agent = false;
  const json* goodput = nullptr;
  for (const json& e : events) {
    const std::string kind = e.value("event", "");
    const double t = number_or(e, "time", 0);
    if (first_time == 0 && t > 0) first_time = t;
    if (kind == "start" || kind == "agent_start" || kind == "workers_started") {
      started = true;
      if (kind != "workers_started") ended = false;
    }
    if (kind == "start") max_steps = e.value("max_steps", max_steps);
    if (e.contains("world_size") && e["world_size"].is_number_integer())
      world = e["world_size"].get<int64_t>();
    if (kind == "master_round_completed" && e.contains("round") && e["round"].is_object())
      world = number_or(e["round"], "world_size", double(world));
    if (kind == "rendezvous") s["rendezvous_s"] = number_or(e, "duration_ms", 0) / 1e3;
    if (kind == "restart") ++restarts;
    if (kind == "worker_failed") ++failures;
    if (kind == "hang") ++hangs;
    if (kind == "goodput") goodput = &e;
    // Under `cairn run` the job ends with its agent, not with a worker's `end`.
    if (kind == "agent_end" || (kind == "end" && !under_agent)) {
      ended = true;
      end_time = t;
      s["end"] = e;
    }
    under_agent = under_agent || kind == "agent_start";
  }
  if (under_agent) s["agent"] = true;
  membership(events, s);
  ranks(rows, s);
  if (started) s["state"] = ended ? "ended" : "running";
  if (max_steps > 0) s["max_steps"] = max_steps;
  if (world > 0) s["world_size"] = world;
  s["restarts"] = restarts;
  s["failures"] = failures;
  s["hangs"] = hangs;
  if (!rows.empty()) {
    const json& last = rows.back();
    for (const char* k :
         {"step", "loss", "lr", "tokens_per_s", "mfu", "grad_norm", "mem_peak_mb", "step_time"})
      if (last.contains(k)) s[k] = last[k];
    for (auto it = rows.rbegin(); it != rows.rend(); ++it)
      if (it->contains("val_loss")) {
        s["val_loss"] = (*it)["val_loss"];
        s["val_step"] = (*it)["step"];
        break;
      }
    // ETA: the mean of the last (up to) 20 step times for the steps left.
    double sum = 0;
    int n = 0;
    for (auto it = rows.rbegin(); it != rows.rend() && n < 20; ++it, ++n)
      sum += number_or(*it, "step_time", 0);
    const int64_t step = last.value("step", int64_t(0));
    if (!ended && max_steps > step && n > 0) s["eta_s"] = sum / n * double(max_steps - step);
  }
  // Goodput: the agent's own figure once it ended, else the same computation so far.
  if (goodput && ended) {
    s["goodput"] = number_or(*goodput, "goodput", 0);
  } else if (!rows.empty() && first_time > 0) {
    std::vector<elastic::StepRow> steps;
    for (const json& r : rows)
      steps.push_back(
          {r.value("step", int64_t(0)), number_or(r, "time", 0), number_or(r, "step_time", 0)});
    std::vector<elastic::TimedEvent> timed;
    for (const json& e : events)
      timed.push_back(
          {e.value("event", ""), number_or(e, "time", 0), number_or(e, "duration_ms", 0)});
    const elastic::Goodput g =
        elastic::compute_goodput(steps, timed, first_time, ended ? end_time : unix_now());
    if (g.wall_s > 0) s["goodput"] = g.goodput();
  }
  std::error_code ec;
  s["plan_picture"] = fs::is_regular_file(dir_ + "/plan.svg", ec);
  s["unreadable_lines"] = {{"metrics.jsonl", metrics_.skipped()},
                           {"events.jsonl", events_.skipped()}};
  if (!metrics_.last_error().empty()) s["metrics_error"] = metrics_.last_error();
  if (!events_.last_error().empty()) s["events_error"] = events_.last_error();
  return s;
}

std::vector<std::string> RunView::logs() const {
  std::vector<std::string> out;
  for (const char* sub : {"", "logs"}) {
    std::error_code ec;
    const fs::path d = fs::path(dir_) / sub;
    for (fs::directory_iterator it(d, ec), end; !ec && it != end; it.increment(ec))
      if (it->symlink_status(ec).type() == fs::file_type::regular &&
          it->path().extension() == ".log")
        out.push_back(*sub ? std::string(sub) + "/" + it->path().filename().string()
                           : it->path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<std::string> RunView::log_tail(const std::string& name, size_t lines) const {
  const std::vector<std::string> all = logs();
  if (std::find(all.begin(), all.end(), name) == all.end()) {
    std::string known;
    for (const std::string& l : all) known += (known.empty() ? "" : ", ") + l;
    return Status::NotFound("no log '" + name + "' in " + dir_ +
                            (known.empty() ? " (it has none yet)" : "; its logs: " + known));
  }
  // Listed names only, and no link followed: a run directory others can write to cannot make
  // the dashboard serve a file from elsewhere.
  CAIRN_ASSIGN_OR_RETURN(const int fd, core::open_under(dir_, name));
  FILE* f = ::fdopen(fd, "rb");
  if (!f) {
    ::close(fd);
    return Status::NotFound("cannot open " + dir_ + "/" + name);
  }
  struct stat st {};
  ::fstat(fileno(f), &st);
  // Enough bytes for the lines asked (at most 1 MiB), from the end.
  const uint64_t want = std::min<uint64_t>(uint64_t(st.st_size),
                                           std::min<uint64_t>(uint64_t(1) << 20, lines * 400 + 1));
  std::string text(want, '\0');
  ::fseeko(f, off_t(uint64_t(st.st_size) - want), SEEK_SET);
  text.resize(std::fread(text.data(), 1, text.size(), f));
  std::fclose(f);
  std::vector<std::string> all_lines;
  for (size_t start = 0; start < text.size();) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    all_lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  // Read from the middle of the file: its first line is a piece.
  if (want < uint64_t(st.st_size) && !all_lines.empty()) all_lines.erase(all_lines.begin());
  std::string out;
  for (size_t i = all_lines.size() > lines ? all_lines.size() - lines : 0; i < all_lines.size();
       ++i)
    out += all_lines[i] + "\n";
  return out;
}

Result<std::string> RunView::plan_picture() const {
  const std::string path = dir_ + "/plan.svg";
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec)
    return Status::NotFound("no plan picture in " + dir_ +
                            " (one is written when parallel.plan=auto chooses the layout)");
  if (size > kLongestLine * 8) return Status::InvalidArgument(path + " is larger than 8 MiB");
  return core::read_file_under(dir_, "plan.svg");
}

std::string RunView::prometheus() {
  core::MutexLock lock(mu_);
  refresh();
  const json s = status_locked();
  const std::vector<json>& rows = metrics_.rows();
  PromText p;
  p.family("cairn_build_info", "cairn's version (the value is always 1)", "gauge");
  p.sample({{"version", CAIRN_VERSION}}, 1);
  auto gauge = [&](const char* name, const char* help, const char* key, double scale = 1) {
    if (!s.contains(key) || !s[key].is_number()) return;
    p.family(name, help, "gauge");
    p.sample({}, s[key].get<double>() * scale);
  };
  gauge("cairn_train_step", "The last step trained", "step");
  gauge("cairn_max_steps", "The steps the job trains in all", "max_steps");
  gauge("cairn_train_loss", "Training loss of the last step", "loss");
  gauge("cairn_validation_loss", "The last validation loss", "val_loss");
  gauge("cairn_learning_rate", "Learning rate of the last step", "lr");
  gauge("cairn_gradient_norm", "Global gradient norm of the last step, before clipping",
        "grad_norm");
  gauge("cairn_tokens_per_second", "Tokens per second of the last step", "tokens_per_s");
  gauge("cairn_mfu_ratio", "Model FLOPs utilization of the last step (0-1)", "mfu");
  gauge("cairn_memory_peak_bytes", "The largest peak resident memory of any rank so far",
        "mem_peak_mb", 1e6);
  gauge("cairn_world_size", "Ranks of the job's current round", "world_size");
  gauge("cairn_eta_seconds", "Time left at the recent step time", "eta_s");
  gauge("cairn_goodput_ratio", "Productive training time over wall time so far (0-1)", "goodput");
  gauge("cairn_rank_compute_imbalance_ratio",
        "The slowest rank's forward and backward time over the median of the others' (recent "
        "steps)",
        "slowest_ratio");
  gauge("cairn_rounds", "Rounds the elastic master completed", "rounds");
  double tokens = 0;
  std::vector<double> step_times;
  std::vector<PromText::Series> compute;  // by rank
  for (const json& r : rows) {
    const double st = number_or(r, "step_time", 0);
    tokens += number_or(r, "tokens_per_s", 0) * st;
    step_times.push_back(st);
    if (auto c = r.find("rank_compute_s"); c != r.end() && c->is_array())
      for (size_t i = 0; i < c->size(); ++i) {
        if (compute.size() <= i) compute.push_back({{{"rank", std::to_string(i)}}, {}});
        if ((*c)[i].is_number()) compute[i].observations.push_back((*c)[i].get<double>());
      }
  }
  p.family("cairn_tokens_total", "Tokens trained, steps trained again after a restart included",
           "counter");
  p.sample({}, std::round(tokens));
  p.family("cairn_steps_total", "Steps trained, steps trained again after a restart included",
           "counter");
  p.sample({}, double(rows.size()));
  p.histogram("cairn_step_duration_seconds", "Duration of a training step (rank 0's clock)",
              {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}, {{{}, step_times}});
  p.histogram("cairn_step_compute_duration_seconds",
              "A rank's time in the forward and backward passes of a step (a straggler's is "
              "longer than the others')",
              {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}, compute);
  p.family("cairn_hangs_total", "Workers found hung", "counter");
  p.sample({}, s.value("hangs", 0.0));
  std::map<std::string, double> failures;
  std::map<std::string, double> restarts;  // by the diagnosis of the failure restarted from
  std::string last_failure;
  std::map<std::string, std::vector<double>> saves;
  double last_success = 0;
  std::vector<double> rendezvous;  // the agent's, or else the master's (round opened to completed)
  std::vector<double> master_rounds;
  double opened = 0;
  for (const json& e : events_.rows()) {
    const std::string kind = e.value("event", "");
    if (kind == "rendezvous") rendezvous.push_back(number_or(e, "duration_ms", 0) / 1e3);
    // A round gathers from the first join (or the opening, for a round of rejoining members)
    // after the previous one completed; the master's first round has no opening event.
    if ((kind == "master_round_opened" || kind == "master_node_joined") && opened == 0)
      opened = number_or(e, "time", 0);
    if (kind == "master_round_completed" && opened > 0) {
      master_rounds.push_back(std::max(0.0, number_or(e, "time", 0) - opened));
      opened = 0;
    }
    if (kind == "worker_failed") {
      last_failure = e.value("diagnosis", "unknown");
      failures[last_failure] += 1;
    }
    if (kind == "restart") restarts[last_failure.empty() ? "unknown" : last_failure] += 1;
    if (kind == "checkpoint_saved")
      saves[e.value("storage", "unknown")].push_back(number_or(e, "duration_ms", 0) / 1e3);
    if (kind == "checkpoint_persisted" ||
        (kind == "checkpoint_saved" && e.value("storage", "") == "disk"))
      last_success = std::max(last_success, number_or(e, "time", 0));
  }
  p.family("cairn_worker_failures_total", "Worker failures by diagnosis", "counter");
  for (const auto& [why, n] : failures) p.sample({{"diagnosis", why}}, n);
  p.family("cairn_restarts_total",
           "Restarts of the job's workers, by the diagnosis of the failure they restarted from",
           "counter");
  for (const auto& [why, n] : restarts) p.sample({{"reason", why}}, n);
  std::vector<PromText::Series> save_series;
  for (auto& [storage, v] : saves) save_series.push_back({{{"storage", storage}}, v});
  p.histogram("cairn_checkpoint_save_duration_seconds",
              "Training's pause for a checkpoint save, by where it went (memory or disk)",
              {0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 30}, save_series);
  p.histogram("cairn_rendezvous_duration_seconds",
              "How long a rendezvous took: an agent's wait for its round's world (else the "
              "master's, from the first join after the previous round to the round's completion)",
              {0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
              {{{}, rendezvous.empty() ? master_rounds : rendezvous}});
  if (s.contains("nodes")) {
    std::map<std::string, double> by_state;
    for (const json& n : s["nodes"]) by_state[n.value("state", "unknown")] += 1;
    p.family("cairn_nodes", "Nodes the elastic master knows, by their latest state", "gauge");
    for (const auto& [state, count] : by_state) p.sample({{"state", state}}, count);
  }
  if (last_success > 0) {
    p.family("cairn_checkpoint_last_success_timestamp_seconds",
             "When the newest checkpoint reached storage (unix time)", "gauge");
    p.sample({}, last_success);
  }
  p.family("cairn_dashboard_unreadable_lines_total",
           "Lines of the run directory's JSON-lines files that were not JSON objects", "counter");
  p.sample({{"file", "metrics.jsonl"}}, double(metrics_.skipped()));
  p.sample({{"file", "events.jsonl"}}, double(events_.skipped()));
  return p.text();
}

}  // namespace cairn::dashboard
