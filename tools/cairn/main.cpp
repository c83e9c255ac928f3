// cairn: one binary for launching, training, data preparation and checkpoints.
#include <c10/util/Exception.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>

#include "cairn/core/log.h"
#include "cairn/core/status.h"
#include "cairn/elastic/standby.h"
#include "commands.h"

int main(int argc, char** argv) {
  // A warm standby of `cairn run` waits here for its rank's environment (standby.h).
  cairn::elastic::await_activation_if_standby();
  CLI::App app{
      "cairn: elastic, fault-tolerant, automatically parallelized training of transformer "
      "language models.\n\nExample:\n  make demo    # or step by step:\n"
      "  cairn data prepare --input kjv.txt --out data/kjv\n"
      "  cairn train configs/gpt-kjv.yaml\n"
      "  cairn run --nproc-per-node 2 -- cairn train configs/gpt-kjv.yaml\n"
      "  cairn generate --ckpt runs/<time>/ckpt --prompt 'In the beginning'\n"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("cairn ") + CAIRN_VERSION);
  // Options of `cairn` itself (--log-level) are also taken after the subcommand.
  app.fallthrough();
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace | debug | info | warn | error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  app.parse_complete_callback([&] { cairn::core::init_logging({log_level, "", ""}); });
  cairn::cli::register_data_command(app);
  cairn::cli::register_train_command(app);
  cairn::cli::register_generate_command(app);
  cairn::cli::register_run_command(app);
  cairn::cli::register_master_command(app);
  cairn::cli::register_ckpt_command(app);
  cairn::cli::register_node_check_command(app);
  // `cairn bogus`: name the unknown command instead of CLI11's "A subcommand is required".
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--log-level") {
      ++i;
      continue;
    }
    if (a.empty() || a[0] == '-') continue;
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
    break;
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
  } catch (const c10::Error& e) {
    // libtorch's own message without its C++ backtrace (an allocation failure, a shape error).
    std::fprintf(stderr, "cairn: error: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cairn: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
