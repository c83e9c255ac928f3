// `cairn run` flags: torchrun-compatible launcher flags registered on a CLI11 command and
// collected as text into elastic::LaunchFlags, which elastic::resolve_launch_options validates.
#pragma once

#include <CLI/CLI.hpp>

#include "cairn/elastic/launch_options.h"

namespace cairn::cli {

// Registers the flags on `cmd` (torchrun's underscore spellings are aliases). Unrecognized
// arguments are collected into `flags->unknown` for resolve_launch_options to report.
// REQUIRES: `flags` outlives the parse of `cmd`.
void add_launch_flags(CLI::App& cmd, elastic::LaunchFlags* flags);

// Collects `cmd->remaining()` into flags->unknown, dropping CLI11's `--` marker. Call from the
// command's callback.
void collect_unknown_flags(const CLI::App& cmd, elastic::LaunchFlags* flags);

}  // namespace cairn::cli
