// The train.*, data.*, parallel.* and ckpt.* config keys (torch-free: `cairn train --describe`
// runs in the front binary).
#include "cairn/train/spec.h"

#include "cairn/model/config.h"

namespace cairn::train {

core::ConfigSpec train_spec() {
  const int64_t kBig = int64_t(1) << 40;
  core::ConfigSpec s;
  s.add_int("train.micro_batch_size", 8, 1, 1 << 20, "sequences per forward/backward on one rank")
      .add_int("train.global_batch_size", 8, 1, 1 << 24,
               "sequences per optimizer step over the whole job (fixed whatever the world size)")
      .add_int("train.seq_len", 128, 1, 1 << 20, "tokens per sequence (<= model.block_size)")
      .add_int("train.max_steps", 1000, 1, kBig, "optimizer steps to train")
      .add_float("train.lr", 1e-3, 0, 10, "peak learning rate")
      .add_float("train.min_lr", 1e-4, 0, 10, "learning rate at the end of the cosine decay")
      .add_int("train.warmup_steps", 100, 0, kBig, "linear warmup steps")
      .add_int("train.lr_decay_steps", 0, 0, kBig, "cosine decay length; 0 = max_steps")
      .add_float("train.weight_decay", 0.1, 0, 10, "AdamW decoupled weight decay")
      .add_float("train.beta1", 0.9, 0, 0.999999, "AdamW beta1")
      .add_float("train.beta2", 0.95, 0, 0.999999999, "AdamW beta2")
      .add_float("train.eps", 1e-8, 1e-30, 1, "AdamW epsilon")
      .add_float("train.grad_clip", 1.0, 0, 1e9, "max global gradient norm; 0 = no clipping")
      .add_int("train.seed", 1337, 0, kBig, "seed for initialization and sample order")
      .add_int("train.eval_interval", 100, 0, kBig, "steps between validation; 0 = at the end")
      .add_int("train.eval_batches", 20, 1, 1 << 20, "micro-batches per validation")
      .add_bool("train.activation_checkpointing", false,
                "recompute each block in backward instead of keeping its activations")
      .add_string("train.precision", "fp32", {"fp32", "bf16"},
                  "fp32, or bf16 autocast for matmuls (fp32 master weights)")
      .add_string("train.device", "cpu", {},
                  "cpu, or cuda / cuda:N on a libtorch built with CUDA (refused with the "
                  "reason otherwise; the GPU path is untested)")
      .add_int("train.threads", 0, 0, 4096,
               "threads per process for torch ops and OpenBLAS GEMMs; 0 = their defaults "
               "(OMP_NUM_THREADS / OPENBLAS_NUM_THREADS)")
      .add_int("train.log_interval", 10, 1, kBig, "steps between log lines off a terminal")
      .add_required_string("data.path",
                           "directory from `cairn data prepare` holding train.bin and val.bin")
      .add_bool("data.log_sample_ids", false,
                "write {\"step\": S, \"sample_ids\": [...]} for every trained step to "
                "samples.jsonl in the run directory (a step trained again after a rollback gets "
                "a new line; the last line of a step is the one that counts)")
      .add_string("data.sharding", "deterministic", {"deterministic", "dynamic"},
                  "deterministic: the samples of global step S depend only on the config and "
                  "seed (bit-exact resumes); dynamic: ranks take micro-batch shards from the "
                  "elastic master's shard service as they finish the previous one, so faster "
                  "ranks take more (the global batch keeps its size; needs cairn run "
                  "--rdzv-backend cairn and parallel.zero_stage 0 or 1)")
      .add_bool("data.stream", false,
                "with data.sharding: dynamic, train from data.path/train.stream (written by "
                "`cairn data stream`) while it grows; the job ends at train.max_steps or when the "
                "stream is closed and consumed (val.bin in data.path is still used for validation)")
      .add_string("data.tokenizer", "gpt2", {},
                  "tokenizer directory (encoder.json + vocab.bpe); gpt2 = the installed files")
      .add_string("ckpt.dir", "", {},
                  "checkpoint directory on storage (shared by all nodes); empty = <run-dir>/ckpt")
      .add_int("ckpt.persist_interval", 0, 0, kBig,
               "steps between checkpoints persisted to storage (copied to shared memory, written "
               "in the background); 0 = only at the end and on interrupt")
      .add_int("ckpt.memory_interval", 0, 0, kBig,
               "steps between in-memory (shared-memory) checkpoints that a restarted worker "
               "resumes from; 0 = off")
      .add_int("ckpt.keep_last", 3, 0, 1 << 20, "checkpoints kept on storage; 0 = all")
      .add_int("ckpt.keep_every", 0, 0, kBig,
               "also keep every checkpoint whose step is a multiple of this; 0 = none")
      .add_float("ckpt.persist_duty", 0.2, 0.001, 1,
                 "the largest share of the time storage writes may take while training: an "
                 "interval persist due sooner after the last one (or while it is still being "
                 "written) is deferred to the first save after that, its state kept in memory; "
                 "steps ckpt.keep_every keeps are never deferred; 1 = every interval is "
                 "persisted, training waits when storage is slower")
      .add_float("ckpt.persist_timeout", 600, 0.1, 1e7,
                 "seconds a save may wait for both slots' persists to finish before failing")
      .add_int("parallel.zero_stage", 0, 0, 3,
               "0 = DDP (replicated), 1 = ZeRO-1 (optimizer state sharded over data-parallel "
               "ranks), 2 = ZeRO-2 (+ gradients), 3 = ZeRO-3 (+ parameters, gathered per block "
               "and freed after use; blocks are recomputed in backward)")
      .add_int("parallel.bucket_mb", 8, 1, 1 << 14,
               "gradient bucket size in MiB; each bucket's all-reduce overlaps backward")
      .add_int("parallel.tp", 1, 1, 1024,
               "tensor-parallel ranks per model replica (Megatron layout: heads, MLP width and "
               "vocabulary split); the data-parallel size is the world / tp. With "
               "any parallel.zero_stage")
      .add_int("parallel.dp", 0, 0, 1 << 20,
               "data-parallel ranks (model replicas); 0 = inferred as the world / (parallel.pp x "
               "parallel.tp x parallel.cp). Set, it must make pp x dp x cp x tp the world")
      .add_int("parallel.cp", 1, 1, 1024,
               "context-parallel ranks: each sequence is split over them (train.seq_len a "
               "multiple of cp, or of 2 x cp for a ring), for sequences whose activations do not "
               "fit one rank")
      .add_string("parallel.cp_kind", "ring", {"ulysses", "ring", "2d"},
                  "with parallel.cp > 1: ulysses (all-to-all to head shards; heads divisible by "
                  "cp), ring (key/value blocks passed around a ring, any head count) or 2d "
                  "(ulysses inside, ring across)")
      .add_int("parallel.cp_ulysses", 0, 0, 1024,
               "2d: the Ulysses degree (divides cp); 0 = cp / parallel.cp_ring, or the largest "
               "that fits the heads")
      .add_int("parallel.cp_ring", 0, 0, 1024,
               "2d: the ring degree (cp / parallel.cp_ulysses); 0 = from parallel.cp_ulysses")
      .add_bool("parallel.cp_overlap", true,
                "ring and 2d: send the next key/value block while this one is computed; false "
                "waits for each transfer at once (same results; shows what the overlap hides in "
                "metrics.jsonl's cp_comm_s)")
      .add_int("parallel.pp", 1, 1, 1024,
               "pipeline stages: the blocks cut into pp stages (the first also embeds, the last "
               "also holds the head and loss), micro-batches flowing through them; with dp and "
               "ZeRO-0/1/2")
      .add_string("parallel.pp_schedule", "1f1b", {"1f1b", "gpipe", "interleaved", "zb-h1"},
                  "with parallel.pp > 1: gpipe (all forwards, then all backwards), 1f1b (one "
                  "forward, one backward: at most pp micro-batches in flight), interleaved "
                  "(1f1b over parallel.pp_virtual chunks per rank: a smaller bubble); the "
                  "micro-batches are train.global_batch_size / (train.micro_batch_size x dp)")
      .add_int_list("parallel.pp_layers", 0, 1 << 20,
                    "blocks per stage in order, e.g. [3, 4, 4, 2] (pp x pp_virtual entries "
                    "summing to model.n_layer; the first and the last may be 0); empty = the cut "
                    "that balances the estimated cost, embedding and head included")
      .add_bool("parallel.pp_elastic", false,
                "when the world does not fit parallel.pp x cp x tp (an elastic job that lost a "
                "node), train at the nearest pipeline size that fits (the smallest above pp, "
                "else the largest below) with the cut recomputed, from the same checkpoints; "
                "when it fits, fewer ranks shrink dp first")
      .add_int("parallel.pp_virtual", 0, 0, 64,
               "model chunks per pipeline rank (interleaved only); 0 = 2 for interleaved, else 1")
      .add_string("parallel.order", "pp,dp,cp,tp", {},
                  "the mesh's axes, outermost first: the last varies fastest over consecutive "
                  "ranks (tp last keeps a tensor-parallel group on one machine)")
      .add_bool("parallel.sequence_parallel", false,
                "with parallel.tp > 1: norms and residuals on sequence chunks (train.seq_len a "
                "multiple of tp), all-gather / reduce-scatter instead of all-reduce")
      .add_string("parallel.plan", "", {},
                  "a JSON plan file (mesh, ZeRO stage, per-block layout, pipeline cuts: see "
                  "README), or auto (the planner picks the fastest layout that fits for the "
                  "world the job starts with); empty = the layout the keys above give");
  return s;
}

core::ConfigSpec job_spec() {
  core::ConfigSpec s = model::model_spec();
  s.merge(train_spec());
  return s;
}

}  // namespace cairn::train
