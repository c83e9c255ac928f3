// `cairn train`'s flags, registered by both binaries (torch_commands.h); --describe is
// answered here, without libtorch.
#include <iostream>
#include <memory>
#include <string>

#include "cairn/core/block_cache.h"
#include "cairn/train/spec.h"
#include "commands.h"
#include "torch_commands.h"

namespace cairn::cli {

void add_train_command(CLI::App& app, std::function<void(const TrainArgs&)> run) {
  auto args = std::make_shared<TrainArgs>();
  auto* cmd = app.add_subcommand("train", torch_command_description("train"));
  cmd->footer(
      "Examples:\n"
      "  cairn train configs/gpt-kjv.yaml\n"
      "  cairn train configs/gpt-kjv.yaml --set train.lr=3e-4 --max-steps 200 --run-dir runs/a\n"
      "  cairn train configs/gpt-kjv.yaml --run-dir runs/a --resume   # continue runs/a\n"
      "  cairn train --describe                                       # every config key\n"
      "  cairn train configs/gpt-kjv.yaml --set ckpt.memory_interval=1 --set "
      "ckpt.persist_interval=50\n"
      "  cairn run --nproc-per-node 2 -- cairn train configs/gpt-kjv.yaml --set parallel.tp=2\n"
      "      # tensor parallelism over 2 ranks (+ --set parallel.sequence_parallel=true)\n"
      "  cairn run --nproc-per-node 4 -- cairn train configs/gpt-kjv.yaml --set parallel.tp=2 "
      "--set parallel.dp=2 --set parallel.zero_stage=1\n"
      "      # 2 data-parallel replicas (ZeRO-1) of a tp2 model\n"
      "  cairn run --nproc-per-node 4 -- cairn train configs/gpt-kjv-long.yaml --set "
      "parallel.cp=4\n"
      "      # context parallelism: each 16384-token sequence split over 4 ranks (ring attention;\n"
      "      # parallel.cp_kind=ulysses, or 2d with parallel.cp_ulysses=2)\n"
      "  cairn run --nproc-per-node 4 -- cairn train configs/gpt-kjv.yaml --set parallel.pp=4 "
      "--set parallel.pp_schedule=1f1b\n"
      "      # pipeline parallelism: the blocks cut into 4 stages by estimated cost (printed at\n"
      "      # start; or --set parallel.pp_layers=[1,1,2,0]); schedules gpipe, 1f1b, interleaved\n"
      "      # (parallel.pp_virtual chunks per rank) and zb-h1\n"
      "  cairn run --nproc-per-node 2 -- cairn train configs/gpt-kjv.yaml --plan auto\n"
      "      # the planner picks the layout for the world the job starts with (and again after\n"
      "      # an elastic restart at another world), from this machine's cached profile\n"
      "The run directory holds config.yaml, metrics.jsonl, events.jsonl, train.log and ckpt/.\n"
      "Checkpoints go to shared memory first (a pause of milliseconds) and to ckpt/ in the\n"
      "background: ckpt.memory_interval, ckpt.persist_interval, ckpt.keep_last, ckpt.keep_every.\n"
      "Ctrl-C (SIGINT), SIGTERM or SIGUSR1 (a scheduler's notice) saves a checkpoint at the next\n"
      "step boundary and exits 130, 143 or 138; --resume continues from it.\n"
      "Freed large blocks stay in the process's heap for the next step (faster steps, a resident\n"
      "peak heap), and tensors of " +
      std::to_string(core::BlockCache::kMinBytes >> 10) +
      " KiB or more freed in a step serve the next (memory stays at\n"
      "what the first step reached); CAIRN_BLOCK_CACHE=0 turns the latter off,\n"
      "CAIRN_MALLOC_DEFAULTS=1 both.");
  cmd->add_option("config", args->config, "job config (YAML)");
  cmd->add_option("--set", args->overrides, "override a key: section.key=value (repeatable)");
  cmd->add_option("--max-steps", args->max_steps, "same as --set train.max_steps=N")
      ->check(positive());
  cmd->add_option("--stop-after", args->stop_after,
                  "save a checkpoint and stop after this step; the schedule still spans "
                  "train.max_steps, so --resume continues as if never stopped")
      ->check(positive());
  cmd->add_option("--run-dir", args->run_dir, "run directory (default runs/<time>)");
  cmd->add_flag("--resume", args->resume,
                "continue from the newest checkpoint of --run-dir (shared memory or ckpt.dir); "
                "fails when there is none");
  cmd->add_flag("--resume-or-start", args->resume_or_start,
                "like --resume, but start from step 0 when there is no checkpoint yet (the form "
                "for `cairn run --max-restarts` jobs, whose first start finds none)");
  cmd->add_option("--plan", args->plan,
                  "same as --set parallel.plan=: a plan file (cairn plan --out), or auto: the "
                  "planner's fastest layout for the job's world (the machine is profiled once, "
                  "then the profile is reused; after 3 + 20 steps the prediction is checked "
                  "against them: events.jsonl plan_check)")
      ->option_text("FILE|auto");
  cmd->add_option("--plan-cache", args->plan_cache,
                  "with --plan auto: where hardware profiles are kept (default "
                  "$CAIRN_CACHE_DIR, $XDG_CACHE_HOME/cairn or ~/.cache/cairn)")
      ->option_text("DIR");
  cmd->add_flag("--no-progress", args->no_progress, "no progress line");
  cmd->add_flag("--describe", args->describe, "list every config key with its default and exit");
  cmd->add_option(
         "--debug-slowdown", args->debug_slowdown,
         "tests: rank RANK's micro-batches take FACTOR times as long (it sleeps the rest), "
         "an artificial straggler")
      ->option_text("RANK:FACTOR");
  cmd->callback([args, run] {
    if (args->describe) {
      std::cout << "Config keys (set in YAML as section: {key: value}, or with --set "
                   "section.key=value):\n"
                << train::job_spec().describe();
      return;
    }
    run(*args);
  });
}

}  // namespace cairn::cli
