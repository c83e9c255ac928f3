// `cairn ckpt`: export checkpoints to the HuggingFace layout, import HuggingFace models as
// checkpoints, and inspect checkpoints (manifest, tensors, model digest).
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cstdio>
#include <iostream>
#include <sstream>

#include "cairn/ckpt/checkpoint.h"
#include "cairn/ckpt/digest.h"
#include "cairn/ckpt/hf.h"
#include "cairn/ckpt/inspect.h"
#include "cairn/ckpt/orphans.h"
#include "cairn/ckpt/safetensors.h"
#include "cairn/elastic/flash_slots.h"
#include "cairn/model/language_model.h"
#include "cairn/train/generate.h"
#include "cairn/train/options.h"
#include "commands.h"
#include "torch_commands.h"

namespace cairn::cli {
namespace {

void check(const Status& s) {
  if (!s.ok()) throw StatusError(s);
}

template <typename T>
T take(Result<T> r) {
  check(r.status());
  return std::move(r).value();
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

ckpt::LoadedCheckpoint load(const std::string& path) {
  std::vector<std::string> skipped;
  auto c = ckpt::load_any(path, &skipped);
  for (auto& s : skipped) spdlog::warn("skipping broken checkpoint: {}", s);
  return take(std::move(c));
}

// The model a checkpoint holds, from the job config saved in its state.
model::ModelConfig saved_model_config(const ckpt::LoadedCheckpoint& c) {
  const std::string yaml = c.state.value("config_yaml", std::string());
  if (yaml.empty())
    check(Status::InvalidArgument(c.path + ": the manifest state has no config_yaml, so the "
                                           "model it holds is unknown"));
  auto config = take(core::load_config_text(yaml, train::job_spec(), {}, c.path + " config"));
  return take(model::model_config_from(config));
}

// The model.* keys that describe `c`, as config text.
std::vector<std::pair<std::string, std::string>> model_keys(const model::ModelConfig& c) {
  return {{"model.arch", c.arch},
          {"model.n_layer", std::to_string(c.n_layer)},
          {"model.n_head", std::to_string(c.n_head)},
          {"model.n_kv_head", std::to_string(c.n_kv_head)},
          {"model.n_embd", std::to_string(c.n_embd)},
          {"model.vocab_size", std::to_string(c.vocab_size)},
          {"model.block_size", std::to_string(c.block_size)},
          {"model.ffn_hidden", std::to_string(c.ffn_hidden)},
          {"model.norm_eps", num(c.norm_eps)},
          {"model.rope_theta", num(c.rope_theta)},
          {"model.init_std", num(c.init_std)}};
}

int64_t count_params(const ckpt::TensorMap& params) {
  int64_t n = 0;
  for (auto& [name, t] : params) n += t.numel();
  return n;
}

void run_export(const ExportArgs& a) {
  auto c = load(a.ckpt);
  const model::ModelConfig mc = saved_model_config(c);
  ckpt::TensorMap params;
  for (auto& [name, t] : c.tensors)
    if (name.rfind("model.", 0) == 0) params[name.substr(6)] = t;
  ckpt::HfExportOptions o;
  o.vocab_size = a.vocab_size;
  check(ckpt::export_hf(a.out, mc, params, o).WithContext("cannot export " + c.path));
  const int64_t vocab = a.vocab_size > 0 ? a.vocab_size : mc.vocab_size;
  std::fprintf(stderr,
               "exported %s (step %lld, %s, %lld parameters, vocab_size %lld) to "
               "%s/{model.safetensors,config.json}\n",
               c.path.c_str(), static_cast<long long>(c.step),
               mc.is_llama() ? "LlamaForCausalLM" : "GPT2LMHeadModel",
               static_cast<long long>(count_params(params)), static_cast<long long>(vocab),
               a.out.c_str());
}

void run_import(const ImportArgs& a) {
  ckpt::HfModel hf = take(ckpt::read_hf(a.in));
  const core::ConfigSpec spec = train::job_spec();
  // train.*, data.* and the rest come from --config (or the defaults, with no data); the
  // model.* keys always come from config.json.
  core::Config config =
      a.config.empty()
          ? take(core::load_config_text("data:\n  path: \"\"\n", spec, {}, "import defaults"))
          : take(core::load_config_file(a.config, spec, {}));
  for (auto& [key, text] : model_keys(hf.config.model))
    check(config.set(spec, key, text).WithContext(a.in + "/config.json"));
  take(model::model_config_from(config));
  const nlohmann::json state = {{"step", 0},
                                {"samples_consumed", 0},
                                {"reason", "import"},
                                {"imported_from", a.in},
                                {"imported_format", a.format},
                                {"config_yaml", config.to_yaml()}};
  auto info = take(ckpt::save_model_checkpoint(a.out, hf.params, state));
  std::fprintf(stderr, "imported %s (%s, %lld parameters) as %s\n", a.in.c_str(),
               hf.config.model.arch.c_str(), static_cast<long long>(count_params(hf.params)),
               info.path.c_str());
}

// `ckpt inspect --digest`: the summary, then the digest of the model loaded and verified.
void run_inspect_digest(const InspectArgs& a) {
  std::vector<std::string> skipped;
  auto inspected = ckpt::inspect_checkpoint(a.path, {/*verify=*/true}, &skipped);
  for (auto& s : skipped) spdlog::warn("skipping broken checkpoint: {}", s);
  auto summary = take(std::move(inspected));
  summary.digest = take(ckpt::checkpoint_model_digest(summary.path));
  std::cout << ckpt::format_summary(summary, a.config) << std::flush;
}

// Writes the logits (1, T, V) of one token sequence, for checks against other implementations.
void run_logits(const LogitsArgs& a) {
  auto loaded = take(train::load_model(a.ckpt));
  const model::ModelConfig& mc = loaded.model->config();
  std::vector<int64_t> ids;
  std::istringstream in(a.ids);
  for (std::string word; in >> word;) {
    char* end = nullptr;
    const long long v = std::strtoll(word.c_str(), &end, 10);
    if (*end != '\0' || v < 0 || v >= mc.vocab_size)
      check(Status::InvalidArgument("--ids: '" + word + "' is not a token id in [0, " +
                                    std::to_string(mc.vocab_size) + ")"));
    ids.push_back(v);
  }
  if (ids.empty() || int64_t(ids.size()) > mc.block_size)
    check(Status::InvalidArgument("--ids: give 1 to " + std::to_string(mc.block_size) +
                                  " token ids"));
  torch::NoGradGuard no_grad;
  loaded.model->eval();
  auto idx = torch::tensor(ids, torch::kLong).unsqueeze(0);  // (1, T)
  auto logits = loaded.model->forward(idx);                  // (1, T, V)
  check(ckpt::write_safetensors(a.out, {{"ids", idx}, {"logits", logits}},
                                {{"checkpoint", loaded.path}}));
}

}  // namespace

void run_gc(const GcArgs& a) {
  const bool dry_run = a.dry_run;
  ckpt::OrphanOptions o;
  o.dry_run = a.dry_run;
  o.min_idle_s = a.min_idle_s;
  if (!a.run_dir.empty()) o.only_prefix = elastic::flash_slot_name(a.run_dir, 0, 0).substr(0, 20);
  auto slots = ckpt::collect_orphan_slots(o);
  if (slots.empty()) {
    std::cout << "no cairn checkpoint slots in /dev/shm\n";
    return;
  }
  int64_t freed = 0;
  for (const auto& r : slots) {
    char line[160];
    std::snprintf(line, sizeof(line), "%-32s %8.1f MB  step %-8s ", r.name.c_str(),
                  double(r.bytes) / (1 << 20), r.step >= 0 ? std::to_string(r.step).c_str() : "-");
    std::cout << line << (r.removed ? (dry_run ? "would remove: " : "removed: ") : "kept: ")
              << r.detail << "\n";
    if (r.removed) freed += r.bytes;
  }
  std::printf("%s %.1f MB of /dev/shm\n", dry_run ? "would free" : "freed",
              double(freed) / (1 << 20));
}

void register_ckpt_command(CLI::App& app) {
  add_ckpt_command(app, {run_export, run_import, run_inspect_digest, run_gc, run_logits});
}

}  // namespace cairn::cli
