#include "cairn/parallel/plan.h"

#include <gtest/gtest.h>

namespace cairn::parallel {
namespace {

using nlohmann::json;

model::ModelConfig small_model() {
  model::ModelConfig m;
  m.n_layer = 4;
  m.n_head = 4;
  m.n_embd = 64;
  return m;
}

// The error of `s`, expecting it to be one.
std::string error_of(const Status& s) {
  EXPECT_FALSE(s.ok());
  return s.message();
}
template <typename T>
std::string error_of(const Result<T>& r) {
  EXPECT_FALSE(r.ok());
  return r.ok() ? "" : r.status().message();
}

TEST(Plan, DataParallelIsWhatAConfigWithoutModelParallelismMeans) {
  Plan p = Plan::data_parallel(2, 4, 1);
  EXPECT_EQ(p.mesh.dp, 2);
  EXPECT_EQ(p.mesh.size(), 2);
  EXPECT_EQ(p.layers.size(), 4u);
  EXPECT_TRUE(p.validate(small_model(), 2).ok());
  EXPECT_EQ(p.summary(), "pp=1 dp=2 cp=1 tp=1, ZeRO-1, 4 blocks");
}

TEST(Plan, JsonRoundTripsEveryField) {
  Plan p;
  p.mesh = {2, 1, 2, 2};
  p.order = {comm::Axis::kPipeline, comm::Axis::kData, comm::Axis::kTensor, comm::Axis::kContext};
  p.zero_stage = 2;
  p.bucket_bytes = 4 << 20;
  p.layers.assign(4, LayerPlan{2, true, ContextParallelKind::kRing, false});
  p.layers[1].checkpoint = true;
  p.pipeline.cuts = {2};
  p.pipeline.schedule = PipelineSchedule::kGPipe;
  p.cp_ulysses = 0;
  p.cp_overlap = false;
  auto back = Plan::from_json(json::parse(p.to_json().dump()), 4);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(*back == p) << back->to_json().dump() << "\nvs\n" << p.to_json().dump();
  EXPECT_TRUE(p.validate(small_model(), 8).ok()) << p.validate(small_model(), 8).ToString();
  EXPECT_EQ(p.summary(),
            "pp=2 dp=1 cp=2 tp=2, ZeRO-2, 4 blocks (1 checkpointed), sequence parallel, cp ring, "
            "pipeline gpipe, blocks per stage [2, 2]");
}

TEST(Plan, MissingLayersTakeTheMeshTpAndTheTopLevelKeys) {
  auto p = Plan::from_json(json::parse(R"({"mesh": {"tp": 2, "dp": 2},
      "sequence_parallel": true, "checkpoint": true})"),
                           4);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->layers.size(), 4u);
  for (const LayerPlan& l : p->layers) {
    EXPECT_EQ(l.tp, 2);
    EXPECT_TRUE(l.sequence_parallel);
    EXPECT_TRUE(l.checkpoint);
    EXPECT_EQ(l.cp_kind, ContextParallelKind::kNone);
  }
  EXPECT_TRUE(p->validate(small_model(), 4).ok());
  // An empty object is one-process training.
  auto one = Plan::from_json(json::object(), 4);
  ASSERT_TRUE(one.ok());
  EXPECT_TRUE(*one == Plan::data_parallel(1, 4));
}

TEST(Plan, FromJsonNamesTheBadPath) {
  EXPECT_NE(error_of(Plan::from_json(json::parse(R"({"mesh": {"xp": 2}})"), 4))
                .find("plan.mesh.xp: unknown key"),
            std::string::npos);
  EXPECT_NE(error_of(Plan::from_json(json::parse(R"({"layers": [{}, {"tp": "two"}]})"), 4))
                .find("plan.layers[1].tp: expected an integer"),
            std::string::npos);
  EXPECT_NE(error_of(Plan::from_json(json::parse(R"({"cp_kind": "spiral"})"), 4))
                .find("plan.cp_kind: 'spiral' is not a context-parallel kind"),
            std::string::npos);
  EXPECT_NE(error_of(Plan::from_json(json::parse(R"({"mesh": {"order": ["pp", "dp"]}})"), 4))
                .find("plan.mesh.order"),
            std::string::npos);
  EXPECT_NE(error_of(Plan::from_json(json::parse(R"({"pipeline": {"schedule": "zb"}})"), 4))
                .find("plan.pipeline.schedule"),
            std::string::npos);
  EXPECT_NE(error_of(Plan::from_json(json::parse(R"({"bucket_mb": 0})"), 4)).find("plan.bucket_mb"),
            std::string::npos);
  EXPECT_NE(error_of(Plan::from_json(json::parse("[1]"), 4)).find("plan: expected an object"),
            std::string::npos);
}

TEST(Plan, ValidateNamesWhatDoesNotFit) {
  const model::ModelConfig m = small_model();
  auto with = [&](auto change) {
    Plan p = Plan::data_parallel(1, 4);
    change(p);
    return error_of(p.validate(m, p.mesh.size() == 0 ? 1 : p.mesh.size()));
  };
  {
    Plan p = Plan::data_parallel(2, 4);
    EXPECT_NE(error_of(p.validate(m, 3)).find("needs 2 ranks, the job has 3"), std::string::npos);
  }
  EXPECT_NE(with([](Plan& p) { p.layers.pop_back(); }).find("the model has 4 blocks"),
            std::string::npos);
  EXPECT_NE(with([](Plan& p) {
              p.mesh.tp = 3;
              for (auto& l : p.layers) l.tp = 3;
            }).find("model.n_head 4 is not divisible by tp 3"),
            std::string::npos);
  EXPECT_NE(with([](Plan& p) {
              p.mesh.tp = 4;
              p.layers[2].tp = 3;
            }).find("plan.layers[2].tp: 3 does not divide the mesh's tp 4"),
            std::string::npos);
  EXPECT_NE(with([](Plan& p) {
              p.layers[0].sequence_parallel = true;
            }).find("plan.layers[0].sequence_parallel: needs tp > 1"),
            std::string::npos);
  EXPECT_NE(with([](Plan& p) { p.mesh.cp = 2; }).find("must name how attention is split"),
            std::string::npos);
  EXPECT_NE(with([](Plan& p) {
              p.layers[3].cp_kind = ContextParallelKind::kRing;
            }).find("must be none when the mesh's cp is 1"),
            std::string::npos);
  EXPECT_NE(with([](Plan& p) {
              p.mesh.cp = 8;
              for (auto& l : p.layers) l.cp_kind = ContextParallelKind::kUlysses;
            })
                .find("a Ulysses degree of 8 splits each tp rank's 4 query heads and 4 key/value "
                      "head(s), which it must divide (degrees that fit: 1, 2, 4"),
            std::string::npos);
  EXPECT_NE(with([](Plan& p) {
              p.mesh.cp = 4;
              for (auto& l : p.layers) l.cp_kind = ContextParallelKind::kTwoD;
            }).find("plan.cp_ulysses: 2d needs a Ulysses degree between 1 and cp 4"),
            std::string::npos);
  EXPECT_NE(with([](Plan& p) {
              p.mesh.cp = 4;
              p.cp_ulysses = 2;
              for (auto& l : p.layers) l.cp_kind = ContextParallelKind::kRing;
            }).find("plan.cp_ulysses: is for cp_kind 2d only"),
            std::string::npos);
  {
    Plan two_d = Plan::data_parallel(1, 4);
    two_d.mesh.cp = 4;
    two_d.cp_ulysses = 2;
    for (auto& l : two_d.layers) l.cp_kind = ContextParallelKind::kTwoD;
    EXPECT_TRUE(two_d.validate(m, 4).ok()) << two_d.validate(m, 4).ToString();
    EXPECT_EQ(two_d.ulysses_degree(two_d.layers[0]), 2);
    EXPECT_EQ(two_d.ring_degree(two_d.layers[0]), 2);
    EXPECT_EQ(two_d.summary(), "pp=1 dp=1 cp=4 tp=1, 4 blocks, cp 2d (ulysses 2 x ring 2)");
  }
  EXPECT_NE(with([](Plan& p) { p.mesh.pp = 2; }).find("pp 2 needs 1 cut(s), got 0"),
            std::string::npos);
  EXPECT_NE(with([](Plan& p) {
              p.mesh.pp = 3;
              p.pipeline.cuts = {2, 2};
            }).find("plan.pipeline.cuts[1]: 2 must be in [3, 4]"),
            std::string::npos);
  EXPECT_NE(with([](Plan& p) {
              p.mesh.pp = 2;
              p.pipeline.cuts = {5};
            }).find("plan.pipeline.cuts[0]: 5 must be in [0, 4]"),
            std::string::npos);
  // The first or the last stage may hold no block (the embedding or the head alone).
  for (std::vector<int64_t> cuts : {std::vector<int64_t>{0}, {4}}) {
    Plan p = Plan::data_parallel(1, 4);
    p.mesh.pp = 2;
    p.pipeline.cuts = cuts;
    EXPECT_TRUE(p.validate(m, 2).ok()) << p.validate(m, 2).ToString();
  }
  EXPECT_NE(with([](Plan& p) {
              p.mesh.pp = 3;
              p.pipeline.cuts = {0, 0};
            }).find("plan.pipeline.cuts[1]: 0 must be in [1, 4]"),
            std::string::npos);
  // Interleaved: pp x virtual stages chunks.
  {
    Plan p = Plan::data_parallel(1, 4);
    p.mesh.pp = 2;
    p.pipeline.schedule = PipelineSchedule::kInterleaved;
    p.pipeline.virtual_stages = 2;
    p.pipeline.cuts = {1, 2};
    EXPECT_NE(error_of(p.validate(m, 2)).find("pp 2 x 2 virtual stages needs 3 cut(s), got 2"),
              std::string::npos);
    p.pipeline.cuts = {1, 2, 3};
    EXPECT_TRUE(p.validate(m, 2).ok()) << p.validate(m, 2).ToString();
    p.pipeline.virtual_stages = 1;
    p.pipeline.cuts = {2};
    EXPECT_NE(error_of(p.validate(m, 2)).find("at least 2 model chunks"), std::string::npos);
  }
  EXPECT_NE(with([](Plan& p) {
              p.mesh.pp = 2;
              p.pipeline.cuts = {2};
              p.zero_stage = 3;
            }).find("ZeRO-3 with pipeline stages"),
            std::string::npos);
  EXPECT_NE(with([](Plan& p) { p.pipeline.virtual_stages = 2; }).find("interleaved"),
            std::string::npos);
  EXPECT_NE(with([](Plan& p) { p.zero_stage = 4; }).find("plan.zero_stage"), std::string::npos);
  // Grouped-query attention: 2 key/value heads split over tp 2, replicated over tp 4.
  model::ModelConfig llama = m;
  llama.arch = "llama";
  llama.n_kv_head = 2;
  Plan tp4 = Plan::data_parallel(1, 4);
  tp4.mesh.tp = 4;
  for (auto& l : tp4.layers) l.tp = 4;
  EXPECT_TRUE(tp4.validate(llama, 4).ok()) << tp4.validate(llama, 4).ToString();
  llama.n_head = 6;
  llama.n_kv_head = 3;
  llama.n_embd = 96;
  tp4.mesh.tp = 2;
  for (auto& l : tp4.layers) l.tp = 2;
  EXPECT_NE(error_of(tp4.validate(llama, 2)).find("3 key/value heads can neither"),
            std::string::npos);
}

}  // namespace
}  // namespace cairn::parallel
