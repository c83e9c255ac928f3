// `cairn ckpt`'s flags, registered by both binaries (torch_commands.h). `ckpt inspect` without
// --digest runs here, without libtorch: manifest, state, tensor table and, with --verify, every
// checksum.
#include <spdlog/spdlog.h>

#include <iostream>
#include <memory>

#include "cairn/ckpt/inspect.h"
#include "commands.h"
#include "torch_commands.h"

namespace cairn::cli {
namespace {

void run_inspect(const InspectArgs& a) {
  std::vector<std::string> skipped;
  auto summary = ckpt::inspect_checkpoint(a.path, {a.verify}, &skipped);
  for (auto& s : skipped) spdlog::warn("skipping broken checkpoint: {}", s);
  if (!summary.ok()) throw StatusError(summary.status());
  std::cout << ckpt::format_summary(*summary, a.config) << std::flush;
}

}  // namespace

void add_ckpt_command(CLI::App& app, const CkptActions& actions) {
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
  exp->callback([ex, actions] { actions.run_export(*ex); });

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
  imp->callback([im, actions] { actions.run_import(*im); });

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
  ins->callback([in, actions] {
    if (in->digest)
      actions.run_inspect_digest(*in);
    else
      run_inspect(*in);
  });

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
  gc->callback([gc_args, actions] { actions.run_gc(*gc_args); });

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
  logits->callback([lg, actions] { actions.run_logits(*lg); });
}

}  // namespace cairn::cli
