// cairn's main, built twice:
//   cairn        (CAIRN_FRONT) the command users type. No libtorch: help, --version, data,
//                master, `train --describe` and `ckpt inspect` start in milliseconds. For the
//                commands that need torch (kTorchCommands) it execs cairn-torch from its own
//                directory, same arguments (after parsing their flags, for train and ckpt).
//   cairn-torch  every command; what workers and warm standbys run.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#ifndef CAIRN_FRONT
#include <c10/util/Exception.h>
#endif

#include "cairn/core/log.h"
#include "cairn/core/status.h"
#include "cairn/elastic/standby.h"
#include "commands.h"
#include "torch_commands.h"

namespace {

// The command word of `cairn [--log-level L] <command> ...`, or "" when there is none.
std::string command_word(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--log-level") {
      ++i;
      continue;
    }
    if (a.empty() || a[0] == '-') continue;
    return a;
  }
  return "";
}

#ifdef CAIRN_FRONT
// Replaces this process with cairn-torch (the same pid, arguments and environment: a warm
// standby's descriptor and a worker's signals carry over). Returns only on failure.
int exec_torch_binary(char** argv, bool trains) {
  if (trains)
    for (const auto& v : cairn::cli::kTrainingEnv) ::setenv(v.name, v.value, /*overwrite=*/0);
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  const std::string torch_binary =
      ec ? std::string("cairn-torch") : (self.parent_path() / "cairn-torch").string();
  ::execv(torch_binary.c_str(), argv);
  std::fprintf(stderr,
               "cairn: error: cannot run %s (%s): the commands that need libtorch live there, "
               "installed beside cairn\n",
               torch_binary.c_str(), std::strerror(errno));
  return 1;
}
#endif

}  // namespace

int main(int argc, char** argv) {
#ifdef CAIRN_FRONT
  // A warm standby parks in cairn-torch, with libtorch already loaded (standby.h).
  if (std::getenv(cairn::elastic::kStandbyFdVariable) != nullptr)
    return exec_torch_binary(argv, /*trains=*/true);
  const std::string word = command_word(argc, argv);
  // `run` only supervises; its workers get the wait policy when they are cairn (cmd_run.cpp).
  for (const cairn::cli::TorchCommand& c : cairn::cli::kTorchCommands)
    if (word == c.name && !c.front_parses) return exec_torch_binary(argv, /*trains=*/word != "run");
#else
  // A warm standby of `cairn run` waits here for its rank's environment (standby.h).
  cairn::elastic::await_activation_if_standby();
#endif
  CLI::App app{
      "cairn: elastic, fault-tolerant, automatically parallelized training of transformer "
      "language models.\n\nExample:\n  make demo    # or step by step:\n"
      "  cairn data prepare --input kjv.txt --out data/kjv\n"
      "  cairn train configs/gpt-kjv.yaml\n"
      "  cairn run --nproc-per-node 2 -- cairn train configs/gpt-kjv.yaml\n"
      "  cairn generate --ckpt runs/<time>/ckpt --prompt 'In the beginning'\n",
      "cairn"};  // the name in usage lines, whichever of the two binaries prints them
  app.require_subcommand(1);
  app.set_version_flag("--version", cairn::cli::version_text(),
                       "print the version, git commit, libtorch version and build type");
  // Options of `cairn` itself (--log-level) are also taken after the subcommand.
  app.fallthrough();
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace | debug | info | warn | error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  app.parse_complete_callback([&] { cairn::core::init_logging({log_level, "", ""}); });
  cairn::cli::register_data_command(app);
  cairn::cli::register_master_command(app);
  cairn::cli::register_dashboard_command(app);
#ifdef CAIRN_FRONT
  // Parsed here, run by cairn-torch (torch_commands.h).
  auto in_torch_binary = [argv](bool trains) {
    exec_torch_binary(argv, trains);
    throw CLI::RuntimeError(1);  // exec failed; exec_torch_binary said why
  };
  cairn::cli::add_train_command(
      app, [in_torch_binary](const cairn::cli::TrainArgs&) { in_torch_binary(true); });
  auto ckpt_in_torch = [in_torch_binary](const auto&) { in_torch_binary(false); };
  cairn::cli::add_ckpt_command(
      app, {ckpt_in_torch, ckpt_in_torch, ckpt_in_torch, ckpt_in_torch, ckpt_in_torch});
  // The others are listed for `cairn --help` only: a command word among them was exec'd above.
  for (const cairn::cli::TorchCommand& c : cairn::cli::kTorchCommands)
    if (!c.front_parses) app.add_subcommand(c.name, c.description);
#else
  cairn::cli::register_train_command(app);
  cairn::cli::register_generate_command(app);
  cairn::cli::register_run_command(app);
  cairn::cli::register_ckpt_command(app);
  cairn::cli::register_node_check_command(app);
  cairn::cli::register_plan_command(app);
  cairn::cli::register_completion_command(app);
#endif
  // `cairn bogus`: name the unknown command instead of CLI11's "A subcommand is required".
  if (const std::string a = command_word(argc, argv); !a.empty()) {
    std::string known;
    bool found = false;
    for (const CLI::App* c : app.get_subcommands([](CLI::App*) { return true; })) {
      found = found || c->get_name() == a;
      if (!c->get_group().empty()) known += (known.empty() ? "" : ", ") + c->get_name();
    }
    if (!found) {
      std::fprintf(stderr,
                   "cairn: error: unknown command '%s'; the commands are: %s (cairn --help)\n",
                   a.c_str(), known.c_str());
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::RuntimeError& e) {
    return app.exit(e);  // a command's own exit code (cairn run: the failed worker's)
  } catch (const CLI::ParseError& e) {
    // --help and --version end with 0; every bad flag with 2.
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const cairn::StatusError& e) {
    std::fprintf(stderr, "cairn: error: %s\n", e.what());
    // Bad or missing input (a config, a flag, a corrupt or missing file) is the user's to fix:
    // exit 2, which `cairn run` takes as "do not restart".
    switch (e.status.code()) {
      case cairn::StatusCode::kInvalidArgument:
      case cairn::StatusCode::kNotFound:
      case cairn::StatusCode::kCorrupt:
      case cairn::StatusCode::kUnsupported:
        return 2;
      default:
        return 1;
    }
  }
#ifndef CAIRN_FRONT
  catch (const c10::Error& e) {
    // libtorch's own message without its C++ backtrace (an allocation failure, a shape error).
    std::fprintf(stderr, "cairn: error: %s\n", e.what_without_backtrace());
    return 1;
  }
#endif
  catch (const std::exception& e) {
    std::fprintf(stderr, "cairn: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
