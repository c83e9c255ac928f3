// The deterministic and the dynamic MicroBatchSource.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "train/dynamic_data_impl.h"
#include "train/micro_batches_impl.h"

namespace cairn::train {
namespace {

// A micro-batch's share of the step's mean loss: 1/accum of a rank's when the ranks split
// the batch evenly; otherwise data_world/num_micro, the job's mean being taken over the
// data-parallel ranks.
void set_share(const Trainer::Impl& m, MicroBatch* mb) {
  if (m.even_split()) {
    const int64_t accum = m.accum_steps();
    if (accum > 1) mb->divide_by = double(accum);
  } else {
    mb->multiply_by = double(m.data_world) / double(m.num_micro());
  }
}

class DeterministicBatches : public MicroBatchSource {
 public:
  explicit DeterministicBatches(Trainer::Impl& m) : m_(m) {}
  Result<bool> begin_step(int64_t step) override {
    step_ = step;
    micro_ = 0;
    return true;
  }
  Result<std::optional<MicroBatch>> next() override {
    const int64_t accum = m_.accum_steps();
    if (micro_ >= accum) return std::optional<MicroBatch>();
    MicroBatch mb;
    mb.padding = micro_ * m_.data_world + m_.data_rank >= m_.num_micro();
    std::tie(mb.x, mb.y) = m_.batch(step_, mb.padding ? 0 : micro_, /*record=*/!mb.padding);
    if (mb.padding)
      mb.multiply_by = 0;
    else
      set_share(m_, &mb);
    mb.last = micro_ == accum - 1;
    ++micro_;
    return std::optional<MicroBatch>(std::move(mb));
  }
  Status end_step() override { return Status::Ok(); }
  Result<StepRecord> record() override {
    StepRecord r;
    if (m_.opt.log_sample_ids) r.sample_ids = m_.gather_consumed();
    return r;
  }

 private:
  Trainer::Impl& m_;
  int64_t step_ = 0, micro_ = 0;
};

class DynamicBatches : public MicroBatchSource {
 public:
  explicit DynamicBatches(Trainer::Impl& m) : m_(m) {}
  Result<bool> begin_step(int64_t step) override {
    step_ = step;
    trained_.clear();
    started_ = false;
    CAIRN_ASSIGN_OR_RETURN(current_, m_.dynamic->next(step + 1));
    // The end of the data (a closed stream, the last epoch): the ranks agree; none has a
    // micro-batch left -> the job ends here; some have -> the others take part without.
    const double have = m_.sum_over_ranks(current_ ? 1.0 : 0.0);
    if (have == 0) {
      spdlog::info("the data is used up (every sample of {} trained): stopping at step {}",
                   m_.stream ? "the closed stream" : "the last epoch", step);
      m_.log->event("data_end", {{"step", step}});
      return false;
    }
    return true;
  }
  Result<std::optional<MicroBatch>> next() override {
    if (!started_) {
      started_ = true;
      if (!current_) {
        // No samples: a synced backward of weight 0, so the gradient all-reduce matches.
        MicroBatch mb;
        mb.x = mb.y = torch::zeros({1, m_.opt.seq_len}, torch::kLong);
        mb.padding = true;
        mb.multiply_by = 0;
        mb.last = true;
        return std::optional<MicroBatch>(std::move(mb));
      }
      return batch_of(*current_);
    }
    if (!current_) return std::optional<MicroBatch>();
    // The micro-batch after the current one, asked for between its forward and backward.
    CAIRN_ASSIGN_OR_RETURN(std::optional<elastic::Shard> following, m_.dynamic->next(step_ + 1));
    trained_.push_back(*current_);
    current_ = following;
    if (!current_) return std::optional<MicroBatch>();
    return batch_of(*current_);
  }
  // Before the step's first blocking collective: rank 0 snapshots the service only after
  // every rank's completions of this step are in.
  Status end_step() override { return m_.dynamic->complete(trained_, step_ + 1); }
  Result<StepRecord> record() override {
    CAIRN_ASSIGN_OR_RETURN(auto gathered, m_.gather_trained(trained_));
    StepRecord r;
    r.micro_batches_per_rank = gathered.first;
    if (m_.opt.log_sample_ids) r.sample_ids = gathered.second;
    return r;
  }

 private:
  std::optional<MicroBatch> batch_of(const elastic::Shard& shard) {
    MicroBatch mb;
    std::tie(mb.x, mb.y) = m_.shard_batch(shard);
    set_share(m_, &mb);
    return mb;  // `last` unknown until the next one is asked for
  }

  Trainer::Impl& m_;
  int64_t step_ = 0;
  bool started_ = false;
  std::optional<elastic::Shard> current_;
  std::vector<elastic::Shard> trained_;
};

}  // namespace

std::unique_ptr<MicroBatchSource> make_deterministic_batches(Trainer::Impl& trainer) {
  return std::make_unique<DeterministicBatches>(trainer);
}
std::unique_ptr<MicroBatchSource> make_dynamic_batches(Trainer::Impl& trainer) {
  return std::make_unique<DynamicBatches>(trainer);
}

}  // namespace cairn::train
