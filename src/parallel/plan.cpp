// Plan: JSON both ways and the checks that name what is wrong.
#include "cairn/parallel/plan.h"

#include <algorithm>
#include <set>

#include "cairn/parallel/pipeline_schedule.h"

namespace cairn::parallel {
namespace {

using nlohmann::json;

Status bad(const std::string& path, const std::string& why) {
  return Status::InvalidArgument(path + ": " + why);
}

// Reads an optional key of `obj` into `out` when present, checking its JSON type.
Status read_int(const json& obj, const char* key, const std::string& path, int64_t* out) {
  if (!obj.contains(key)) return Status::Ok();
  const json& v = obj.at(key);
  if (!v.is_number_integer()) return bad(path + "." + key, "expected an integer, got " + v.dump());
  *out = v.get<int64_t>();
  return Status::Ok();
}
Status read_int(const json& obj, const char* key, const std::string& path, int* out) {
  int64_t v = *out;
  CAIRN_RETURN_IF_ERROR(read_int(obj, key, path, &v));
  if (v < INT32_MIN || v > INT32_MAX) return bad(path + "." + key, "out of range");
  *out = int(v);
  return Status::Ok();
}
Status read_bool(const json& obj, const char* key, const std::string& path, bool* out) {
  if (!obj.contains(key)) return Status::Ok();
  const json& v = obj.at(key);
  if (!v.is_boolean()) return bad(path + "." + key, "expected true or false, got " + v.dump());
  *out = v.get<bool>();
  return Status::Ok();
}
Status read_string(const json& obj, const char* key, const std::string& path, std::string* out) {
  if (!obj.contains(key)) return Status::Ok();
  const json& v = obj.at(key);
  if (!v.is_string()) return bad(path + "." + key, "expected a string, got " + v.dump());
  *out = v.get<std::string>();
  return Status::Ok();
}
// An object whose keys are all among `known`.
Status check_object(const json& obj, const std::string& path,
                    std::initializer_list<const char*> known) {
  if (!obj.is_object()) return bad(path, "expected an object, got " + obj.dump());
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (std::none_of(known.begin(), known.end(), [&](const char* k) { return it.key() == k; })) {
      std::string list;
      for (const char* k : known) list += (list.empty() ? "" : ", ") + std::string(k);
      return bad(path + "." + it.key(), "unknown key (known: " + list + ")");
    }
  }
  return Status::Ok();
}

// Reads an optional string key naming one value of an enum, through its parser; the error
// names the key's path.
template <typename E>
Status read_enum(const json& obj, const char* key, const std::string& path,
                 Result<E> (*parse)(const std::string&), E* out) {
  if (!obj.contains(key)) return Status::Ok();
  std::string name;
  CAIRN_RETURN_IF_ERROR(read_string(obj, key, path, &name));
  Result<E> v = parse(name);
  if (!v.ok()) return bad(path + "." + key, v.status().message());
  *out = *v;
  return Status::Ok();
}

json layer_json(const LayerPlan& l) {
  return {{"tp", l.tp},
          {"sequence_parallel", l.sequence_parallel},
          {"cp_kind", cp_kind_name(l.cp_kind)},
          {"checkpoint", l.checkpoint}};
}

Status read_layer(const json& j, const std::string& path, LayerPlan* l) {
  CAIRN_RETURN_IF_ERROR(
      check_object(j, path, {"tp", "sequence_parallel", "cp_kind", "checkpoint"}));
  CAIRN_RETURN_IF_ERROR(read_int(j, "tp", path, &l->tp));
  CAIRN_RETURN_IF_ERROR(read_bool(j, "sequence_parallel", path, &l->sequence_parallel));
  CAIRN_RETURN_IF_ERROR(read_bool(j, "checkpoint", path, &l->checkpoint));
  return read_enum(j, "cp_kind", path, &parse_cp_kind, &l->cp_kind);
}

}  // namespace

const char* cp_kind_name(ContextParallelKind k) {
  switch (k) {
    case ContextParallelKind::kNone:
      return "none";
    case ContextParallelKind::kUlysses:
      return "ulysses";
    case ContextParallelKind::kRing:
      return "ring";
    case ContextParallelKind::kTwoD:
      return "2d";
  }
  return "?";
}

Result<ContextParallelKind> parse_cp_kind(const std::string& s) {
  for (auto k : {ContextParallelKind::kNone, ContextParallelKind::kUlysses,
                 ContextParallelKind::kRing, ContextParallelKind::kTwoD})
    if (s == cp_kind_name(k)) return k;
  return Status::InvalidArgument("'" + s +
                                 "' is not a context-parallel kind (none, ulysses, ring, 2d)");
}

const char* schedule_name(PipelineSchedule s) {
  switch (s) {
    case PipelineSchedule::kOneFOneB:
      return "1f1b";
    case PipelineSchedule::kGPipe:
      return "gpipe";
    case PipelineSchedule::kInterleaved:
      return "interleaved";
    case PipelineSchedule::kZeroBubbleH1:
      return "zb-h1";
  }
  return "?";
}

Result<PipelineSchedule> parse_schedule(const std::string& s) {
  for (auto k : {PipelineSchedule::kOneFOneB, PipelineSchedule::kGPipe,
                 PipelineSchedule::kInterleaved, PipelineSchedule::kZeroBubbleH1})
    if (s == schedule_name(k)) return k;
  return Status::InvalidArgument("'" + s +
                                 "' is not a pipeline schedule (1f1b, gpipe, interleaved, zb-h1)");
}

Plan Plan::data_parallel(int world, int64_t n_layer, int zero_stage) {
  Plan p;
  p.mesh.dp = world;
  p.zero_stage = zero_stage;
  p.layers.assign(size_t(std::max<int64_t>(n_layer, 0)), LayerPlan{});
  return p;
}

json Plan::to_json() const {
  json order_json = json::array();
  for (comm::Axis a : order) order_json.push_back(comm::axis_name(a));
  json layers_json = json::array();
  for (const LayerPlan& l : layers) layers_json.push_back(layer_json(l));
  return {
      {"mesh",
       {{"pp", mesh.pp}, {"dp", mesh.dp}, {"cp", mesh.cp}, {"tp", mesh.tp}, {"order", order_json}}},
      {"zero_stage", zero_stage},
      {"bucket_mb", double(bucket_bytes) / double(1 << 20)},
      {"layers", layers_json},
      {"pipeline",
       {{"cuts", pipeline.cuts},
        {"schedule", schedule_name(pipeline.schedule)},
        {"virtual_stages", pipeline.virtual_stages}}},
      {"cp_ulysses", cp_ulysses},
      {"cp_overlap", cp_overlap}};
}

Result<Plan> Plan::from_json(const json& j, int64_t n_layer) {
  Plan p;
  CAIRN_RETURN_IF_ERROR(
      check_object(j, "plan",
                   {"mesh", "zero_stage", "bucket_mb", "layers", "pipeline", "sequence_parallel",
                    "cp_kind", "checkpoint", "cp_ulysses", "cp_overlap"}));
  if (j.contains("mesh")) {
    const json& m = j.at("mesh");
    CAIRN_RETURN_IF_ERROR(check_object(m, "plan.mesh", {"pp", "dp", "cp", "tp", "order"}));
    CAIRN_RETURN_IF_ERROR(read_int(m, "pp", "plan.mesh", &p.mesh.pp));
    CAIRN_RETURN_IF_ERROR(read_int(m, "dp", "plan.mesh", &p.mesh.dp));
    CAIRN_RETURN_IF_ERROR(read_int(m, "cp", "plan.mesh", &p.mesh.cp));
    CAIRN_RETURN_IF_ERROR(read_int(m, "tp", "plan.mesh", &p.mesh.tp));
    if (m.contains("order")) {
      const json& o = m.at("order");
      std::vector<std::string> names;
      if (!o.is_array()) return bad("plan.mesh.order", "expected a list of axes, got " + o.dump());
      for (const json& a : o) {
        if (!a.is_string()) return bad("plan.mesh.order", "expected axis names, got " + a.dump());
        names.push_back(a.get<std::string>());
      }
      auto order = comm::parse_order(names);
      if (!order.ok()) return bad("plan.mesh.order", order.status().message());
      p.order = *order;
    }
  }
  CAIRN_RETURN_IF_ERROR(read_int(j, "zero_stage", "plan", &p.zero_stage));
  CAIRN_RETURN_IF_ERROR(read_int(j, "cp_ulysses", "plan", &p.cp_ulysses));
  CAIRN_RETURN_IF_ERROR(read_bool(j, "cp_overlap", "plan", &p.cp_overlap));
  if (j.contains("bucket_mb")) {
    const json& b = j.at("bucket_mb");
    if (!b.is_number() || !(b.get<double>() > 0))
      return bad("plan.bucket_mb", "expected a positive number, got " + b.dump());
    p.bucket_bytes = int64_t(b.get<double>() * double(1 << 20));
  }
  // Defaults of every block: the top-level keys, tp from the mesh.
  LayerPlan uniform;
  uniform.tp = p.mesh.tp;
  CAIRN_RETURN_IF_ERROR(read_bool(j, "sequence_parallel", "plan", &uniform.sequence_parallel));
  CAIRN_RETURN_IF_ERROR(read_bool(j, "checkpoint", "plan", &uniform.checkpoint));
  CAIRN_RETURN_IF_ERROR(read_enum(j, "cp_kind", "plan", &parse_cp_kind, &uniform.cp_kind));
  if (j.contains("layers")) {
    const json& ls = j.at("layers");
    if (!ls.is_array()) return bad("plan.layers", "expected a list, got " + ls.dump());
    for (size_t i = 0; i < ls.size(); ++i) {
      LayerPlan l = uniform;
      CAIRN_RETURN_IF_ERROR(read_layer(ls[i], "plan.layers[" + std::to_string(i) + "]", &l));
      p.layers.push_back(l);
    }
  } else {
    p.layers.assign(size_t(std::max<int64_t>(n_layer, 0)), uniform);
  }
  if (j.contains("pipeline")) {
    const json& pl = j.at("pipeline");
    CAIRN_RETURN_IF_ERROR(
        check_object(pl, "plan.pipeline", {"cuts", "schedule", "virtual_stages"}));
    if (pl.contains("cuts")) {
      const json& c = pl.at("cuts");
      if (!c.is_array()) return bad("plan.pipeline.cuts", "expected a list of block indices");
      for (const json& x : c) {
        if (!x.is_number_integer())
          return bad("plan.pipeline.cuts", "expected block indices, got " + x.dump());
        p.pipeline.cuts.push_back(x.get<int64_t>());
      }
    }
    CAIRN_RETURN_IF_ERROR(
        read_enum(pl, "schedule", "plan.pipeline", &parse_schedule, &p.pipeline.schedule));
    CAIRN_RETURN_IF_ERROR(
        read_int(pl, "virtual_stages", "plan.pipeline", &p.pipeline.virtual_stages));
  }
  return p;
}

int Plan::ulysses_degree(const LayerPlan& l) const {
  if (l.cp_kind == ContextParallelKind::kUlysses) return mesh.cp;
  if (l.cp_kind == ContextParallelKind::kTwoD && cp_ulysses > 0) return cp_ulysses;
  return 1;
}

int Plan::ring_degree(const LayerPlan& l) const {
  if (l.cp_kind == ContextParallelKind::kRing) return mesh.cp;
  if (l.cp_kind == ContextParallelKind::kTwoD && cp_ulysses > 0) return mesh.cp / cp_ulysses;
  return 1;
}

std::string ulysses_unfit(const model::ModelConfig& m, int tp, int ulysses) {
  if (ulysses <= 1) return "";
  // A tp rank's heads: its share of the query heads, and of the key/value heads (one when they
  // are replicated over tp).
  const int64_t h = m.n_head / tp, kv = m.kv_heads() % tp == 0 ? m.kv_heads() / tp : 1;
  if (h % ulysses == 0 && kv % ulysses == 0) return "";
  std::string fits;
  for (int64_t u = 1; u <= h; ++u)
    if (h % u == 0 && kv % u == 0) fits += (fits.empty() ? "" : ", ") + std::to_string(u);
  return "a Ulysses degree of " + std::to_string(ulysses) + " splits each tp rank's " +
         std::to_string(h) + " query heads and " + std::to_string(kv) +
         " key/value head(s), which it must divide (degrees that fit: " + fits +
         "; ring attention has no such limit)";
}

std::vector<int> tp_that_fit(const model::ModelConfig& m, int most) {
  std::vector<int> out;
  for (int t = 1; t <= most; ++t)
    if (m.n_head % t == 0 && (m.kv_heads() % t == 0 || t % m.kv_heads() == 0) &&
        m.ffn_dim() % t == 0)
      out.push_back(t);
  return out;
}

Status Plan::validate(const model::ModelConfig& model, int world_size) const {
  for (comm::Axis a :
       {comm::Axis::kPipeline, comm::Axis::kData, comm::Axis::kContext, comm::Axis::kTensor})
    if (mesh.extent(a) < 1)
      return bad(std::string("plan.mesh.") + comm::axis_name(a),
                 "must be at least 1, got " + std::to_string(mesh.extent(a)));
  if (mesh.size() != world_size)
    return bad("plan.mesh", mesh.ToString() + " needs " + std::to_string(mesh.size()) +
                                " ranks, the job has " + std::to_string(world_size));
  if (zero_stage < 0 || zero_stage > 3)
    return bad("plan.zero_stage", "must be 0, 1, 2 or 3, got " + std::to_string(zero_stage));
  if (bucket_bytes <= 0) return bad("plan.bucket_mb", "must be positive");
  if (int64_t(layers.size()) != model.n_layer)
    return bad("plan.layers", "has " + std::to_string(layers.size()) + " entries, the model has " +
                                  std::to_string(model.n_layer) + " blocks (model.n_layer)");
  const bool two_d = !layers.empty() && layers[0].cp_kind == ContextParallelKind::kTwoD;
  if (two_d && (cp_ulysses <= 1 || cp_ulysses >= mesh.cp || mesh.cp % cp_ulysses != 0))
    return bad("plan.cp_ulysses", "2d needs a Ulysses degree between 1 and cp " +
                                      std::to_string(mesh.cp) + " that divides it, got " +
                                      std::to_string(cp_ulysses));
  if (!two_d && cp_ulysses != 0)
    return bad("plan.cp_ulysses",
               "is for cp_kind 2d only (got " + std::to_string(cp_ulysses) + ")");
  const int64_t ffn = model.ffn_dim();
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerPlan& l = layers[i];
    const std::string path = "plan.layers[" + std::to_string(i) + "]";
    if (l.tp < 1 || mesh.tp % l.tp != 0)
      return bad(path + ".tp", std::to_string(l.tp) + " does not divide the mesh's tp " +
                                   std::to_string(mesh.tp));
    std::string fits;
    for (int t : tp_that_fit(model)) fits += (fits.empty() ? "" : ", ") + std::to_string(t);
    fits = " (tp that fit this model: " + fits + ")";
    if (model.n_head % l.tp != 0)
      return bad(path + ".tp", "model.n_head " + std::to_string(model.n_head) +
                                   " is not divisible by tp " + std::to_string(l.tp) + fits);
    if (model.kv_heads() % l.tp != 0 && l.tp % model.kv_heads() != 0)
      return bad(path + ".tp", "the " + std::to_string(model.kv_heads()) +
                                   " key/value heads can neither be split over nor replicated "
                                   "across tp " +
                                   std::to_string(l.tp) + fits);
    if (ffn % l.tp != 0)
      return bad(path + ".tp", "the MLP width " + std::to_string(ffn) + " is not divisible by tp " +
                                   std::to_string(l.tp) + fits);
    if (l.sequence_parallel && l.tp < 2)
      return bad(path + ".sequence_parallel", "needs tp > 1 (it splits the tp group's work)");
    if ((mesh.cp > 1) != (l.cp_kind != ContextParallelKind::kNone))
      return bad(path + ".cp_kind",
                 mesh.cp > 1 ? "must name how attention is split (ulysses, ring, 2d) when cp is " +
                                   std::to_string(mesh.cp)
                             : std::string("must be none when the mesh's cp is 1"));
    if (std::string why = ulysses_unfit(model, l.tp, ulysses_degree(l)); !why.empty())
      return bad(path + ".cp_kind", why);
  }
  if (pipeline.virtual_stages < 1) return bad("plan.pipeline.virtual_stages", "must be at least 1");
  if (pipeline.virtual_stages > 1 && pipeline.schedule != PipelineSchedule::kInterleaved)
    return bad("plan.pipeline.virtual_stages", "more than 1 needs the interleaved schedule");
  if (pipeline.virtual_stages == 1 && pipeline.schedule == PipelineSchedule::kInterleaved &&
      mesh.pp > 1)
    return bad("plan.pipeline.virtual_stages",
               "the interleaved schedule needs at least 2 model chunks per rank");
  const auto& cuts = pipeline.cuts;
  const int64_t chunks = int64_t(mesh.pp) * pipeline.virtual_stages;
  if (int64_t(cuts.size()) != chunks - 1)
    return bad("plan.pipeline.cuts",
               "pp " + std::to_string(mesh.pp) +
                   (pipeline.virtual_stages > 1
                        ? " x " + std::to_string(pipeline.virtual_stages) + " virtual stages"
                        : std::string()) +
                   " needs " + std::to_string(chunks - 1) + " cut(s), got " +
                   std::to_string(cuts.size()));
  // Stage i holds blocks [cuts[i-1], cuts[i]); the first and the last may hold none.
  for (size_t i = 0; i < cuts.size(); ++i) {
    const int64_t lo = i == 0 ? 0 : cuts[i - 1] + 1;
    const int64_t hi = i + 2 == size_t(chunks) ? model.n_layer : model.n_layer - 1;
    if (cuts[i] < lo || cuts[i] > hi)
      return bad("plan.pipeline.cuts[" + std::to_string(i) + "]",
                 std::to_string(cuts[i]) + " must be in [" + std::to_string(lo) + ", " +
                     std::to_string(hi) +
                     "]: cuts increase and every stage holds at least one block (the first "
                     "and the last may hold the embedding or the head alone)");
  }
  if (zero_stage == 3 && mesh.pp > 1)
    return bad("plan.zero_stage",
               "ZeRO-3 with pipeline stages gathers every stage's "
               "parameters once per micro-batch: use zero_stage 1 or 2 with pp");
  return Status::Ok();
}

std::string Plan::summary() const {
  std::string s = mesh.ToString();
  if (mesh.dp > 1 || zero_stage > 0)
    s += zero_stage == 0 ? ", DDP" : ", ZeRO-" + std::to_string(zero_stage);
  const int64_t ckpt =
      std::count_if(layers.begin(), layers.end(), [](const LayerPlan& l) { return l.checkpoint; });
  s += ", " + std::to_string(layers.size()) + " blocks";
  if (ckpt > 0) s += " (" + std::to_string(ckpt) + " checkpointed)";
  if (!layers.empty() && layers[0].sequence_parallel) s += ", sequence parallel";
  if (mesh.cp > 1 && !layers.empty()) {
    s += std::string(", cp ") + cp_kind_name(layers[0].cp_kind);
    if (layers[0].cp_kind == ContextParallelKind::kTwoD)
      s += " (ulysses " + std::to_string(ulysses_degree(layers[0])) + " x ring " +
           std::to_string(ring_degree(layers[0])) + ")";
  }
  if (mesh.pp > 1) {
    s += std::string(", pipeline ") + schedule_name(pipeline.schedule);
    if (pipeline.virtual_stages > 1)
      s += " (" + std::to_string(pipeline.virtual_stages) + " chunks per rank)";
    std::string per;
    for (int64_t n : blocks_per_stage(pipeline.cuts, int64_t(layers.size())))
      per += (per.empty() ? "" : ", ") + std::to_string(n);
    s += ", blocks per stage [" + per + "]";
  }
  return s;
}

}  // namespace cairn::parallel
