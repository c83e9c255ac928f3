// The hardware profile: the all-reduce fit recovers a known link, and a short real profile of 2
// ranks gives positive figures for every measurement and a cluster file the planner loads.
// The model profile: the fit recovers known times, a short real profile of a small model has
// every part at every shape, and its file loads for the same model only; with it the cost
// model's compute is the profile's times.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>

#include "cairn/core/fs.h"
#include "cairn/planner/profile.h"
#include "planner/planner_testing_impl.h"
#include "planner/profile_impl.h"

namespace cairn::planner {
namespace {

TEST(ProfileHw, TheAllReduceFitRecoversTheLink) {
  const Link want{2.5e9, 40e-6};
  for (int n : {2, 4}) {
    std::vector<std::pair<double, double>> points;
    for (double bytes : {4096.0, 65536.0, 1048576.0, 16777216.0})
      points.emplace_back(bytes, allreduce_s(bytes, n, want));
    const Link got = fit_allreduce(points, n);
    EXPECT_NEAR(got.bandwidth, want.bandwidth, 1e-6 * want.bandwidth) << n;
    EXPECT_NEAR(got.latency, want.latency, 1e-9) << n;
  }
}

TEST(ProfileHw, AShortProfileGivesACluster) {
  auto p = profile_hardware(2, 0.02);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->ranks, 2);
  EXPECT_GT(p->gemm_fp32_flops, 1e8);
  EXPECT_GT(p->gemm_bf16_flops, 0);
  EXPECT_GT(p->memcpy_bytes_per_s, 1e8);
  EXPECT_GT(p->memory_bytes, 0);
  ASSERT_EQ(p->collectives.size(), 4u * 7u);  // 4 operations x 4 KiB, 16 KiB, ..., 16 MiB
  for (const auto& pt : p->collectives) EXPECT_GT(pt.seconds, 0) << pt.op << " " << pt.bytes;
  EXPECT_GT(p->link.bandwidth, 0);
  auto c = cluster_from_json(profile_to_cluster(*p, "here", 0.4).dump(), "profile");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->devices(), 2);
  EXPECT_DOUBLE_EQ(c->efficiency, 0.4);
  EXPECT_NEAR(c->peak_flops, p->gemm_fp32_flops, 1e-6 * p->gemm_fp32_flops);
  EXPECT_GE(p->cores, 1);
  EXPECT_EQ(c->cores_per_node, p->cores) << "the cores the ranks share, for the cost model";
  EXPECT_GE(p->dp_overlap, 0);
  EXPECT_LE(p->dp_overlap, 1);
  EXPECT_DOUBLE_EQ(c->dp_overlap, p->dp_overlap) << "the measured overlap, not the default";
  EXPECT_FALSE(profile_hardware(1, 0.1).ok());
}

TEST(ProfileModel, TheFitRecoversKnownTimes) {
  const PartTime want{30e-6, 2e-6, 5e-9};
  std::vector<std::array<double, 3>> points;
  for (double T : {64.0, 128.0})
    for (double B : {1.0, 4.0, 8.0}) points.push_back({B * T, T, want.at(B * T, T)});
  const PartTime got = ModelProfile::fit_part(points);
  EXPECT_NEAR(got.fixed, want.fixed, 1e-12);
  EXPECT_NEAR(got.per_token, want.per_token, 1e-14);
  EXPECT_NEAR(got.per_token_pos, want.per_token_pos, 1e-16);
  // One sequence length: no position term, the rest still fitted.
  points.resize(3);
  const PartTime flat = ModelProfile::fit_part(points);
  EXPECT_EQ(flat.per_token_pos, 0);
  EXPECT_NEAR(flat.at(8 * 64, 64), want.at(8 * 64, 64), 1e-9);
}

TEST(ProfileModel, AShortProfileLoadsForItsModelOnly) {
  const model::ModelConfig m = testing::Tiny().model;
  auto p = profile_model(m, 2, {1, 2}, {16, 32}, 0.01);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  // 3 parts x 2 lengths x 2 sizes, alone, tensor-parallel over the 2 ranks and
  // context-parallel (ring, Ulysses).
  ASSERT_EQ(profiled_tp_degrees(m, 2), std::vector<int>{2});
  const std::vector<std::pair<std::string, int>> cps = {{"ring", 2}, {"ulysses", 2}};
  ASSERT_EQ(profiled_cp_splits(m, 2, {16, 32}), cps);
  EXPECT_EQ(profiled_cp_splits(m, 2, {6, 32}),
            (std::vector<std::pair<std::string, int>>{{"ulysses", 2}}))
      << "a ring needs 2 cp chunks in every length, Ulysses cp";
  ASSERT_EQ(p->points.size(), 4u * 3u * 2u * 2u);
  for (const auto& pt : p->points) {
    EXPECT_GT(pt.forward_s, 0) << pt.part << " tp " << pt.tp;
    EXPECT_GT(pt.backward_s, 0) << pt.part << " tp " << pt.tp;
    // The head's forward without autograd, timed for it alone.
    if (pt.part == "head")
      EXPECT_GT(pt.no_grad_s, 0) << "tp " << pt.tp << " cp " << pt.cp;
    else
      EXPECT_EQ(pt.no_grad_s, 0) << pt.part;
  }
  ASSERT_EQ(p->fit.tensor_parallel.count(2), 1u);
  EXPECT_GT(p->fit.tensor_parallel.at(2).block.at(64, 32), 0);
  ASSERT_EQ(p->fit.context_parallel.size(), 2u);
  EXPECT_GT(p->fit.context_parallel.at("ring2").block.at(32, 32), 0);
  EXPECT_GT(p->fit.context_parallel.at("ulysses2").block.at(32, 32), 0);
  EXPECT_TRUE(profiled_tp_degrees(m, 3).empty()) << "the heads do not split in 3";
  EXPECT_GT(p->fit.block.at(64, 32), 0);
  const std::string dir = ::testing::TempDir() + "/profile_model_test";
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/model.json";
  ASSERT_TRUE(core::write_file_atomic(path, model_profile_to_json(*p, m).dump()).ok());
  auto back = load_model_profile(path, m);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_DOUBLE_EQ(back->block.per_token, p->fit.block.per_token);
  EXPECT_GT(p->fit.head_no_grad.at(64, 32), 0);
  EXPECT_DOUBLE_EQ(back->head_no_grad.per_token, p->fit.head_no_grad.per_token);
  EXPECT_DOUBLE_EQ(back->head_no_grad.fixed, p->fit.head_no_grad.fixed);
  EXPECT_GT(p->fit.optimizer_per_param, 0);
  EXPECT_DOUBLE_EQ(back->optimizer_per_param, p->fit.optimizer_per_param);
  EXPECT_GE(p->fit.code_bytes, 0) << "pages the kernels brought in (none if already resident)";
  EXPECT_DOUBLE_EQ(back->code_bytes, p->fit.code_bytes);
  EXPECT_DOUBLE_EQ(back->heap_bytes, p->fit.heap_bytes);
  EXPECT_EQ(p->rounds, kProfileRounds);
  EXPECT_EQ(model_profile_to_json(*p, m).at("rounds"), kProfileRounds);
  ASSERT_EQ(back->tensor_parallel.count(2), 1u);
  EXPECT_DOUBLE_EQ(back->tensor_parallel.at(2).head.per_token,
                   p->fit.tensor_parallel.at(2).head.per_token);
  ASSERT_EQ(back->context_parallel.count("ulysses2"), 1u);
  EXPECT_DOUBLE_EQ(back->context_parallel.at("ulysses2").block.per_token,
                   p->fit.context_parallel.at("ulysses2").block.per_token);
  EXPECT_DOUBLE_EQ(back->context_parallel.at("ring2").head_no_grad.per_token,
                   p->fit.context_parallel.at("ring2").head_no_grad.per_token);
  // Why the profile, changed by `edit`, is refused.
  auto refusal = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = model_profile_to_json(*p, m);
    edit(j);
    std::ofstream(dir + "/edited.json") << j.dump();
    return std::string(load_model_profile(dir + "/edited.json", m).status().message());
  };
  // A cp split that is not one is named.
  EXPECT_NE(refusal([](nlohmann::json& j) {
              j["fit"]["context_parallel"]["2d2"] = j["fit"]["context_parallel"]["ring2"];
            }).find("fit.context_parallel: key \"2d2\" is not ring or ulysses"),
            std::string::npos);
  // A tp degree that is not one is named.
  EXPECT_NE(refusal([](nlohmann::json& j) {
              j["fit"]["tensor_parallel"]["one"] = j["fit"]["tensor_parallel"]["2"];
            }).find("fit.tensor_parallel: key \"one\" is not a tp degree of at least 2"),
            std::string::npos);
  // One written before the head's forward without autograd was timed, at any split.
  EXPECT_NE(refusal([](nlohmann::json& j) { j["fit"].erase("head_no_grad"); })
                .find("fit.head_no_grad: missing (a profile from before the head's forward "
                      "without autograd was timed: run cairn plan profile-model again)"),
            std::string::npos);
  EXPECT_NE(refusal([](nlohmann::json& j) {
              j["fit"]["tensor_parallel"]["2"].erase("head_no_grad");
            }).find("fit.tensor_parallel.2.head_no_grad: missing"),
            std::string::npos);
  // A profile written before optimizer steps were timed is refused, saying what to do.
  EXPECT_NE(refusal([](nlohmann::json& j) { j["fit"].erase("optimizer"); })
                .find("fit.optimizer: missing (a profile from before optimizer steps were timed: "
                      "run cairn plan profile-model again)"),
            std::string::npos);
  // One written before the code its kernels page in (or the heap its small allocations grow)
  // was measured, and a negative one.
  for (const auto& [key, what] :
       {std::pair<std::string, std::string>{"code_bytes", "the code its kernels page in"},
        {"heap_bytes", "the heap its small allocations grow"}}) {
    EXPECT_NE(refusal([&](nlohmann::json& j) { j["fit"].erase(key); })
                  .find("fit." + key + ": missing (a profile from before " + what +
                        " was measured: run cairn plan profile-model again)"),
              std::string::npos)
        << key;
    EXPECT_NE(
        refusal([&](nlohmann::json& j) { j["fit"][key] = -1; }).find("fit." + key + ": negative"),
        std::string::npos)
        << key;
  }
  // A profile of the fastest repetitions (written before the median was kept) likewise.
  EXPECT_NE(refusal([](nlohmann::json& j) {
              j.erase("statistic");
            }).find("statistic: not \"median\" (a profile of the fastest repetitions"),
            std::string::npos);
  model::ModelConfig deeper = m;  // the parts are per block: any depth
  deeper.n_layer = 12;
  EXPECT_TRUE(load_model_profile(path, deeper).ok());
  model::ModelConfig wider = m;
  wider.n_embd = 128;
  auto other = load_model_profile(path, wider);
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.status().message().find("a profile of another model (model.n_embd 64, the "
                                          "job's 128)"),
            std::string::npos)
      << other.status().message();
  std::ofstream(dir + "/broken.json") << "{\"model\": ";
  EXPECT_NE(load_model_profile(dir + "/broken.json", m).status().message().find("not a JSON"),
            std::string::npos);
  // Bad shapes are refused by name.
  EXPECT_NE(profile_model(m, 2, {1, 2}, {128}, 0.01).status().message().find("sequence length 128"),
            std::string::npos);
  EXPECT_FALSE(profile_model(m, 2, {1}, {16}, 0.01).ok());  // one token count: nothing to fit
  EXPECT_NE(profile_model(m, 2, {1, 2}, {16}, 0.01, 0)
                .status()
                .message()
                .find("--rounds must be at least 1"),
            std::string::npos);
  std::filesystem::remove_all(dir);
}

// A round the machine was slow in is dropped: each point's times are the median of its
// rounds', the points' order and shapes those of the rounds.
TEST(ProfileModel, EachPointIsTheMedianOfItsRounds) {
  auto point = [](const char* part, int64_t batch, double f, double b, double act,
                  double no_grad = 0) {
    ModelProfile::Point p;
    p.part = part;
    p.batch = batch;
    p.seq = 32;
    p.forward_s = f;
    p.backward_s = b;
    p.activation_bytes = act;
    p.no_grad_s = no_grad;
    return p;
  };
  const std::vector<std::vector<ModelProfile::Point>> rounds = {
      {point("block", 1, 1.0, 2.0, 100), point("head", 2, 5.0, 6.0, 300, 2.0)},
      {point("block", 1, 3.0, 7.0, 100), point("head", 2, 9.0, 8.0, 300, 4.0)},  // a slow round
      {point("block", 1, 1.2, 2.2, 120), point("head", 2, 5.5, 6.5, 300, 1.5)}};
  const auto got = median_of_rounds(rounds);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].part, "block");
  EXPECT_EQ(got[1].batch, 2);
  EXPECT_DOUBLE_EQ(got[0].forward_s, 1.2);
  EXPECT_DOUBLE_EQ(got[0].backward_s, 2.2);
  EXPECT_DOUBLE_EQ(got[0].activation_bytes, 100);
  EXPECT_DOUBLE_EQ(got[1].forward_s, 5.5);
  EXPECT_DOUBLE_EQ(got[1].backward_s, 6.5);
  EXPECT_DOUBLE_EQ(got[1].no_grad_s, 2.0);
  // One round: its own times.
  EXPECT_DOUBLE_EQ(median_of_rounds({rounds[1]})[1].forward_s, 9.0);
}

TEST(ProfileModel, TheCostModelTakesItsComputeFromTheProfile) {
  Workload w = testing::Tiny();  // 4 blocks, sequences of 64, 8 per step
  const Cluster c = testing::TwoNodes();
  MeasuredModel mm;
  mm.embedding = {1e-3, 1e-6, 0};
  mm.block = {2e-3, 4e-6, 1e-8};
  mm.block_forward = {1e-3, 1e-6, 0};
  mm.head = {3e-3, 5e-6, 0};
  mm.embedding_forward = {0.5e-3, 0.5e-6, 0};
  mm.head_forward = {2e-3, 4e-6, 0};
  mm.head_no_grad = {1e-3, 2e-6, 0};
  w.measured = mm;
  Candidate one{parallel::Plan::data_parallel(1, w.model.n_layer, 0), 4};
  const Cost k = estimate(w, c, one);
  // 2 micro-batches of 4 x 64 tokens: the embedding, 4 blocks and the head each.
  const double tokens = 4 * 64;
  EXPECT_NEAR(
      k.compute_s,
      2 * (mm.embedding.at(tokens, 64) + 4 * mm.block.at(tokens, 64) + mm.head.at(tokens, 64)),
      1e-12);
  EXPECT_EQ(k.recompute_s, 0);

  // ZeRO-3 keeps no graph: its forward runs every stage without autograd, its backward runs
  // each again with it. What it adds is that first forward: the embedding's and the blocks'
  // forwards and the head's without autograd, whose fused loss then computes no gradients (its
  // forward with autograd is nearly the whole head). One micro-batch on each of 2 ranks.
  const Cost z3 =
      estimate(w, c, Candidate{parallel::Plan::data_parallel(2, w.model.n_layer, 3), 4});
  EXPECT_NEAR(z3.recompute_s,
              mm.embedding_forward.at(tokens, 64) + 4 * mm.block_forward.at(tokens, 64) +
                  mm.head_no_grad.at(tokens, 64),
              1e-12);

  // tp 2: without a measurement at that degree, the whole parts split in two plus the tp
  // collectives; with one, its times as measured (their collectives in them), none added.
  Candidate tp2{parallel::Plan::data_parallel(2, w.model.n_layer, 0), 4};
  tp2.plan.mesh = comm::MeshShape{1, 1, 1, 2};
  for (auto& layer : tp2.plan.layers) layer.tp = 2;
  const Cost even = estimate(w, c, tp2);
  EXPECT_NEAR(even.compute_s, k.compute_s / 2, 1e-12);
  EXPECT_GT(even.tp_s, 0);
  MeasuredParts at2;
  at2.embedding = {2e-3, 1e-6, 0};
  at2.block = {3e-3, 3e-6, 1e-8};
  at2.head = {4e-3, 3e-6, 0};
  w.measured->tensor_parallel[2] = at2;
  const Cost measured = estimate(w, c, tp2);
  EXPECT_NEAR(
      measured.compute_s,
      2 * (at2.embedding.at(tokens, 64) + 4 * at2.block.at(tokens, 64) + at2.head.at(tokens, 64)),
      1e-12);
  EXPECT_EQ(measured.tp_s, 0);

  // cp 2 Ulysses: the parts measured on a rank's half of each sequence, its all-to-alls in
  // them.
  Candidate ulysses{parallel::Plan::data_parallel(2, w.model.n_layer, 0), 4};
  ulysses.plan.mesh = comm::MeshShape{1, 1, 2, 1};
  for (auto& layer : ulysses.plan.layers) layer.cp_kind = parallel::ContextParallelKind::kUlysses;
  EXPECT_GT(estimate(w, c, ulysses).cp_s, 0) << "modelled from the link without a measurement";
  w.measured->context_parallel["ulysses2"] = at2;
  const Cost rc = estimate(w, c, ulysses);
  EXPECT_NEAR(rc.compute_s,
              2 * (at2.embedding.at(tokens / 2, 64) + 4 * at2.block.at(tokens / 2, 64) +
                   at2.head.at(tokens / 2, 64)),
              1e-12);
  EXPECT_EQ(rc.cp_s, 0);
}

// Profiles taken at other times, merged: each point the median of the profiles' (the slow
// one dropped), every split fitted again from those, the optimizer step the median, the code
// and heap the largest; what cannot be merged is refused naming the file and the difference.
TEST(ProfileModel, MergedProfilesTakeEachPointsMedian) {
  const model::ModelConfig m = testing::Tiny().model;
  const std::string dir = ::testing::TempDir() + "/profile_merge_test";
  std::filesystem::create_directories(dir);
  // time = slow x (fixed + per token x tokens): a part's fits recover fixed and per token.
  const double fixed[3] = {1e-3, 2e-3, 5e-3}, per_token[3] = {1e-6, 4e-6, 9e-6};
  const char* parts[3] = {"embedding", "block", "head"};
  auto profile = [&](double slow, double optimizer, double code, int ranks = 2) {
    ModelProfile p;
    p.ranks = ranks;
    p.fit.optimizer_per_param = optimizer;
    p.fit.code_bytes = code;
    p.fit.heap_bytes = 2 * code;
    for (int tp : {1, 2})
      for (int i = 0; i < 3; ++i)
        for (int64_t batch : {1, 4}) {
          ModelProfile::Point pt;
          pt.part = parts[i];
          pt.batch = batch;
          pt.seq = 32;
          pt.tp = tp;
          const double t = slow * (fixed[i] + per_token[i] * double(batch * 32)) / tp;
          pt.forward_s = t / 3;
          pt.backward_s = 2 * t / 3;
          pt.no_grad_s = i == 2 ? t / 4 : 0;
          pt.activation_bytes = slow * 1000;
          p.points.push_back(pt);
        }
    // Points in another order than the first file's: a merge pairs them by name.
    if (slow > 2) std::reverse(p.points.begin(), p.points.end());
    return model_profile_to_json(p, m);
  };
  auto write = [&](const std::string& name, const nlohmann::json& j) {
    std::ofstream(dir + "/" + name) << j.dump();
    return dir + "/" + name;
  };
  const std::vector<std::string> three = {write("a.json", profile(1.0, 3e-9, 10)),
                                          write("b.json", profile(3.0, 9e-9, 30)),  // slow
                                          write("c.json", profile(1.2, 4e-9, 20))};
  auto merged = merge_model_profiles(three, m);
  ASSERT_TRUE(merged.ok()) << merged.status().ToString();
  EXPECT_EQ(merged->merged, 3);
  EXPECT_EQ(merged->ranks, 2);
  EXPECT_EQ(merged->rounds, 3);  // each file one round
  ASSERT_EQ(merged->points.size(), 12u);
  for (const auto& pt : merged->points) EXPECT_DOUBLE_EQ(pt.activation_bytes, 1200) << pt.part;
  // The median profile's times, 1.2 x the fast one's, at every split.
  const MeasuredParts& alone = merged->fit;
  const MeasuredParts& tp2 = merged->fit.tensor_parallel.at(2);
  for (const MeasuredParts* f : {&alone, &tp2}) {
    const double tp = f == &alone ? 1 : 2;
    EXPECT_NEAR(f->block.fixed, 1.2 * fixed[1] / tp, 1e-12);
    EXPECT_NEAR(f->block.per_token, 1.2 * per_token[1] / tp, 1e-15);
    EXPECT_NEAR(f->head.per_token, 1.2 * per_token[2] / tp, 1e-15);
    EXPECT_NEAR(f->head_forward.fixed, 1.2 * fixed[2] / tp / 3, 1e-12);
    EXPECT_NEAR(f->head_no_grad.per_token, 1.2 * per_token[2] / tp / 4, 1e-15);
    EXPECT_NEAR(f->embedding.fixed, 1.2 * fixed[0] / tp, 1e-12);
  }
  EXPECT_DOUBLE_EQ(merged->fit.optimizer_per_param, 4e-9);
  EXPECT_DOUBLE_EQ(merged->fit.code_bytes, 30);
  EXPECT_DOUBLE_EQ(merged->fit.heap_bytes, 60);
  // Written, it says so and loads for the planner.
  const nlohmann::json j = model_profile_to_json(*merged, m);
  EXPECT_EQ(j.at("merged"), 3);
  EXPECT_NE(j.at("source").get<std::string>().find("merged by cairn plan profile-model --merge "
                                                   "from 3 profiles"),
            std::string::npos);
  auto back = load_model_profile(write("merged.json", j), m);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_DOUBLE_EQ(back->block.per_token, merged->fit.block.per_token);
  // Refusals.
  auto refusal = [&](const std::vector<std::string>& paths) {
    return std::string(merge_model_profiles(paths, m).status().message());
  };
  EXPECT_NE(refusal({three[0]}).find("needs at least two profiles, got 1"), std::string::npos);
  EXPECT_NE(refusal({three[0], write("w4.json", profile(1, 1e-9, 1, 4))})
                .find("w4.json: a profile of 4 ranks, " + three[0] +
                      "'s of 2: merge profiles of one world"),
            std::string::npos);
  nlohmann::json fewer = profile(1, 1e-9, 1);
  fewer["points"].erase(0);  // the embedding at micro-batch 1, alone
  EXPECT_NE(refusal({three[0], write("fewer.json", fewer)})
                .find("fewer.json: no point embedding at micro-batch 1 x seq 32, tp 1, cp 1, "
                      "which " +
                      three[0] +
                      " has (merge profiles taken with the same --ranks, --batch "
                      "and --seq)"),
            std::string::npos);
  nlohmann::json more = profile(1, 1e-9, 1);
  more["points"].push_back(more["points"][0]);
  more["points"].back()["batch"] = 8;
  EXPECT_NE(refusal({three[0], write("more.json", more)})
                .find("more.json: a point embedding at micro-batch 8 x seq 32, tp 1, cp 1, which " +
                      three[0] + " has not"),
            std::string::npos);
  more["points"].back()["batch"] = 1;
  EXPECT_NE(refusal({three[0], write("twice.json", more)})
                .find("twice.json: points: embedding at micro-batch 1 x seq 32, tp 1, cp 1 twice"),
            std::string::npos);
  nlohmann::json bad = profile(1, 1e-9, 1);
  bad["points"][3]["forward_us"] = -5;
  EXPECT_NE(refusal({three[0], write("bad.json", bad)})
                .find("bad.json: points[3].forward_us: negative or not finite"),
            std::string::npos);
  bad = profile(1, 1e-9, 1);
  bad["points"][2]["cp_kind"] = "ring";
  EXPECT_NE(refusal({three[0], write("kind.json", bad)})
                .find("kind.json: points[2].cp_kind: \"ring\" at cp 1"),
            std::string::npos);
  bad = profile(1, 1e-9, 1);
  bad.erase("points");
  EXPECT_NE(
      refusal({three[0], write("none.json", bad)}).find("none.json: points: missing or empty"),
      std::string::npos);
  model::ModelConfig wider = m;
  wider.n_embd = 128;
  EXPECT_NE(std::string(merge_model_profiles(three, wider).status().message())
                .find("a.json: a profile of another model (model.n_embd 64"),
            std::string::npos);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace cairn::planner
