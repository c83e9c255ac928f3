// events.jsonl / metrics.jsonl writer and the GEMM peak probe.
#include "cairn/train/run_log.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>

#include "cairn/core/fs.h"

namespace cairn::train {

Result<std::unique_ptr<RunLog>> RunLog::Open(const std::string& run_dir, bool writer) {
  CAIRN_RETURN_IF_ERROR(core::make_dirs(run_dir));
  return std::unique_ptr<RunLog>(new RunLog(run_dir, writer));
}

void RunLog::event(const std::string& kind, nlohmann::json fields) {
  if (writer_) events_.write(kind, fields);
}

void RunLog::metrics(nlohmann::json row) {
  if (!writer_) return;
  if (!row.contains("time")) row["time"] = core::unix_time();
  metrics_.append(row);
}

void RunLog::samples(int64_t step, const std::vector<int64_t>& ids) {
  if (writer_) samples_.append({{"step", step}, {"sample_ids", ids}});
}

double measure_gemm_flops(int64_t n, double seconds) {
  torch::NoGradGuard no_grad;
  // A private generator: the probe must not advance the global one (a resumed run restores
  // it and must continue bit-exactly).
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
  auto a = torch::randn({n, n}, gen);
  auto b = torch::randn({n, n}, gen);
  auto c = torch::mm(a, b);  // warm-up
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  int64_t iters = 0;
  double elapsed = 0;
  do {
    torch::mm_out(c, a, b);
    ++iters;
    elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  } while (elapsed < seconds);
  return 2.0 * double(n) * double(n) * double(n) * double(iters) / elapsed;
}

}  // namespace cairn::train
