// `cairn plan`: the fastest layouts of a training job on a cluster, by the planner's cost model
// (planner.h): a table of the best, the cost breakdown of the winner, its plan as JSON for
// `cairn train --set parallel.plan=FILE`.
#include <chrono>
#include <cstdio>
#include <iostream>

#include "cairn/core/config.h"
#include "cairn/core/fs.h"
#include "cairn/model/config.h"
#include "cairn/planner/planner.h"
#include "cairn/planner/profile.h"
#include "cairn/train/options.h"
#include "commands.h"

namespace cairn::cli {
namespace {

struct PlanArgs {
  std::string config;
  std::vector<std::string> overrides;
  std::string cluster;
  double memory_gb = 0;
  int world = 0;
  int top = 5;
  std::string out;
  bool explain = false;
};

template <typename T>
T take(Result<T> r) {
  if (!r.ok()) throw StatusError(r.status());
  return std::move(r).value();
}

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f", bytes / double(1ull << 30));
  return buf;
}

struct ProfileArgs {
  int ranks = 2;
  double seconds = 0.5;
  double efficiency = 0.5;
  std::string name;
  std::string out;
};

void run_profile(const ProfileArgs& a) {
  std::fprintf(stderr, "profiling %d ranks (GEMM, memory copy, collectives 4 KiB - 16 MiB)...\n",
               a.ranks);
  const planner::HardwareProfile p = take(planner::profile_hardware(a.ranks, a.seconds));
  std::printf("GEMM %lld x %lld per rank, all %d at once: fp32 %.1f GFLOP/s, bf16 %.1f GFLOP/s\n",
              (long long)p.gemm_n, (long long)p.gemm_n, p.ranks, p.gemm_fp32_flops / 1e9,
              p.gemm_bf16_flops / 1e9);
  std::printf("memory copy %.1f GB/s; memory %.2f GiB per rank\n", p.memcpy_bytes_per_s / 1e9,
              p.memory_bytes / double(1ull << 30));
  std::printf("| op | bytes | us |\n|---|---|---|\n");
  for (const auto& pt : p.collectives)
    std::printf("| %s | %.0f | %.1f |\n", pt.op.c_str(), pt.bytes, pt.seconds * 1e6);
  std::printf("all-reduce fit: %.3f GB/s, %.1f us per message\n", p.link.bandwidth / 1e9,
              p.link.latency * 1e6);
  const std::string name =
      a.name.empty() ? "this machine, " + std::to_string(a.ranks) + " ranks (measured)" : a.name;
  const std::string text = planner::profile_to_cluster(p, name, a.efficiency).dump(1) + "\n";
  // What is written loads back as a cluster.
  auto back = planner::cluster_from_json(text, "the profile");
  if (!back.ok()) throw StatusError(back.status());
  if (a.out.empty()) {
    std::printf("%s", text.c_str());
    return;
  }
  const Status s = core::write_file_atomic(a.out, text);
  if (!s.ok()) throw StatusError(s);
  std::printf("cluster written to %s: cairn plan CONFIG --cluster %s\n", a.out.c_str(),
              a.out.c_str());
}

void run_plan(const PlanArgs& a) {
  if (a.config.empty() || a.cluster.empty())
    throw StatusError(Status::InvalidArgument(
        "cairn plan needs a CONFIG and --cluster FILE (or the profile-hw subcommand)"));
  auto config = take(core::load_config_file(a.config, train::job_spec(), a.overrides));
  const train::TrainOptions o = take(train::train_options_from(config));
  planner::Workload w;
  w.model = take(model::model_config_from(config));
  w.seq_len = o.seq_len;
  w.global_batch = o.global_batch_size;
  const planner::Cluster cluster = take(planner::load_cluster(a.cluster));
  planner::SearchOptions so;
  so.world = a.world;
  so.memory_bytes = a.memory_gb * double(1ull << 30);
  so.top = a.top;
  const auto start = std::chrono::steady_clock::now();
  planner::SearchResult r = take(planner::search(w, cluster, so));
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int world = a.world > 0 ? a.world : cluster.devices();
  std::printf("%s: %lld blocks, d=%lld, sequence %lld, global batch %lld on %d devices of %s\n",
              a.config.c_str(), (long long)w.model.n_layer, (long long)w.model.n_embd,
              (long long)w.seq_len, (long long)w.global_batch, world, cluster.name.c_str());
  std::printf("searched %lld layouts in %.3f s (%lld over the memory budget of %s GiB)\n\n",
              (long long)r.evaluated, took, (long long)r.over_memory,
              gib(so.memory_bytes > 0 ? so.memory_bytes : cluster.memory_bytes).c_str());
  std::printf("| # | layout | micro-batch | step s | tokens/s | memory GiB | bottleneck |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (size_t i = 0; i < r.best.size(); ++i) {
    const planner::Planned& p = r.best[i];
    std::printf("| %zu | %s | %lld | %.4g | %.4g | %s | %s |\n", i + 1,
                p.candidate.plan.summary().c_str(), (long long)p.candidate.micro_batch,
                p.cost.step_s(), p.cost.tokens_per_s, gib(p.cost.memory_bytes()).c_str(),
                p.cost.bottleneck().c_str());
  }
  for (planner::Planned& p : r.best) p.candidate.plan.bucket_bytes = o.bucket_mb << 20;
  const planner::Planned& best = r.best.front();
  if (r.best.size() > 1) {
    const planner::Planned& next = r.best[1];
    const double faster = next.cost.step_s() / best.cost.step_s() - 1;
    if (faster < 5e-4)
      std::printf(
          "\nthe winner is as fast as #2 (predicted); it takes larger micro-batches or "
          "less memory\n");
    else
      std::printf("\nthe winner is %.1f%% faster than #2: %s\n", 100 * faster,
                  planner::why_faster(best.cost, next.cost).c_str());
  }
  if (a.explain) std::printf("\n%s", planner::explain(best.candidate, best.cost).c_str());
  if (!a.out.empty()) {
    const Status s = core::write_file_atomic(a.out, best.candidate.plan.to_json().dump(1) + "\n");
    if (!s.ok()) throw StatusError(s);
    std::printf(
        "\nplan written to %s: cairn train %s --set parallel.plan=%s --set "
        "train.micro_batch_size=%lld\n",
        a.out.c_str(), a.config.c_str(), a.out.c_str(), (long long)best.candidate.micro_batch);
  }
}

}  // namespace

void register_plan_command(CLI::App& app) {
  auto a = std::make_shared<PlanArgs>();
  CLI::App* cmd = app.add_subcommand(
      "plan", "Search the fastest parallel layout of a job on a cluster (cost model)");
  cmd->group("Commands");
  cmd->add_option("config", a->config,
                  "the job's YAML config (model.*, train.seq_len, "
                  "train.global_batch_size)");
  cmd->add_option("--cluster", a->cluster,
                  "a cluster description (configs/clusters/*.json): devices, memory, FLOP/s, "
                  "links");
  cmd->add_option("--set", a->overrides, "override a config key: section.key=value");
  cmd->add_option("--memory-gb", a->memory_gb,
                  "memory budget per device in GiB (default: the cluster's)")
      ->check(non_negative());
  cmd->add_option("--world", a->world, "devices to plan for (default: all of the cluster's)")
      ->check(non_negative());
  cmd->add_option("--top", a->top, "how many of the best layouts to print")->check(positive());
  cmd->add_option("--out", a->out,
                  "write the winner's plan (JSON) here, for --set parallel.plan=FILE");
  cmd->add_flag("--explain", a->explain, "print the winner's cost breakdown");
  cmd->footer(
      "\nThe cost model: compute at the cluster's peak x efficiency, recompute of checkpointed "
      "blocks,\ntensor-parallel collectives, context-parallel traffic left exposed, the "
      "gradient reduction\nleft exposed, pipeline sends and bubble; memory: parameters, "
      "gradients and AdamW state by\nZeRO stage, activations in flight by schedule, "
      "buffers. Blocks are checkpointed only as\nneeded to fit the budget.\n\nExamples:\n"
      "  cairn plan configs/gpt-kjv.yaml --cluster configs/clusters/a100-128x8.json --world 64\n"
      "  cairn plan configs/gpt-96l.yaml --cluster configs/clusters/a100-128x8.json --top 10 "
      "--explain --out plan.json\n"
      "  cairn plan profile-hw --ranks 2 --out this-machine.json   # measure this machine\n");
  auto pa = std::make_shared<ProfileArgs>();
  CLI::App* prof = cmd->add_subcommand(
      "profile-hw", "Measure this machine (GEMM, memory copy, collectives) as a cluster file");
  prof->add_option("--ranks", pa->ranks, "ranks (devices) to measure together")
      ->check(CLI::Range(2, 1024));
  prof->add_option("--seconds", pa->seconds, "about how long each measurement repeats")
      ->check(positive());
  prof->add_option("--efficiency", pa->efficiency,
                   "the fraction of the GEMM peak a training step reaches (assumed: not measured "
                   "by profile-hw)")
      ->check(CLI::Range(0.001, 1.0));
  prof->add_option("--name", pa->name, "the cluster's name in the file");
  prof->add_option("--out", pa->out, "write the cluster file here (default: print it)");
  prof->footer(
      "\nExample:\n  cairn plan profile-hw --ranks 2 --out this-machine.json\n"
      "  cairn plan configs/gpt-kjv.yaml --cluster this-machine.json\n");
  prof->callback([pa] { run_profile(*pa); });
  cmd->require_subcommand(0, 1);
  cmd->callback([a, cmd] {
    if (cmd->got_subcommand("profile-hw")) return;
    run_plan(*a);
  });
}

}  // namespace cairn::cli
