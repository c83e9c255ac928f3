#include "cairn/train/trainer.h"

#include <filesystem>
#include <fstream>

#include "cairn/core/block_cache.h"
#include "train/trainer_testing_impl.h"

namespace cairn::train {
namespace {

using ::testing::HasSubstr;

// 20 steps straight and 10 + resume + 10 give identical parameters, for both architectures.
TEST_F(TrainerTest, ResumeIsBitExact) {
  for (std::string arch : {"gpt2", "llama"}) {
    auto cfg = Config(arch);
    auto straight = Trainer::Create(cfg, Run(arch + "_a"));
    ASSERT_TRUE(straight.ok()) << straight.status().ToString();
    auto s1 = (*straight)->run();
    ASSERT_TRUE(s1.ok()) << s1.status().ToString();
    EXPECT_EQ(s1->last_step, 20);

    auto first = Trainer::Create(cfg, Run(arch + "_b", false, 10));
    ASSERT_TRUE(first.ok());
    ASSERT_TRUE((*first)->run().ok());
    auto second = Trainer::Create(cfg, Run(arch + "_b", true));
    ASSERT_TRUE(second.ok()) << second.status().ToString();
    EXPECT_EQ((*second)->step(), 10);
    auto s2 = (*second)->run();
    ASSERT_TRUE(s2.ok());
    EXPECT_EQ(s2->first_step, 10);
    EXPECT_EQ(s2->last_step, 20);

    auto a = Params(**straight), b = Params(**second);
    ASSERT_EQ(a.size(), b.size());
    for (auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << arch << " " << name;
    // The second half's losses are the straight run's last 10.
    for (size_t i = 0; i < 10; ++i) EXPECT_EQ(s2->losses[i], s1->losses[10 + i]) << i;
    // The final checkpoints (parameters, optimizer state, RNG) are byte-identical.
    auto bytes = [&](const std::string& run) {
      std::ifstream f(dir_ + "/" + run + "/ckpt/step-00000020/rank-00000.bin", std::ios::binary);
      return std::string(std::istreambuf_iterator<char>(f), {});
    };
    EXPECT_FALSE(bytes(arch + "_a").empty());
    EXPECT_TRUE(bytes(arch + "_a") == bytes(arch + "_b")) << arch;
  }
}

TEST_F(TrainerTest, LossFallsAndLogsAreWritten) {
  auto t = Trainer::Create(Config("gpt2", {"train.lr=1e-2", "train.max_steps=40"}), Run("logs"));
  ASSERT_TRUE(t.ok());
  auto s = (*t)->run();
  ASSERT_TRUE(s.ok());
  EXPECT_LT(s->losses.back(), s->losses.front() - 1.0);
  EXPECT_GT(s->final_val_loss, 0);
  std::ifstream metrics(dir_ + "/logs/metrics.jsonl");
  int rows = 0, with_val = 0;
  for (std::string line; std::getline(metrics, line); ++rows) {
    auto j = nlohmann::json::parse(line);
    for (const char* k :
         {"step", "time", "loss", "lr", "tokens_per_s", "mfu", "grad_norm", "mem_peak_mb"})
      EXPECT_TRUE(j.contains(k)) << k;
    EXPECT_GT(j.value("grad_norm", 0.0), 0) << line;
    EXPECT_TRUE(std::isfinite(j.value("grad_norm", 0.0))) << line;
    EXPECT_GT(j.value("mem_peak_mb", 0.0), 50) << "a process with libtorch loaded: " << line;
    ASSERT_TRUE(j.contains("rank_compute_s")) << line;
    ASSERT_EQ(j["rank_compute_s"].size(), 1u) << line;
    EXPECT_GT(j["rank_compute_s"][0].get<double>(), 0) << line;
    EXPECT_LE(j["rank_compute_s"][0].get<double>(), j.value("step_time", 0.0) + 1e-3) << line;
    with_val += j.contains("val_loss");
  }
  EXPECT_EQ(rows, 40);
  EXPECT_EQ(with_val, 4);
  std::ifstream events(dir_ + "/logs/events.jsonl");
  std::vector<std::string> kinds;
  for (std::string line; std::getline(events, line);)
    kinds.push_back(nlohmann::json::parse(line)["event"]);
  EXPECT_EQ(kinds.front(), "start");
  EXPECT_EQ(kinds.back(), "end");
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "checkpoint_saved"), kinds.end());
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "eval"), kinds.end());
  EXPECT_TRUE(fs::exists(dir_ + "/logs/config.yaml"));
}

// Gradient accumulation: 2 micro-batches of 4 follow the same trajectory as 1 of 8.
// Building a job frees blocks its steps never ask for again: the block cache does not keep
// them, and keeps again once the job is built, whether building succeeded or not.
TEST_F(TrainerTest, TheBlockCacheKeepsAgainOnceTheJobIsBuilt) {
  core::BlockCache& cache = core::process_block_cache();
  auto kept_after = [&cache] {
    cache.release_free();
    void* p = cache.allocate(size_t(1) << 20);
    cache.deallocate(p);
    const bool kept = cache.stats().free_bytes >= int64_t(1) << 20;
    cache.release_free();
    return kept;
  };
  auto t = Trainer::Create(Config("gpt2", {"train.max_steps=1"}), Run("keeps"));
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_TRUE(kept_after()) << "built";
  // Refused after building began: the checkpoint to resume from is not one.
  const std::string broken = dir_ + "/broken";
  std::filesystem::create_directories(broken + "/ckpt/step-00000001");
  std::ofstream(broken + "/ckpt/step-00000001/model.safetensors") << "not a checkpoint";
  auto r = Trainer::Create(Config("gpt2", {"train.max_steps=1"}), Run("broken", true));
  EXPECT_TRUE(kept_after()) << "after " << (r.ok() ? "a fresh start" : r.status().ToString());
}

TEST_F(TrainerTest, AccumulationMatchesOneBigBatch) {
  auto a = Trainer::Create(Config("gpt2", {"train.micro_batch_size=8"}), Run("acc1", false, 5));
  auto b = Trainer::Create(Config("gpt2"), Run("acc2", false, 5));
  ASSERT_TRUE(a.ok() && b.ok());
  auto sa = (*a)->run(), sb = (*b)->run();
  ASSERT_TRUE(sa.ok() && sb.ok());
  for (size_t i = 0; i < 5; ++i) EXPECT_NEAR(sa->losses[i], sb->losses[i], 1e-5 * sa->losses[i]);
}

// A plan file that says what the keys say trains the same steps; the plan of a run is in its
// start event; bad plans and plans that contradict the keys are refused before training.
TEST_F(TrainerTest, APlanFileTrainsLikeTheKeysItReplaces) {
  const std::string plan = dir_ + "/plan.json";
  std::ofstream(plan) << R"({"zero_stage": 1, "layers": [{"checkpoint": true}, {}]})";
  auto a = Trainer::Create(Config("gpt2", {"parallel.zero_stage=1"}), Run("keys", false, 4));
  auto b = Trainer::Create(Config("gpt2", {"parallel.plan=" + plan}), Run("plan", false, 4));
  ASSERT_TRUE(a.ok() && b.ok()) << a.status().ToString() << b.status().ToString();
  auto sa = (*a)->run(), sb = (*b)->run();
  ASSERT_TRUE(sa.ok() && sb.ok());
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(sa->losses[i], sb->losses[i], 1e-5 * sa->losses[i]);
  std::ifstream events(dir_ + "/plan/events.jsonl");
  std::string line, start;
  while (std::getline(events, line))
    if (line.find("\"start\"") != std::string::npos) start = line;
  EXPECT_THAT(start, HasSubstr(R"("checkpoint":true)"));
  EXPECT_THAT(start, HasSubstr(R"("zero_stage":1)"));

  auto refused = [&](const std::string& text, std::vector<std::string> keys) {
    std::ofstream(plan) << text;
    keys.push_back("parallel.plan=" + plan);
    auto t = Trainer::Create(Config("gpt2", keys), Run("refused"));
    EXPECT_FALSE(t.ok()) << text;
    return t.ok() ? std::string() : t.status().ToString();
  };
  EXPECT_THAT(refused(R"({"mesh": {"tp": 2}})", {}), HasSubstr("needs 2 ranks, the job has 1"));
  EXPECT_THAT(refused(R"({"layers": [{}]})", {}), HasSubstr("plan.layers: has 1 entries"));
  EXPECT_THAT(refused(R"({"zero_stage": 1)", {}), HasSubstr("is not valid JSON"));
  EXPECT_THAT(refused(R"({"zero": 1})", {}), HasSubstr("plan.zero: unknown key"));
  EXPECT_THAT(refused("{}", {"parallel.zero_stage=2"}),
              HasSubstr("parallel.zero_stage is set while parallel.plan"));
  EXPECT_THAT(refused("{}", {"train.activation_checkpointing=true"}),
              HasSubstr("train.activation_checkpointing is set while parallel.plan"));
  fs::remove(plan);
  auto missing = Trainer::Create(Config("gpt2", {"parallel.plan=" + plan}), Run("missing"));
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().ToString(), HasSubstr(plan));
}

TEST_F(TrainerTest, ActivationCheckpointingDoesNotChangeNumerics) {
  auto a = Trainer::Create(Config("llama"), Run("ac0", false, 4));
  auto b = Trainer::Create(Config("llama", {"train.activation_checkpointing=true"}),
                           Run("ac1", false, 4));
  ASSERT_TRUE(a.ok() && b.ok());
  auto sa = (*a)->run(), sb = (*b)->run();
  ASSERT_TRUE(sa.ok() && sb.ok());
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(sa->losses[i], sb->losses[i], 1e-5 * sa->losses[i]);
}

TEST_F(TrainerTest, Bf16Trains) {
  auto t = Trainer::Create(Config("gpt2", {"train.precision=bf16", "train.lr=1e-2"}),
                           Run("bf16", false, 30));
  ASSERT_TRUE(t.ok());
  auto s = (*t)->run();
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_LT(s->losses.back(), s->losses.front() - 0.5);
}

// bf16 autocast under tp2 (+ sequence parallelism) follows the one-process bf16 run: the same
// bf16 matmuls on slices, summed over the ranks in fp32 or bf16 in another order, so the losses
// agree to bf16's resolution (1e-2 relative) over 8 steps. (Gloo has no bfloat16: the
// activations' collectives run on fp32 copies.)
TEST_F(TrainerTest, Bf16WithTensorParallelismFollowsOneProcess) {
  const std::vector<std::string> base = {"train.precision=bf16", "train.lr=1e-2",
                                         "train.max_steps=8", "train.eval_interval=0"};
  auto one = Trainer::Create(Config("gpt2", base), Run("bf16-tp1"));
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  auto ref = (*one)->run();
  ASSERT_TRUE(ref.ok());
  auto keys = base;
  keys.insert(keys.end(), {"parallel.tp=2", "parallel.sequence_parallel=true"});
  WorldRun w = RunWorld(Config("gpt2", keys), "bf16-tp2", 2);
  for (auto& sum : w.sums) {
    ASSERT_TRUE(sum.ok()) << sum.status().ToString();
    ASSERT_EQ(sum->losses.size(), ref->losses.size());
    for (size_t i = 0; i < ref->losses.size(); ++i)
      EXPECT_NEAR(sum->losses[i], ref->losses[i], 1e-2 * ref->losses[i]) << "step " << i + 1;
  }
}

TEST_F(TrainerTest, StopFlagSavesAndReturns) {
  std::atomic<bool> stop{true};
  auto r = Run("stop");
  r.stop = &stop;
  auto t = Trainer::Create(Config("gpt2"), r);
  ASSERT_TRUE(t.ok());
  auto s = (*t)->run();
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->interrupted);
  EXPECT_EQ(s->last_step, 0);
}

TEST_F(TrainerTest, ClearErrors) {
  auto bad_batch = train_options_from(Config("gpt2", {"train.global_batch_size=6"}));
  ASSERT_FALSE(bad_batch.ok());
  EXPECT_THAT(bad_batch.status().message(), HasSubstr("multiple of train.micro_batch_size"));
  {
    auto store = c10::make_intrusive<c10d::HashStore>();
    auto group = comm::Group::Create(store, 0, 1, {});
    auto run = Run("w");
    run.group = group.get();
    // One rank of a (pretend) bigger world cannot split 8 sequences of 4 over 3: checked early.
    auto cfg = Config("gpt2", {"train.global_batch_size=12", "train.micro_batch_size=8"});
    auto t = Trainer::Create(cfg, run);
    ASSERT_FALSE(t.ok());
  }
  // train.device: cpu; cuda / cuda:N only where this libtorch sees a GPU (a CPU-only build
  // refuses them with the reason), and never a malformed name.
  EXPECT_TRUE(resolve_device("cpu").ok());
  EXPECT_EQ(resolve_device("gpu").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(resolve_device("cuda:").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(resolve_device("cuda:x").status().code(), StatusCode::kInvalidArgument);
  for (const char* spec : {"cuda", "cuda:0"}) {
    auto d = resolve_device(spec);
    if (torch::cuda::is_available()) {
      ASSERT_TRUE(d.ok()) << d.status().ToString();
      EXPECT_TRUE(d->is_cuda());
    } else {
      EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument);
      EXPECT_THAT(d.status().message(), HasSubstr("no CUDA support or sees no GPU"));
    }
  }
  if (!torch::cuda::is_available()) {
    auto cuda = train_options_from(Config("gpt2", {"train.device=cuda"}));
    ASSERT_FALSE(cuda.ok());
    EXPECT_THAT(cuda.status().message(), HasSubstr("train.device cuda"));
  }
  auto long_seq = train_options_from(Config("gpt2", {"train.seq_len=32"}));
  ASSERT_FALSE(long_seq.ok());
  EXPECT_THAT(long_seq.status().message(), HasSubstr("must not exceed model.block_size"));
  auto no_data = Trainer::Create(Config("gpt2", {"data.path=" + dir_ + "/nothing"}), Run("x"));
  ASSERT_FALSE(no_data.ok());
  EXPECT_THAT(no_data.status().message(), HasSubstr("cairn data prepare"));
  auto small_vocab = Trainer::Create(Config("gpt2", {"model.vocab_size=100"}), Run("y"));
  ASSERT_FALSE(small_vocab.ok());
  EXPECT_THAT(small_vocab.status().message(), HasSubstr("larger than model.vocab_size"));
  // Resuming with another model shape is refused, naming the key.
  auto t = Trainer::Create(Config("gpt2"), Run("z", false, 2));
  ASSERT_TRUE(t.ok() && (*t)->run().ok());
  auto other = Trainer::Create(Config("gpt2", {"model.n_embd=64"}), Run("z", true));
  ASSERT_FALSE(other.ok());
  EXPECT_THAT(other.status().message(), HasSubstr("model.n_embd"));
}

// Data parallelism at world 2 and 3, DDP and ZeRO-1/2/3, ranks as threads: the loss of every step
// matches the one-process run with the same global batch to 1e-5 relative, and all ranks end
// with identical parameters equal to the one-process ones to 1e-4 relative (+ 1e-5 absolute).
// Ranks started with different configs (here another tp) stop at start with the reason, on
// every rank, instead of waiting for each other's collectives.
TEST_F(TrainerTest, RanksWithDifferentConfigsStopAtStart) {
  auto got = CreateOnRanks("mismatch", 2, 2, [this](int r) {
    return Config("gpt2", {r == 0 ? "parallel.tp=2" : "parallel.tp=1"});
  });
  for (const Status& s : got) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    EXPECT_THAT(s.message(), HasSubstr("was started with another config"));
  }
}

// tp 2 over ranks of different machines (one rank per machine) is refused on every rank.
TEST_F(TrainerTest, TensorParallelGroupsStayOnOneMachine) {
  auto got = CreateOnRanks("split-machines", 2, 1,
                           [this](int) { return Config("gpt2", {"parallel.tp=2"}); });
  for (const Status& s : got) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    EXPECT_THAT(s.message(), HasSubstr("whole tensor-parallel groups on each machine"));
  }
  // Two machines of two ranks: tp last in parallel.order keeps each tp pair on a machine;
  // dp last would pair ranks 0 and 2 across machines.
  auto order = [this](const std::string& o) {
    return [this, o](int) { return Config("gpt2", {"parallel.tp=2", "parallel.order=" + o}); };
  };
  for (const Status& s : CreateOnRanks("tp-last", 4, 2, order("pp, dp, cp, tp")))
    EXPECT_TRUE(s.ok()) << s.ToString();
  for (const Status& s : CreateOnRanks("dp-last", 4, 2, order("pp,tp,cp,dp"))) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    EXPECT_THAT(s.message(), HasSubstr("group of ranks 0 and 2 on different machines"));
  }
}

// A layout change that reorders no arithmetic trains bit for bit alike: dp2 from the defaults,
// and dp2 spelled out with tp 1 and another order of the mesh's axes.
TEST_F(TrainerTest, SpellingOutTheSameLayoutTrainsBitForBitAlike) {
  const std::vector<std::string> base = {"train.max_steps=6", "train.eval_interval=0"};
  auto spelled = base;
  spelled.insert(spelled.end(), {"parallel.dp=2", "parallel.tp=1", "parallel.order=tp,cp,dp,pp"});
  WorldRun a = RunWorld(Config("gpt2", base), "dp2-implicit", 2);
  WorldRun b = RunWorld(Config("gpt2", spelled), "dp2-spelled", 2);
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(a.sums[size_t(r)].ok() && b.sums[size_t(r)].ok());
    EXPECT_EQ(a.sums[size_t(r)]->losses, b.sums[size_t(r)]->losses) << "rank " << r;
    for (auto& [k, t] : a.params[size_t(r)]) EXPECT_TRUE(t.equal(b.params[size_t(r)].at(k))) << k;
  }
}

// parallel.dp, when set, must make dp x tp the world; parallel.order names the four axes once.
TEST_F(TrainerTest, MeshKeysThatDoNotFitAreRefusedNamingWhatWould) {
  auto refused = [&](std::vector<std::string> keys) {
    auto t = Trainer::Create(Config("gpt2", keys), Run("mesh-keys"));
    EXPECT_FALSE(t.ok());
    return t.ok() ? std::string() : t.status().ToString();
  };
  EXPECT_THAT(refused({"parallel.dp=2"}),
              HasSubstr("parallel.dp 2 x parallel.tp 1 = 2 ranks, but the job has 1: set "
                        "parallel.dp=1 or leave it out"));
  EXPECT_THAT(refused({"parallel.order=pp,dp,tp"}), HasSubstr("names all four axes"));
  EXPECT_THAT(refused({"parallel.order=pp,dp,dp,tp"}), HasSubstr("names 'dp' twice"));
  EXPECT_THAT(refused({"parallel.order=pp,dp,xx,tp"}), HasSubstr("parallel.order 'pp,dp,xx,tp'"));
  auto ok = Trainer::Create(Config("gpt2", {"parallel.dp=1", "parallel.order=tp,cp,dp,pp"}),
                            Run("mesh-keys-ok"));
  EXPECT_TRUE(ok.ok()) << ok.status().ToString();
}

// parallel.tp: tp2, tp2 with sequence parallelism (and activation checkpointing, whose
// recomputation reissues the blocks' collectives) and dp2 x tp2 (ZeRO-1) train the steps of the
// one-process run (losses to 1e-5, validation loss too); their checkpoints hold slices that one
// process resumes from, and a one-process checkpoint resumes at tp2.
TEST_F(TrainerTest, TensorParallelMatchesOneProcessAndCheckpointsCrossLayouts) {
  for (std::string arch : {"gpt2", "llama"}) {
    std::vector<std::string> base = {"train.max_steps=8", "train.eval_interval=0"};
    if (arch == "llama") base.push_back("model.n_kv_head=2");
    auto one = Trainer::Create(Config(arch, base), Run(arch + "-tp1"));
    ASSERT_TRUE(one.ok()) << one.status().ToString();
    auto ref = (*one)->run();
    ASSERT_TRUE(ref.ok());
    auto ref_params = Params(**one);
    fs::copy(dir_ + "/" + arch + "-tp1", dir_ + "/" + arch + "-tp1-copy",
             fs::copy_options::recursive);
    for (auto [world, keys] : {std::pair{2, std::vector<std::string>{"parallel.tp=2"}},
                               {2, {"parallel.tp=2", "parallel.sequence_parallel=true"}},
                               {2,
                                {"parallel.tp=2", "parallel.sequence_parallel=true",
                                 "train.activation_checkpointing=true"}},
                               {4, {"parallel.tp=2", "parallel.zero_stage=1"}}}) {
      auto extra = base;
      extra.insert(extra.end(), keys.begin(), keys.end());
      std::string name = arch + "-w" + std::to_string(world) + "-" + std::to_string(keys.size());
      WorldRun w = RunWorld(Config(arch, extra), name, world);
      ASSERT_NO_FATAL_FAILURE(ExpectLossesMatch(w, *ref, name));
      EXPECT_NEAR(w.sums[0]->final_val_loss, ref->final_val_loss, 1e-5 * ref->final_val_loss)
          << name;
      // After 8 AdamW steps an element whose gradient is nearly zero moves by the sign of
      // rounding noise (tp sums in another order): parameters agree to 1e-3 of each tensor's
      // scale; the losses above are the 1e-5 check.
      for (auto& [k, v] : w.params[size_t(world - 1)]) {
        const double diff = (v - ref_params[k]).abs().max().item<double>();
        EXPECT_LE(diff, 1e-3 * ref_params[k].abs().max().item<double>()) << name << " " << k;
      }
      // Saved as slices, nothing gathered over tp: a split tensor's shards come from its tp
      // ranks (GPT-2's c_attn: one per query / key / value block of each), and the manifest
      // names the layout.
      auto saved = ckpt::load_latest(dir_ + "/" + name + "/ckpt", nullptr);
      ASSERT_TRUE(saved.ok()) << saved.status().ToString();
      EXPECT_EQ(saved->manifest["mesh"]["tp"], 2) << name;
      size_t most = 0;
      for (auto& t : saved->manifest["tensors"]) most = std::max(most, t["shards"].size());
      EXPECT_EQ(most, arch == "gpt2" ? 6u : 2u) << name;
      // One process resumes from the tp checkpoint: whole tensors.
      auto resumed = Trainer::Create(Config(arch, base), Run(name, true));
      ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
      EXPECT_EQ((*resumed)->step(), 8);
    }
    // A one-process checkpoint resumes at tp2 and trains on like one process.
    auto more = base;
    more[0] = "train.max_steps=10";
    auto cont = Trainer::Create(Config(arch, more), Run(arch + "-tp1", true));
    ASSERT_TRUE(cont.ok()) << cont.status().ToString();
    auto cont_sum = (*cont)->run();
    ASSERT_TRUE(cont_sum.ok());
    auto tp_more = more;
    tp_more.push_back("parallel.tp=2");
    auto store = c10::make_intrusive<c10d::HashStore>();
    std::vector<Result<RunSummary>> sums(2, Status::Internal("not run"));
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r)  // from the copy of the one-process run's step-8 directory
      threads.emplace_back([&, r] {
        auto group = comm::Group::Create(store, r, 2, {});
        auto run = Run(arch + "-tp1-copy", true);
        run.group = group.get();
        run.local_ranks = 2;
        auto t = Trainer::Create(Config(arch, tp_more), run);
        if (!t.ok()) {
          sums[size_t(r)] = t.status();
          return;
        }
        sums[size_t(r)] = (*t)->run();
      });
    for (auto& t : threads) t.join();
    for (auto& s : sums) {
      ASSERT_TRUE(s.ok()) << s.status().ToString();
      ASSERT_EQ(s->losses.size(), cont_sum->losses.size());
      for (size_t i = 0; i < s->losses.size(); ++i)
        EXPECT_NEAR(s->losses[i], cont_sum->losses[i], 1e-5 * cont_sum->losses[i]) << arch;
    }
  }
}

TEST_F(TrainerTest, DataParallelMatchesOneProcess) {
  std::vector<std::string> batch = {"train.micro_batch_size=2", "train.global_batch_size=12"};
  auto one = Trainer::Create(Config("gpt2", batch), Run("dp1"));
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  auto ref = (*one)->run();
  ASSERT_TRUE(ref.ok());
  auto ref_params = Params(**one);
  for (int world : {2, 3})
    for (int stage : {0, 1, 2, 3}) {
      auto extra = batch;
      extra.push_back("parallel.zero_stage=" + std::to_string(stage));
      std::string name = "dp" + std::to_string(world) + "z" + std::to_string(stage);
      WorldRun w = RunWorld(Config("gpt2", extra), name, world);
      ASSERT_NO_FATAL_FAILURE(ExpectLossesMatch(w, *ref, name));
      auto& sums = w.sums;
      auto& params = w.params;
      for (int r = 0; r < world; ++r) {
        for (auto& [k, v] : params[size_t(r)]) {
          EXPECT_TRUE(torch::equal(v, params[0][k])) << name << " replicas differ in " << k;
          EXPECT_TRUE(torch::allclose(v, ref_params[k], 1e-4, 1e-5)) << name << " " << k;
        }
      }
      EXPECT_NEAR(sums[0]->final_val_loss, ref->final_val_loss, 1e-5 * ref->final_val_loss);
      // The checkpoint written by rank 0 loads into one process and continues.
      auto resumed = Trainer::Create(Config("gpt2", batch), Run(name, true));
      ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
      EXPECT_EQ((*resumed)->step(), 20);
    }
}

}  // namespace
}  // namespace cairn::train

namespace cairn::train {
namespace {

// A world that does not divide the global batch's micro-batches (an elastic job may get any
// world) trains the same global batch: at world 3, 4 micro-batches of 2 (one rank pads with a
// zero-weight micro-batch each step) follow the one-process run, DDP and ZeRO-3 alike, and the
// sample ids every rank consumed are the one-process ones.
TEST_F(TrainerTest, AWorldThatDoesNotDivideTheBatchTrainsTheSameSteps) {
  std::vector<std::string> batch = {"train.micro_batch_size=2", "train.global_batch_size=8",
                                    "data.log_sample_ids=true"};
  auto one = Trainer::Create(Config("gpt2", batch), Run("u1"));
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  auto ref = (*one)->run();
  ASSERT_TRUE(ref.ok());
  auto ref_params = Params(**one);
  auto read = [](const std::string& path) {
    std::ifstream f(path);
    std::vector<std::string> lines;
    for (std::string l; std::getline(f, l);) lines.push_back(l);
    return lines;
  };
  for (int stage : {0, 3}) {
    const int world = 3;
    auto extra = batch;
    extra.push_back("parallel.zero_stage=" + std::to_string(stage));
    const std::string name = "u3z" + std::to_string(stage);
    WorldRun w = RunWorld(Config("gpt2", extra), name, world);
    ASSERT_NO_FATAL_FAILURE(ExpectLossesMatch(w, *ref, name));
    for (int r = 0; r < world; ++r) {
      for (auto& [k, v] : w.params[size_t(r)])
        EXPECT_TRUE(torch::allclose(v, ref_params[k], 1e-4, 1e-5)) << name << " " << k;
    }
    // samples.jsonl: the same ids per step (each rank's own, gathered), in the same order.
    EXPECT_EQ(read(dir_ + "/" + name + "/samples.jsonl"), read(dir_ + "/u1/samples.jsonl")) << name;
  }
}

}  // namespace
}  // namespace cairn::train
