// Goodput accounting over a run's metrics and events.
#include "cairn/elastic/goodput.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "cairn/core/json_lines.h"

namespace cairn::elastic {

std::string Goodput::ToString() const {
  return fmt::format(
      "goodput {:.1f}% (productive {:.1f} s of {:.1f} s wall, {} steps); downtime: restarts "
      "{:.1f} s ({} failure(s), of which checkpoint loads {:.1f} s), lost steps {:.1f} s, other "
      "{:.1f} s (startup, evaluation, checkpoints)",
      goodput() * 100, productive_s, wall_s, steps, restart_s, failures, load_s, lost_s, other_s);
}

Goodput compute_goodput(const std::vector<StepRow>& rows, const std::vector<TimedEvent>& events,
                        double start_time, double end_time) {
  Goodput g;
  g.wall_s = std::max(0.0, end_time - start_time);
  // The surviving occurrence of a step is its last one: a restart from step S trains S+1...
  // again, and what was trained of them before is lost.
  std::map<int64_t, size_t> last;
  auto inside = [&](const StepRow& r) { return r.time >= start_time && r.time <= end_time; };
  for (size_t i = 0; i < rows.size(); ++i)
    if (inside(rows[i])) last[rows[i].step] = i;
  double trained = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!inside(rows[i])) continue;  // an earlier job in the same run directory
    trained += rows[i].step_time;
    if (last[rows[i].step] == i) g.productive_s += rows[i].step_time;
  }
  g.steps = int64_t(last.size());
  g.lost_s = trained - g.productive_s;
  // A failure's downtime: from its detection to the first step that ends after it.
  std::vector<double> failures;
  for (auto& e : events) {
    if (e.time < start_time || e.time > end_time) continue;
    if (e.event == "worker_failed") failures.push_back(e.time);
    if (e.event == "checkpoint_loaded") g.load_s += e.duration_ms / 1e3;
  }
  std::sort(failures.begin(), failures.end());
  double covered_until = 0;  // several ranks failing at once count once
  for (double f : failures) {
    if (f < covered_until) continue;
    ++g.failures;
    // The downtime starts where the last step before the failure ended: the step in flight
    // (or the silence of a hang) is lost too.
    double began = std::max(start_time, covered_until);
    for (auto& r : rows)
      if (r.time <= f && inside(r)) began = std::max(began, r.time);
    double resumed = end_time;
    for (auto& r : rows)
      if (r.time > f && inside(r)) {
        resumed = std::min(resumed, r.time - r.step_time);  // the step's own time is productive
      }
    g.restart_s += std::max(0.0, resumed - began);
    covered_until = resumed;
  }
  g.other_s = std::max(0.0, g.wall_s - g.productive_s - g.lost_s - g.restart_s);
  return g;
}

Status read_goodput_inputs(const std::string& run_dir, std::vector<StepRow>* rows,
                           std::vector<TimedEvent>* events) {
  for (const nlohmann::json& j : core::read_json_lines(run_dir + "/metrics.jsonl"))
    if (j.contains("step") && j.contains("step_time"))
      rows->push_back(
          {j["step"].get<int64_t>(), j.value("time", 0.0), j["step_time"].get<double>()});
  for (const nlohmann::json& j : core::read_json_lines(run_dir + "/events.jsonl"))
    if (j.contains("event"))
      events->push_back(
          {j.value("event", std::string()), j.value("time", 0.0), j.value("duration_ms", 0.0)});
  return Status::Ok();
}

}  // namespace cairn::elastic
