// `cairn ckpt`: export checkpoints to the HuggingFace layout, import HuggingFace models as
// checkpoints, and inspect checkpoints (manifest, tensors, model digest).
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cstdio>
#include <iostream>
#include <sstream>

#include "cairn/ckpt/checkpoint.h"
#include "cairn/ckpt/hf.h"
#include "cairn/ckpt/inspect.h"
#include "cairn/ckpt/orphans.h"
#include "cairn/ckpt/safetensors.h"
#include "cairn/elastic/flash_slots.h"
#include "cairn/model/language_model.h"
#include "cairn/train/generate.h"
#include "cairn/train/options.h"
#include "commands.h"

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

struct ExportArgs {
  std::string format = "hf";
  std::string ckpt;
  std::string out;
  int64_t vocab_size = 0;
};

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

struct ImportArgs {
  std::string format = "hf";
  std::string in;
  std::string out;
  std::string config;
};

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

struct InspectArgs {
  std::string path;
  bool digest = false;
  bool verify = false;
  bool config = false;
};

void run_inspect(const InspectArgs& a) {
  std::vector<std::string> skipped;
  auto summary = ckpt::inspect_checkpoint(a.path, {a.verify, a.digest}, &skipped);
  for (auto& s : skipped) spdlog::warn("skipping broken checkpoint: {}", s);
  std::cout << ckpt::format_summary(take(std::move(summary)), a.config) << std::flush;
}

struct LogitsArgs {
  std::string ckpt;
  std::string ids;
  std::string out;
};

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

// `cairn ckpt gc`: every in-memory checkpoint slot on this machine and what became of it.
struct GcArgs {
  bool dry_run = false;
  std::string run_dir;
  double min_idle_s = 0;
};

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
  CLI::App* ckpt = app.add_subcommand("ckpt", torch_command_description("ckpt"));
  ckpt->require_subcommand(1);
  const std::string format_help = "Format of the other side: hf (HuggingFace transformers)";

  auto ex = std::make_shared<ExportArgs>();
  CLI::App* exp = ckpt->add_subcommand(
      "export",
      "Write a checkpoint's model as a HuggingFace folder (model.safetensors + "
      "config.json) for GPT2LMHeadModel or LlamaForCausalLM");
  exp->add_option("--format", ex->format, format_help)
      ->check(CLI::IsMember({"hf"}))
      ->capture_default_str();
  exp->add_option("--ckpt", ex->ckpt,
                  "Checkpoint root (its newest complete step is used) or one step-N directory")
      ->required();
  exp->add_option("--out", ex->out, "Output folder (created if missing; files are replaced)")
      ->required();
  exp->add_option("--vocab-size", ex->vocab_size,
                  "Keep only the first N rows of the embedding (and head), e.g. 50257 to drop "
                  "GPT-2's padding; default: all rows, padding included")
      ->check(positive());
  exp->footer(
      "Example:\n"
      "  cairn ckpt export --format hf --ckpt runs/a/ckpt --out hf/kjv-gpt2 --vocab-size 50257\n"
      "  # in Python: transformers.AutoModelForCausalLM.from_pretrained('hf/kjv-gpt2')");
  exp->callback([ex] { run_export(*ex); });

  auto im = std::make_shared<ImportArgs>();
  CLI::App* imp = ckpt->add_subcommand(
      "import",
      "Turn a HuggingFace folder (config.json + model.safetensors) into a cairn "
      "checkpoint at step 0");
  imp->add_option("--format", im->format, format_help)
      ->check(CLI::IsMember({"hf"}))
      ->capture_default_str();
  imp->add_option("--in", im->in, "Folder holding config.json and model.safetensors")->required();
  imp->add_option("--out", im->out, "New checkpoint root (must not hold checkpoints yet)")
      ->required();
  imp->add_option("--config", im->config,
                  "Job config to take the train.*, data.* and other non-model keys from; the "
                  "model.* keys always come from config.json");
  imp->footer(
      "Example:\n"
      "  cairn ckpt import --format hf --in hf/kjv-gpt2 --out runs/imported/ckpt\n"
      "  cairn generate --ckpt runs/imported/ckpt --prompt 'In the beginning' --temperature 0");
  imp->callback([im] { run_import(*im); });

  auto in = std::make_shared<InspectArgs>();
  CLI::App* ins = ckpt->add_subcommand(
      "inspect", "Print a checkpoint's manifest, state and tensors; optionally a model digest");
  ins->add_option("dir", in->path, "Checkpoint root (newest usable step) or step-N directory")
      ->required();
  ins->add_flag("--digest", in->digest,
                "Also print 'digest xxh3-128:...' over the model.* tensors' names, dtypes, "
                "shapes and values (independent of sharding and optimizer state); verifies");
  ins->add_flag("--verify", in->verify, "Read every shard and check its checksum");
  ins->add_flag("--config", in->config, "Print the job config saved in the checkpoint");
  ins->footer(
      "Examples:\n"
      "  cairn ckpt inspect runs/a/ckpt\n"
      "  cairn ckpt inspect runs/a/ckpt/step-00000400 --digest | grep ^digest");
  ins->callback([in] { run_inspect(*in); });

  auto gc_args = std::make_shared<GcArgs>();
  CLI::App* gc = ckpt->add_subcommand(
      "gc",
      "List the in-memory checkpoint slots in /dev/shm; persist and remove those whose "
      "owner (a cairn run agent, or a cairn train alone) is dead");
  gc->add_flag("--dry-run", gc_args->dry_run, "Only say what would be persisted and removed");
  gc->add_option("--run-dir", gc_args->run_dir, "Only the slots of this run directory");
  gc->add_option("--min-idle", gc_args->min_idle_s,
                 "Leave a dead owner's slot written less than this many seconds ago")
      ->check(non_negative())
      ->capture_default_str();
  gc->footer(
      "A slot left by a process killed with -9 is persisted to its run's checkpoint directory\n"
      "when storage holds nothing as new, then removed. Every cairn train and cairn run does the\n"
      "same when it starts, for slots idle for $CAIRN_ORPHAN_GRACE_S (default 60) seconds,\n"
      "leaving its own run's slots for --resume.\n"
      "Examples:\n"
      "  cairn ckpt gc --dry-run\n"
      "  cairn ckpt gc --run-dir runs/a");
  gc->callback([gc_args] { run_gc(*gc_args); });

  auto lg = std::make_shared<LogitsArgs>();
  CLI::App* logits =
      ckpt->add_subcommand("logits", "Write the logits of one token sequence (for tests)");
  logits->group("");  // hidden from --help
  logits->add_option("--ckpt", lg->ckpt, "Checkpoint root or step-N directory")->required();
  logits->add_option("--ids", lg->ids, "Whitespace-separated token ids")->required();
  logits->add_option("--out", lg->out, "safetensors file receiving ids (1, T), logits (1, T, V)")
      ->required();
  logits->footer(
      "Example:\n  cairn ckpt logits --ckpt runs/a/ckpt --ids '818 262 3726' --out l.st");
  logits->callback([lg] { run_logits(*lg); });
}

}  // namespace cairn::cli
