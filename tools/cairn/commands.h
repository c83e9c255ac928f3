// The cairn CLI's subcommands. Each file cmd_<name>.cpp registers one command on the app;
// a command's callback reports failure by throwing cairn::StatusError (exit code 2 for
// invalid input, 1 for other failures), never by calling exit().
#pragma once

#include <CLI/CLI.hpp>

namespace cairn::cli {

void register_data_command(CLI::App& app);      // cmd_data.cpp: encode, decode, prepare
void register_train_command(CLI::App& app);     // cmd_train.cpp
void register_generate_command(CLI::App& app);  // cmd_generate.cpp
void register_run_command(CLI::App& app);       // cmd_run.cpp: launch and supervise workers
void register_master_command(CLI::App& app);    // cmd_master.cpp: the elastic job master
void register_ckpt_command(CLI::App& app);      // cmd_ckpt.cpp: export, import, inspect
void register_node_check_command(CLI::App& app);  // cmd_node_check.cpp: one node's check

}  // namespace cairn::cli
