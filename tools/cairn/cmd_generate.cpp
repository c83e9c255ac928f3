// `cairn generate`: continue a prompt with a trained model.
#include <spdlog/spdlog.h>

#include <cstdio>
#include <iostream>

#include "cairn/data/tokenizer.h"
#include "cairn/model/language_model.h"
#include "cairn/train/generate.h"
#include "commands.h"

namespace cairn::cli {
namespace {

struct GenerateArgs {
  std::string ckpt;
  std::string prompt;
  std::string tokenizer;
  train::GenerateOptions options;
};

void run_generate(const GenerateArgs& a) {
  auto loaded = train::load_model(a.ckpt);
  if (!loaded.ok()) throw StatusError(loaded.status());
  std::string tok_name =
      a.tokenizer.empty() ? loaded->config.get_string("data.tokenizer") : a.tokenizer;
  auto tok = data::Tokenizer::Open(data::resolve_tokenizer_dir(tok_name));
  if (!tok.ok()) throw StatusError(tok.status());
  auto prompt = (*tok)->encode(a.prompt);
  if (prompt.empty()) prompt.push_back((*tok)->eot_id());
  spdlog::info("model from {} (step {})", loaded->path, loaded->step);
  const int64_t block = loaded->model->config().block_size;
  if (int64_t(prompt.size()) > block)
    spdlog::warn(
        "the prompt is {} tokens, longer than the model's context of {} "
        "(model.block_size): only its last {} tokens are seen",
        prompt.size(), block, block);
  else if (int64_t(prompt.size()) + a.options.max_tokens > block)
    spdlog::info(
        "prompt + --max-tokens exceed the context of {} tokens: the oldest tokens "
        "slide out of view as text is generated",
        block);
  train::GenerateOptions o = a.options;
  o.vocab_limit = (*tok)->vocab_size();
  o.stop_id = (*tok)->eot_id();
  std::cout << a.prompt << std::flush;
  train::generate(*loaded->model, prompt, o, [&](int32_t id) {
    if (id == (*tok)->eot_id()) return;
    auto text = (*tok)->decode({id});
    if (text.ok()) std::cout << *text << std::flush;
  });
  std::cout << "\n";
}

}  // namespace

void register_generate_command(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand("generate", torch_command_description("generate"));
  cmd->footer(
      "Examples:\n"
      "  cairn generate --ckpt runs/a/ckpt --prompt 'In the beginning' --max-tokens 60\n"
      "  cairn generate --ckpt runs/a/ckpt/step-00001000 --prompt 'And God said' --temperature 0\n"
      "--temperature 0 is greedy and deterministic; otherwise --seed fixes the samples.");
  cmd->add_option("--ckpt", args->ckpt, "checkpoint directory (a run's ckpt/ or one step-N)")
      ->required();
  cmd->add_option("--prompt", args->prompt, "text to continue")->required();
  cmd->add_option("--max-tokens", args->options.max_tokens, "tokens to generate")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20))
      ->capture_default_str();
  cmd->add_option("--temperature", args->options.temperature, "0 = greedy")
      ->check(CLI::Range(0.0, 100.0))
      ->capture_default_str();
  cmd->add_option("--top-k", args->options.top_k, "sample among the k likeliest; 0 = all")
      ->check(non_negative())
      ->capture_default_str();
  cmd->add_option("--seed", args->options.seed, "sampling seed")->capture_default_str();
  cmd->add_option("--tokenizer", args->tokenizer, "tokenizer directory (default: the run's)");
  cmd->callback([args] { run_generate(*args); });
}

}  // namespace cairn::cli
