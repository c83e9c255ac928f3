// The cairn CLI's subcommands. Each file cmd_<name>.cpp registers one command on the app;
// a command's callback reports failure by throwing cairn::StatusError (exit code 2 for
// invalid input, 1 for other failures), never by calling exit().
#pragma once

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <string>

namespace cairn::cli {

// `cairn --version`: "cairn V\ncommit C\nlibtorch T\nbuild B" (generated at build time by
// cmake/version_info.cmake).
const char* version_text();

// Number checks with short messages (CLI11's PositiveNumber prints DBL_MAX in 309 digits).
// `strict`: the value must be greater than `min`, else at least `min`.
inline CLI::Validator number_from(double min, bool strict) {
  const std::string bound = std::to_string(min == double(long(min)) ? long(min) : 0);
  const std::string what = strict ? "greater than " + bound : "at least " + bound;
  return CLI::Validator(
      [min, strict, what](std::string& s) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(s.c_str(), &end);
        if (s.empty() || *end != 0) return "'" + s + "' is not a number";
        if (strict ? !(v > min) : !(v >= min)) return "'" + s + "' must be " + what;
        return "";
      },
      strict ? "> " + bound : ">= " + bound);
}
// How long a dead process's in-memory checkpoint is left for its own restart before the next
// cairn process persists and removes it: $CAIRN_ORPHAN_GRACE_S, default 60 s.
inline double orphan_grace_s() {
  const char* v = std::getenv("CAIRN_ORPHAN_GRACE_S");
  char* end = nullptr;
  const double s = v && *v ? std::strtod(v, &end) : 60;
  return v && *v && (*end != 0 || s < 0) ? 60 : s;
}
inline CLI::Validator positive() { return number_from(0, /*strict=*/true); }
inline CLI::Validator non_negative() { return number_from(0, /*strict=*/false); }

// The commands that need libtorch. `cairn` itself is a small front binary without torch (help,
// --version, data, master start in milliseconds); it execs `cairn-torch`, installed beside it,
// for these, with the same arguments (main.cpp). Their one-line descriptions live here so that
// the front's `cairn --help` lists them too. Those marked `front_parses` have their flags
// registered in the front as well (torch_commands.h): it answers their --help, parse errors,
// `train --describe` and `ckpt inspect` itself and execs cairn-torch only after parsing.
struct TorchCommand {
  const char* name;
  const char* description;
  bool front_parses = false;
};
inline constexpr TorchCommand kTorchCommands[] = {
    {"train", "Train a model from a YAML config (one process, or every worker of `cairn run`)",
     true},
    {"generate", "Continue a prompt with a trained model"},
    {"run", "Start and supervise this node's workers with torchrun's flags and environment"},
    {"ckpt",
     "Inspect checkpoints; export them to and import them from HuggingFace format; clean up "
     "in-memory checkpoints of dead processes (gc)",
     true},
    {"node-check", "One node's part of the node check (run by `cairn run --network-check`)"},
    {"plan", "Search the fastest parallel layout of a job on a cluster (cost model)"},
    {"completion", "Print a bash completion script of every command and flag"},
};
// OpenMP's wait policy for cairn's training processes. With libgomp's default (spin, then
// yield) the OpenMP threads that finish an element-wise kernel keep spinning while OpenBLAS's
// own threads run the next GEMM on the same cores; passive waiting gave ~25% shorter steps
// here (bench/train_throughput.py runs the peer with it too). It must be in the environment
// before libgomp loads: the front sets it before exec'ing cairn-torch, `cairn run` for workers
// that are cairn. A value the user set is kept.
//
// OpenBLAS's idle threads likewise spin, calling sched_yield, for 2^28 cycles after each GEMM
// before they sleep, taking the cores from the element-wise kernels between GEMMs (perf: 14%
// of a training step's samples in sched_yield); OPENBLAS_THREAD_TIMEOUT=4 (2^4 cycles, the
// least it takes) shortened steps by 5% here and left the PyTorch peer's unchanged.
struct TuningVar {
  const char* name;
  const char* value;
};
inline constexpr TuningVar kTrainingEnv[] = {{"OMP_WAIT_POLICY", "PASSIVE"},
                                             {"OPENBLAS_THREAD_TIMEOUT", "4"}};

inline const char* torch_command_description(const std::string& name) {
  for (const TorchCommand& c : kTorchCommands)
    if (name == c.name) return c.description;
  return "";
}

void register_data_command(CLI::App& app);        // cmd_data.cpp: encode, decode, prepare
void register_train_command(CLI::App& app);       // cmd_train.cpp (cairn-torch)
void register_generate_command(CLI::App& app);    // cmd_generate.cpp
void register_run_command(CLI::App& app);         // cmd_run.cpp: launch and supervise workers
void register_master_command(CLI::App& app);      // cmd_master.cpp: the elastic job master
void register_dashboard_command(CLI::App& app);   // cmd_dashboard.cpp: a run's live dashboard
void register_ckpt_command(CLI::App& app);        // cmd_ckpt.cpp (cairn-torch): export, import, ...
void register_node_check_command(CLI::App& app);  // cmd_node_check.cpp: one node's check
void register_plan_command(CLI::App& app);        // cmd_plan.cpp: the planner's search
void register_completion_command(CLI::App& app);  // cmd_completion.cpp: bash completion

}  // namespace cairn::cli
