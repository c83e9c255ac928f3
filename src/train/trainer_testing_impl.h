// The trainer tests' fixture: configs, run directories, worlds of ranks as threads.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <random>
#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "cairn/ckpt/checkpoint.h"
#include "cairn/ckpt/digest.h"
#include "cairn/ckpt/persist.h"
#include "cairn/ckpt/shm_slot.h"
#include "cairn/comm/group.h"
#include "cairn/data/token_file.h"
#include "cairn/elastic/flash_slots.h"
#include "cairn/model/language_model.h"
#include "cairn/train/options.h"
#include "cairn/train/trainer.h"

namespace fs = std::filesystem;

namespace cairn::train {

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("cairn_trainer_" + std::to_string(getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_ + "/data");
    // A small corpus with structure: a repeating pattern plus noise, vocabulary 256.
    std::mt19937 rng(7);
    std::vector<int32_t> tokens;
    for (int i = 0; i < 6000; ++i) tokens.push_back(int32_t((i * 7 + (rng() % 3)) % 256));
    ASSERT_TRUE(data::write_token_file(dir_ + "/data/train.bin", tokens, 256).ok());
    tokens.resize(800);
    ASSERT_TRUE(data::write_token_file(dir_ + "/data/val.bin", tokens, 256).ok());
  }
  void TearDown() override {
    for (auto& run : runs_) elastic::unlink_flash_slots(run, {0, 1, 2});
    fs::remove_all(dir_);
  }

  core::Config Config(const std::string& arch, std::vector<std::string> extra = {}) {
    std::vector<std::string> o = {
        "model.arch=" + arch,   "model.n_layer=2",          "model.n_head=2",
        "model.n_embd=32",      "model.vocab_size=256",     "model.block_size=16",
        "train.seq_len=16",     "train.micro_batch_size=4", "train.global_batch_size=8",
        "train.max_steps=20",   "train.warmup_steps=3",     "train.eval_interval=10",
        "train.eval_batches=2", "train.threads=1",          "data.path=" + dir_ + "/data"};
    o.insert(o.end(), extra.begin(), extra.end());
    auto c = core::load_config_text("", job_spec(), o);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return *c;
  }
  RunOptions Run(const std::string& name, bool resume = false, int64_t max_steps = 0) {
    RunOptions r;
    r.keep_slots = true;  // as under `cairn run`: the tests restart from memory
    r.run_dir = dir_ + "/" + name;
    std::lock_guard<std::mutex> lock(runs_mu_);  // Run() is called from rank threads too
    runs_.push_back(r.run_dir);
    r.resume = resume;
    r.stop_after = max_steps;
    r.progress = false;
    r.testing.measure_peak = false;
    return r;
  }
  static std::map<std::string, torch::Tensor> Params(Trainer& t) { return t.gather_parameters(); }
  // One run of `world` ranks as threads over one store: each rank's summary and parameters.
  struct WorldRun {
    std::vector<Result<RunSummary>> sums;
    std::vector<std::map<std::string, torch::Tensor>> params;
  };
  WorldRun RunWorld(const core::Config& cfg, const std::string& name, int world,
                    bool resume = false) {
    auto store = c10::make_intrusive<c10d::HashStore>();
    WorldRun out{std::vector<Result<RunSummary>>(size_t(world), Status::Internal("not run")),
                 std::vector<std::map<std::string, torch::Tensor>>(static_cast<size_t>(world))};
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r)
      threads.emplace_back([&, r] {
        auto group = comm::Group::Create(store, r, world, {});
        auto run = Run(name, resume);
        run.group = group.get();
        run.local_ranks = world;  // every rank on this machine
        auto t = Trainer::Create(cfg, run);
        if (!t.ok()) {
          out.sums[size_t(r)] = t.status();
          return;
        }
        out.sums[size_t(r)] = (*t)->run();
        out.params[size_t(r)] = Params(**t);
      });
    for (auto& t : threads) t.join();
    return out;
  }
  // Trainer::Create on `world` ranks (threads) of `local_ranks` per machine, rank r with
  // config(r): each rank's status.
  std::vector<Status> CreateOnRanks(const std::string& name, int world, int local_ranks,
                                    const std::function<core::Config(int)>& config) {
    auto store = c10::make_intrusive<c10d::HashStore>();
    std::vector<Status> got(static_cast<size_t>(world));
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r)
      threads.emplace_back([&, r] {
        auto group = comm::Group::Create(store, r, world, {});
        auto run = Run(name);
        run.group = group.get();
        run.local_ranks = local_ranks;
        auto t = Trainer::Create(config(r), run);
        got[size_t(r)] = t.ok() ? Status::Ok() : t.status();
      });
    for (auto& t : threads) t.join();
    return got;
  }
  // Every rank ran, and its loss of every step matches `ref`'s to 1e-5 relative.
  static void ExpectLossesMatch(const WorldRun& w, const RunSummary& ref, const std::string& name) {
    for (size_t r = 0; r < w.sums.size(); ++r) {
      ASSERT_TRUE(w.sums[r].ok()) << w.sums[r].status().ToString();
      auto& l = w.sums[r]->losses;
      ASSERT_EQ(l.size(), ref.losses.size());
      for (size_t i = 0; i < l.size(); ++i)
        EXPECT_NEAR(l[i], ref.losses[i], 1e-5 * ref.losses[i]) << name << " step " << i;
    }
  }
  std::string dir_;
  std::mutex runs_mu_;
  std::vector<std::string> runs_;  // run directories whose slots TearDown removes
};

}  // namespace cairn::train
