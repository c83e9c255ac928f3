// `cairn plan`: the fastest layouts of a training job on a cluster, by the planner's cost model
// (planner.h): a table of the best, the cost breakdown of the winner, its plan as JSON for
// `cairn train --set parallel.plan=FILE` and its picture (SVG); or the cost of the config's
// own layout (--evaluate).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>

#include "cairn/core/config.h"
#include "cairn/core/fs.h"
#include "cairn/model/block_cache_allocator.h"
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
  int64_t micro_batch = 0;
  double prefer_simpler = 0;
  std::string model_profile;
  std::string out;
  bool explain = false;
  bool evaluate = false;
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

// plan.json -> plan.svg (any other name: NAME.svg).
std::string picture_path(const std::string& plan_path) {
  const size_t slash = plan_path.find_last_of('/');
  const size_t dot = plan_path.find_last_of('.');
  if (dot != std::string::npos && (slash == std::string::npos || dot > slash + 1))
    return plan_path.substr(0, dot) + ".svg";
  return plan_path + ".svg";
}

struct ProfileArgs {
  int ranks = 2;
  double seconds = 0.5;
  double efficiency = 0.5;
  std::string name;
  std::string out;
};

void run_profile(const ProfileArgs& a) {
  model::use_training_allocator();  // before the first tensor: the allocator training runs with
  std::fprintf(stderr, "profiling %d ranks (GEMM, memory copy, collectives 4 KiB - 16 MiB)...\n",
               a.ranks);
  const planner::HardwareProfile p = take(planner::profile_hardware(a.ranks, a.seconds));
  std::printf("GEMM %lld x %lld per rank, all %d at once: fp32 %.1f GFLOP/s, bf16 %.1f GFLOP/s\n",
              (long long)p.gemm_n, (long long)p.gemm_n, p.ranks, p.gemm_fp32_flops / 1e9,
              p.gemm_bf16_flops / 1e9);
  std::printf(
      "memory copy %.1f GB/s; memory %.2f GiB per rank; %.0f MB resident before any "
      "tensor\n",
      p.memcpy_bytes_per_s / 1e9, p.memory_bytes / double(1ull << 30), p.runtime_bytes / 1e6);
  std::printf("| op | bytes | us |\n|---|---|---|\n");
  for (const auto& pt : p.collectives)
    std::printf("| %s | %.0f | %.1f |\n", pt.op.c_str(), pt.bytes, pt.seconds * 1e6);
  std::printf("all-reduce fit: %.3f GB/s, %.1f us per message\n", p.link.bandwidth / 1e9,
              p.link.latency * 1e6);
  std::printf("all-reduce hidden behind compute on every rank at once: %.0f%%\n",
              100 * p.dp_overlap);
  std::printf("transparent huge pages: %s%s\n",
              p.huge_pages.empty() ? "not available" : p.huge_pages.c_str(),
              p.huge_pages == "never" || p.huge_pages.empty()
                  ? " (training's large tensors are faulted in 4 KiB at a time: slower steps "
                    "than the model profile predicts)"
                  : "");
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

struct ModelProfileArgs {
  std::string config;
  std::vector<std::string> overrides;
  int ranks = 2;
  std::vector<int64_t> batches;
  std::vector<int64_t> seqs;
  double seconds = 0.2;
  int rounds = planner::kProfileRounds;
  std::vector<std::string> merge;
  std::string out;
};

void run_profile_model(const ModelProfileArgs& a) {
  if (a.config.empty())
    throw StatusError(Status::InvalidArgument("cairn plan profile-model needs a CONFIG"));
  model::use_training_allocator();  // before the first tensor: the allocator training runs with
  auto config = take(core::load_config_file(a.config, train::job_spec(), a.overrides));
  const train::TrainOptions o = take(train::train_options_from(config));
  const model::ModelConfig m = take(model::model_config_from(config));
  planner::ModelProfile p;
  if (!a.merge.empty()) {
    p = take(planner::merge_model_profiles(a.merge, m));
    std::fprintf(stderr, "merged %zu profiles of %s: each point the median of theirs\n",
                 a.merge.size(), a.config.c_str());
  } else {
    // Default shapes: the job's micro-batch size and half of it (and 1), at train.seq_len and
    // half of it.
    std::vector<int64_t> batches = a.batches, seqs = a.seqs;
    if (batches.empty())
      for (int64_t b :
           {int64_t(1), std::max<int64_t>(1, o.micro_batch_size / 2), o.micro_batch_size})
        if (std::find(batches.begin(), batches.end(), b) == batches.end()) batches.push_back(b);
    if (seqs.empty()) seqs = {std::max<int64_t>(1, o.seq_len / 2), o.seq_len};
    std::fprintf(stderr, "profiling %s's embedding, one block and head on %d ranks at once...\n",
                 a.config.c_str(), a.ranks);
    p = take(planner::profile_model(m, a.ranks, batches, seqs, a.seconds, a.rounds));
  }
  std::printf(
      "| part | tp | cp | micro-batch | seq | forward us | backward us | activations MB |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (const auto& pt : p.points)
    std::printf("| %s | %d | %s | %lld | %lld | %.0f | %.0f | %.2f |\n", pt.part.c_str(), pt.tp,
                pt.cp > 1 ? (pt.cp_kind + std::to_string(pt.cp)).c_str() : "1", (long long)pt.batch,
                (long long)pt.seq, pt.forward_s * 1e6, pt.backward_s * 1e6,
                pt.activation_bytes / 1e6);
  auto lines = [](const std::string& tp, const planner::MeasuredParts& f) {
    auto line = [&](const char* name, const planner::PartTime& t) {
      std::printf("fit %-13s%s %8.1f us + %8.4f us/token + %10.6f us/token/position\n", name,
                  tp.c_str(), t.fixed * 1e6, t.per_token * 1e6, t.per_token_pos * 1e6);
    };
    line("embedding", f.embedding);
    line("block", f.block);
    line("block forward", f.block_forward);
    line("head", f.head);
    line("head forward", f.head_forward);
    line("head no-grad", f.head_no_grad);
  };
  lines("", p.fit);
  for (const auto& [t, f] : p.fit.tensor_parallel) lines(" tp" + std::to_string(t), f);
  for (const auto& [k, f] : p.fit.context_parallel) lines(" " + k, f);
  std::printf("fit optimizer     %.4f ns per parameter\n", p.fit.optimizer_per_param * 1e9);
  std::printf("code the kernels paged in: %.1f MB (a worker holds it besides the runtime)\n",
              p.fit.code_bytes / 1e6);
  std::printf("heap its small allocations grew: %.1f MB (at most what a worker's grows by)\n",
              p.fit.heap_bytes / 1e6);
  const std::string text = planner::model_profile_to_json(p, m).dump(1) + "\n";
  if (a.out.empty()) {
    std::printf("%s", text.c_str());
    return;
  }
  const Status s = core::write_file_atomic(a.out, text);
  if (!s.ok()) throw StatusError(s);
  std::printf("model profile written to %s: cairn plan %s --cluster FILE --model-profile %s\n",
              a.out.c_str(), a.config.c_str(), a.out.c_str());
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
  if (!a.model_profile.empty())
    w.measured = take(planner::load_model_profile(a.model_profile, w.model));
  const planner::Cluster cluster = take(planner::load_cluster(a.cluster));
  if (a.evaluate) {  // the config's own layout (parallel.*), costed
    const int world = a.world > 0 ? a.world : cluster.devices();
    planner::Candidate c{take(train::plan_from(o, w.model, world)), o.micro_batch_size};
    if (w.global_batch % (c.micro_batch * c.plan.mesh.dp) != 0)
      throw StatusError(
          Status::InvalidArgument("train.global_batch_size " + std::to_string(w.global_batch) +
                                  " is not a multiple of train.micro_batch_size x dp"));
    const planner::Cost k = planner::estimate(w, cluster, c);
    std::printf("%s", planner::explain(c, k).c_str());
    return;
  }
  planner::SearchOptions so;
  so.world = a.world;
  so.memory_bytes = a.memory_gb * double(1ull << 30);
  so.top = a.top;
  so.micro_batch = a.micro_batch;
  so.prefer_simpler = a.prefer_simpler;
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
    if (r.preferred_simpler)
      std::printf(
          "\nthe winner is predicted within %.0f%% of the fastest with fewer model-parallel "
          "ranks (--prefer-simpler)\n",
          100 * a.prefer_simpler);
    else if (faster < 5e-4)
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
    // Its picture beside it: each stage's time and memory.
    std::vector<planner::Cost> stages;
    planner::estimate_stages(w, cluster, best.candidate, &stages);
    const std::string svg = picture_path(a.out);
    const double budget = so.memory_bytes > 0 ? so.memory_bytes : cluster.memory_bytes;
    const Status p =
        core::write_file_atomic(svg, planner::plan_svg(best.candidate, stages, budget,
                                                       a.config + " on " + std::to_string(world) +
                                                           " devices of " + cluster.name));
    if (!p.ok()) throw StatusError(p);
    std::printf("picture (per stage time and memory) written to %s\n", svg.c_str());
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
  cmd->add_option("--micro-batch", a->micro_batch,
                  "only this micro-batch size (default: every size that divides the batch)")
      ->check(positive());
  cmd->add_option("--out", a->out,
                  "write the winner's plan (JSON) here, for --set parallel.plan=FILE, and its "
                  "picture (SVG: per-stage time and memory) beside it");
  cmd->add_option("--prefer-simpler", a->prefer_simpler,
                  "of the layouts predicted within this fraction of the fastest (e.g. 0.05), "
                  "put the one with the fewest model-parallel ranks first (--plan auto uses "
                  "0.05)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--model-profile", a->model_profile,
                  "compute times from this model profile (cairn plan profile-model) instead "
                  "of FLOPs at the cluster's peak x efficiency");
  cmd->add_flag("--explain", a->explain, "print the winner's cost breakdown");
  cmd->add_flag("--evaluate", a->evaluate,
                "no search: print the cost of the config's own layout (parallel.*, "
                "train.micro_batch_size) on --world devices");
  cmd->footer(
      "\nThe cost model: compute at the cluster's peak x efficiency, recompute of checkpointed "
      "blocks,\ntensor-parallel collectives, context-parallel traffic left exposed, the "
      "gradient reduction\nleft exposed, pipeline sends and bubble, waiting for cores that "
      "ranks share (cores_per_node),\nthe optimizer step (with --model-profile); memory: "
      "parameters, gradients and AdamW state\nby ZeRO stage, activations in flight by schedule, "
      "buffers. Blocks are checkpointed only as\nneeded to fit the budget.\n\nExamples:\n"
      "  cairn plan configs/gpt-kjv.yaml --cluster configs/clusters/a100-128x8.json --world 64\n"
      "  cairn plan configs/gpt-96l.yaml --cluster configs/clusters/a100-128x8.json --top 10 "
      "--explain --out plan.json\n"
      "  cairn plan profile-hw --ranks 2 --out this-machine.json   # measure this machine\n"
      "  cairn plan profile-model configs/gpt-kjv.yaml --out kjv-model.json   # and the model\n");
  auto pa = std::make_shared<ProfileArgs>();
  CLI::App* prof = cmd->add_subcommand(
      "profile-hw",
      "Measure this machine (GEMM, memory copy, collectives, all-reduce hidden behind compute) "
      "as a cluster file");
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
      "\nEvery rank runs at once, as workers share the machine. dp_overlap is the fraction of an "
      "8 MiB\nall-reduce hidden behind GEMMs on every rank (what data parallelism hides behind "
      "backward).\nIt also records the kernel's transparent huge page mode: at never, training's "
      "large tensors are\nfaulted in 4 KiB at a time and steps run slower than planned.\nExample:\n"
      "  cairn plan profile-hw --ranks 2 --out this-machine.json\n"
      "  cairn plan configs/gpt-kjv.yaml --cluster this-machine.json\n");
  prof->callback([pa] { run_profile(*pa); });
  auto ma = std::make_shared<ModelProfileArgs>();
  CLI::App* mprof = cmd->add_subcommand(
      "profile-model",
      "Time a model's embedding, block and head (forward, backward) on this machine, fitted");
  mprof->add_option("config", ma->config, "the job's YAML config (model.*, train.*)");
  mprof->add_option("--set", ma->overrides, "override a config key: section.key=value");
  mprof->add_option("--ranks", ma->ranks, "ranks (threads, one core each) timed at once")
      ->check(CLI::Range(1, 1024));
  mprof
      ->add_option("--batch", ma->batches,
                   "micro-batch sizes (default: 1, half of train.micro_batch_size, it)")
      ->delimiter(',')
      ->check(positive());
  mprof->add_option("--seq", ma->seqs, "sequence lengths (default: train.seq_len and half)")
      ->delimiter(',')
      ->check(positive());
  mprof
      ->add_option("--seconds", ma->seconds,
                   "about how long each point repeats, over all its rounds")
      ->check(positive());
  mprof
      ->add_option("--rounds", ma->rounds,
                   "times every split is measured in turn (a point: the median of its rounds)")
      ->check(CLI::Range(1, 100));
  CLI::Option* merge =
      mprof->add_option("--merge", ma->merge,
                        "measure nothing: merge these profiles of the model (taken at other times, "
                        "same --ranks, --batch and --seq), each point the median of theirs");
  for (const char* measuring : {"--ranks", "--batch", "--seq", "--seconds", "--rounds"})
    merge->excludes(mprof->get_option(measuring));
  mprof->add_option("--out", ma->out, "write the profile here (default: print it)");
  mprof->footer(
      "\nEach part is timed on --ranks threads at once (one thread each, as the workers share "
      "the\ncores), the median of its repetitions; every split in turn, --rounds times, each point "
      "the\nmedian of its rounds (a machine slowed for a while slows one round of every split, "
      "not\none split); time = fixed + a x tokens + b x tokens x "
      "sequence\nlength, fitted by least squares.\nThe parts are timed again tensor-parallel at "
      "every tp, and context-parallel "
      "(ring, "
      "Ulysses) at\nevery cp, that divides --ranks and fits the model (groups of ranks, their "
      "collectives\nincluded), and one optimizer step per rank. The growth of its file-backed "
      "resident memory\nmeanwhile is the code the kernels page in (code_bytes), and the growth of "
      "malloc's heap\nwhat their allocations below the block cache's threshold take "
      "(heap_bytes): a worker\nholds both besides the runtime profile-hw measures.\nExample:\n  "
      "cairn plan "
      "profile-model configs/gpt-kjv.yaml --ranks 2 --out "
      "kjv-model.json\n  cairn plan configs/gpt-kjv.yaml --cluster here.json --model-profile "
      "kjv-model.json\nA shared machine slows down for minutes at a time: profiles taken at other "
      "times,\nmerged, drop a slow one (each point the median of the profiles'):\n  cairn plan "
      "profile-model configs/gpt-kjv.yaml --merge a.json b.json c.json --out kjv-model.json\n");
  mprof->callback([ma] { run_profile_model(*ma); });
  cmd->require_subcommand(0, 1);
  cmd->callback([a, cmd] {
    if (cmd->got_subcommand("profile-hw") || cmd->got_subcommand("profile-model")) return;
    run_plan(*a);
  });
}

}  // namespace cairn::cli
