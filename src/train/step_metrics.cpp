// The metrics of a step and the progress line.
#include "train/step_metrics_impl.h"

namespace cairn::train {

StepMetrics::StepMetrics(double flops_per_token, double tokens_per_step, double peak_flops,
                         bool show, int64_t log_interval)
    : flops_per_token_(flops_per_token),
      tokens_per_step_(tokens_per_step),
      peak_flops_(peak_flops),
      show_(show),
      progress_(ui::ProgressLine::stderr_is_tty(), log_interval) {}

nlohmann::json StepMetrics::row(int64_t step, double loss, double lr, double step_time) {
  const double tps = tokens_per_step_ / step_time;
  ema_tps_ = ema_tps_ == 0 ? tps : 0.9 * ema_tps_ + 0.1 * tps;
  ema_step_ = ema_step_ == 0 ? step_time : 0.9 * ema_step_ + 0.1 * step_time;
  const double mfu = peak_flops_ > 0 ? flops_per_token_ * tps / peak_flops_ : 0;
  return {{"step", step},        {"loss", loss}, {"lr", lr},
          {"tokens_per_s", tps}, {"mfu", mfu},   {"step_time", step_time}};
}

void StepMetrics::show(int64_t step, int64_t max_steps, double loss, double lr,
                       const std::string& extra) {
  if (!show_) return;
  const double mfu = peak_flops_ > 0 ? flops_per_token_ * ema_tps_ / peak_flops_ : 0;
  progress_.update(
      {step, max_steps, loss, lr, ema_tps_, mfu, ema_step_ * double(max_steps - step), extra});
}

}  // namespace cairn::train
