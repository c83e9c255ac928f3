#include "cairn/train/memory_estimate.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cairn/model/language_model.h"
#include "cairn/model/param_specs.h"
#include "cairn/parallel/tensor_parallel.h"

namespace cairn::train {
namespace {

model::ModelConfig Tiny(const std::string& arch) {
  model::ModelConfig c;
  c.arch = arch;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = arch == "llama" ? 2 : 0;
  c.n_embd = 64;
  c.vocab_size = 300;
  c.block_size = 32;
  return c;
}

TEST(MemoryEstimate, ParameterCountIsTheBuiltModels) {
  for (const char* arch : {"gpt2", "llama"}) {
    auto c = Tiny(arch);
    auto m = model::build_model(c, 1);
    EXPECT_EQ(count_params(c), m->num_params()) << arch;
  }
}

TEST(MemoryEstimate, StateBytesFollowTheZeroStage) {
  MemoryEstimateInput in;
  in.model = Tiny("gpt2");
  in.world = 4;
  const double P = double(count_params(in.model));
  const double expected[] = {16 * P, (8 + 2) * P, (4 + 3) * P, 4 * P};
  for (int stage = 0; stage <= 3; ++stage) {
    in.zero_stage = stage;
    EXPECT_DOUBLE_EQ(estimate_memory(in).state_bytes, expected[stage]) << "stage " << stage;
  }
}

// Under tp the state is that of the parameters a rank holds: its slices and the whole ones
// (up to a vocabulary padding row); activations shrink with tp, and more with sequence
// parallelism.
TEST(MemoryEstimate, TensorParallelRanksHoldTheirSlices) {
  for (const char* arch : {"gpt2", "llama"}) {
    MemoryEstimateInput in;
    in.model = Tiny(arch);
    in.micro_batch_size = 4;
    in.seq_len = 16;
    const MemoryEstimate one = estimate_memory(in);
    in.tp = 2;
    int64_t held = 0;
    for (const model::ParamSpec& spec : model::param_specs(in.model))
      held += c10::multiply_integers(parallel::tp_local_shape(spec, in.model, 2));
    const MemoryEstimate two = estimate_memory(in);
    EXPECT_NEAR(two.state_bytes / 16, double(held), double(in.model.n_embd)) << arch;
    EXPECT_LT(two.activation_bytes, one.activation_bytes) << arch;
    in.sequence_parallel = true;
    EXPECT_LT(estimate_memory(in).activation_bytes, two.activation_bytes) << arch;
  }
}

TEST(MemoryEstimate, CheckpointingAndShorterSequencesNeedLess) {
  MemoryEstimateInput in;
  in.model = Tiny("llama");
  in.micro_batch_size = 8;
  in.seq_len = 32;
  const double full = estimate_memory(in).activation_bytes;
  in.activation_checkpointing = true;
  EXPECT_LT(estimate_memory(in).activation_bytes, full);
  in.activation_checkpointing = false;
  in.seq_len = 16;
  EXPECT_LT(estimate_memory(in).activation_bytes, full);
}

// configs/gpt-kjv-long.yaml: one process keeps the causal triangle's probabilities (2 bytes per
// head per pair and layer, at least); Ulysses keeps 1/cp of the heads' and a ring none of them.
TEST(MemoryEstimate, ContextParallelismSplitsTheLongSequencesActivations) {
  MemoryEstimateInput in;
  in.model = Tiny("gpt2");
  in.model.n_layer = 4;
  in.model.n_head = 4;
  in.model.n_embd = 192;
  in.model.vocab_size = 50304;
  in.model.block_size = in.seq_len = 16384;
  const double probs = 4 * 2 * 4 * 16384.0 * 16384.0;
  const double one = estimate_memory(in).activation_bytes;
  EXPECT_GT(one, probs);
  EXPECT_LT(one, 1.5 * probs);
  in.cp = 4;
  const double ulysses = estimate_memory(in).activation_bytes;
  EXPECT_GT(ulysses, probs / 4);
  EXPECT_LT(ulysses, one / 3);
  in.cp_ring = 4;
  const double ring = estimate_memory(in).activation_bytes;
  EXPECT_LT(ring, ulysses / 2);
  in.cp_ring = 2;  // 2d: 2 Ulysses x 2 ring
  EXPECT_LT(estimate_memory(in).activation_bytes, ulysses / 2);
}

TEST(MemoryEstimate, ATooLargeJobIsRefusedWithTheFigures) {
  MemoryEstimateInput in;
  in.model = Tiny("gpt2");
  in.model.n_layer = 96;
  in.model.n_embd = 12288;
  in.model.n_head = 96;
  in.model.vocab_size = 50304;
  const auto e = estimate_memory(in);
  EXPECT_GT(e.params, int64_t(170e9));  // GPT-3 175B sized
  Status s = check_memory(e, 1, int64_t(24) << 30);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("does not fit in memory"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("24.00 GiB is available"), std::string::npos) << s.message();
  EXPECT_TRUE(
      check_memory(estimate_memory(MemoryEstimateInput{Tiny("gpt2")}), 2, int64_t(1) << 30).ok());
}

TEST(MemoryEstimate, LocalRanksShareTheMachine) {
  MemoryEstimate e;
  e.state_bytes = 3e9;
  EXPECT_TRUE(check_memory(e, 1, int64_t(4e9)).ok());
  Status s = check_memory(e, 2, int64_t(4e9));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("2 ranks on this machine"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace cairn::train
