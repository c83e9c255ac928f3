// StepMetrics: what the trainer reports of each step: the metrics.jsonl row (loss, lr,
// tokens/s, MFU against the job's GEMM peak, step time) and the progress line (smoothed
// tokens/s and MFU, ETA from the smoothed step time).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "cairn/ui/progress.h"

namespace cairn::train {

class StepMetrics {
 public:
  // `peak_flops` 0: MFU is reported as 0 (not measured). `show`: print the progress line.
  StepMetrics(double flops_per_token, double tokens_per_step, double peak_flops, bool show,
              int64_t log_interval);

  // A finished step (`step` counts it) that took `step_time` seconds: its row for
  // metrics.jsonl; also updates the smoothed figures.
  nlohmann::json row(int64_t step, double loss, double lr, double step_time);
  // The progress line after step `step` of `max_steps`, with `extra` (e.g. "val 4.1234").
  void show(int64_t step, int64_t max_steps, double loss, double lr, const std::string& extra);
  void finish() { progress_.finish(); }

 private:
  double flops_per_token_, tokens_per_step_, peak_flops_;
  bool show_;
  double ema_tps_ = 0, ema_step_ = 0;
  ui::ProgressLine progress_;
};

}  // namespace cairn::train
