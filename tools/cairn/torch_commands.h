// The flags of the commands whose work needs libtorch (train, ckpt), registered by both
// binaries. The front (`cairn`, no libtorch) answers --help, parse errors, `train --describe`
// and `ckpt inspect` (without --digest) itself in milliseconds and replaces itself with
// cairn-torch, same arguments, for the rest (main.cpp); cairn-torch runs them
// (register_train_command and register_ckpt_command in cmd_train.cpp and cmd_ckpt.cpp).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace cairn::cli {

struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;
  int64_t max_steps = 0;
  int64_t stop_after = 0;
  std::string run_dir;
  bool resume = false;
  bool resume_or_start = false;
  bool no_progress = false;
  bool describe = false;
  std::string debug_slowdown;  // RANK:FACTOR
  std::string plan;            // same as --set parallel.plan=
  std::string plan_cache;
};

// cmd_train_flags.cpp: `cairn train`; `run` gets the parsed flags unless --describe was given.
void add_train_command(CLI::App& app, std::function<void(const TrainArgs&)> run);

struct ExportArgs {
  std::string format = "hf";
  std::string ckpt;
  std::string out;
  int64_t vocab_size = 0;
};

struct ImportArgs {
  std::string format = "hf";
  std::string in;
  std::string out;
  std::string config;
};

struct InspectArgs {
  std::string path;
  bool digest = false;
  bool verify = false;
  bool config = false;
};

struct LogitsArgs {
  std::string ckpt;
  std::string ids;
  std::string out;
};

// `cairn ckpt gc`: every in-memory checkpoint slot on this machine and what became of it.
struct GcArgs {
  bool dry_run = false;
  std::string run_dir;
  double min_idle_s = 0;
};

// What `cairn ckpt`'s subcommands do once their flags are parsed.
struct CkptActions {
  std::function<void(const ExportArgs&)> run_export;
  std::function<void(const ImportArgs&)> run_import;
  std::function<void(const InspectArgs&)> run_inspect_digest;  // inspect --digest
  std::function<void(const GcArgs&)> run_gc;
  std::function<void(const LogitsArgs&)> run_logits;
};
// cmd_ckpt_flags.cpp: `cairn ckpt`; inspect without --digest runs there.
void add_ckpt_command(CLI::App& app, const CkptActions& actions);

}  // namespace cairn::cli
