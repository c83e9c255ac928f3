// The trainer's record of a parallel.plan=auto choice (trainer_impl.h).
#include <spdlog/spdlog.h>

#include "cairn/core/fs.h"
#include "train/trainer_impl.h"

namespace cairn::train {

void Trainer::Impl::record_auto_plan() {
  const AutoPlan& a = *auto_plan;
  nlohmann::json now = a.to_json();
  now["world"] = world;
  // The run's previous auto plan (an earlier start: an elastic restart, a resume), kept
  // beside the checkpoints, which every machine of the job reads.
  const std::string path = ckpt_dir + "/auto_plan.json";
  nlohmann::json previous;
  if (rank == 0) {
    if (auto text = core::read_file(path); text.ok())
      previous = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (previous.is_discarded() || !previous.is_object() || !previous.contains("world"))
      previous = nullptr;
    Status s = core::make_dirs(ckpt_dir);
    if (s.ok()) s = core::write_file_atomic(path, now.dump(1) + "\n");
    if (!s.ok()) spdlog::warn("parallel.plan=auto: {}", s.ToString());
    if (a.profile_s > 0)
      spdlog::info(
          "parallel.plan=auto: profiled this machine (or the model) in {:.1f} s, "
          "cached in {} and {}",
          a.profile_s, a.profile_path, a.model_profile_path);
    if (world > 1)
      spdlog::info(
          "parallel.plan=auto on {} ranks: {} (predicted {:.3g} s/step, {:.2f} GiB per rank, "
          "bottleneck {}); searched {} layouts in {:.1f} ms",
          world, a.plan.summary(), a.step_s, a.memory_bytes / double(1ull << 30), a.bottleneck,
          a.evaluated, a.search_s * 1e3);
    if (!previous.is_null() && previous.value("world", 0) != world)
      spdlog::info(
          "parallel.plan=auto: re-planned for {} ranks (was {} ranks: {}, predicted "
          "{:.3g} s/step)",
          world, previous.value("world", 0), previous.value("summary", std::string()),
          previous.value("step_s", 0.0));
  }
  log->event("plan", {{"auto", true},
                      {"world", world},
                      {"plan", now},
                      {"previous", previous},
                      {"replanned", !previous.is_null() && previous.value("world", 0) != world}});
}

void Trainer::Impl::check_auto_plan(double step_s, double peak_mb, bool last, bool saves) {
  if (plan_checked) return;
  plan_step_s.push_back(step_s);
  if (!plan_peak_done) plan_peak_mb = peak_mb;  // the high-water mark: it only grows
  plan_peak_done |= saves;
  const int64_t first = step - int64_t(plan_step_s.size()) + 1;
  const std::optional<PlanCheck> c =
      check_plan(*auto_plan, plan_step_s, first, plan_peak_mb * 1e6, last);
  if (!c) return;
  plan_checked = true;
  nlohmann::json event = c->to_json();
  event["world"] = world;
  event["summary"] = auto_plan->plan.summary();
  log->event("plan_check", event);
  if (rank != 0) return;
  spdlog::info(
      "parallel.plan=auto: steps {}-{} took {:.3g} s/step (the median; predicted {:.3g}, "
      "{:+.1f}%), the fullest rank {:.3f} GiB (predicted {:.3f}, {:+.1f}%)",
      c->first_step, c->last_step, c->step_s, c->predicted_step_s, 100 * c->step_error(),
      c->memory_bytes / double(1ull << 30), c->predicted_memory_bytes / double(1ull << 30),
      100 * c->memory_error());
  if (c->memory_error() < -0.05)
    spdlog::warn(
        "parallel.plan=auto: the fullest rank holds {:.1f}% more than the plan predicted: "
        "profile this machine and the model again (remove {} and {}) before a job sized to "
        "the memory",
        100 * (c->memory_bytes / c->predicted_memory_bytes - 1), auto_plan->profile_path,
        auto_plan->model_profile_path);
}

}  // namespace cairn::train
