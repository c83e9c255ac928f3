// `cairn run` inside a Slurm allocation (--rdzv-backend slurm, or SLURM_JOB_ID with no backend
// given): the launch flags a Slurm job step implies, from its environment. Pure functions.
//
// One `cairn run` per node (srun --ntasks-per-node=1): the node count is SLURM_NNODES, the head
// node the first host of SLURM_JOB_NODELIST, and the job id the run id. The nodes meet at the
// elastic master, which the agent of SLURM_NODEID 0 (the head node) runs inside itself, at
// HEAD:PORT with PORT = 20000 + job id mod 9000 (two jobs sharing a head node get different
// ports; --rdzv-endpoint overrides both). Node ids are SLURMD_NODENAME.
#pragma once

#include <string>
#include <vector>

#include "cairn/core/status.h"
#include "cairn/elastic/launch_options.h"
#include "cairn/elastic/worker_env.h"

namespace cairn::elastic {

// Slurm's compact host list ("gpu[01-03,7],login1") expanded as `scontrol show hostnames`
// does: ranges keep their zero padding; several bracket groups in one name multiply. Errors
// (kInvalidArgument) name the list and what is wrong: unbalanced brackets, an empty or
// reversed range, more than 65536 hosts.
Result<std::vector<std::string>> expand_hostlist(const std::string& text);

// True when `flags` ask for the Slurm backend, or give none while SLURM_JOB_ID is set (and no
// --rdzv-endpoint / --master-addr / --standalone says where else to meet).
bool wants_slurm(const LaunchFlags& flags, const Env& env);

// The flags with what the allocation implies filled in: --rdzv-backend cairn, --nnodes
// (SLURM_NNODES unless given), --node-id, --rdzv-endpoint, --embed-master on node 0, --rdzv-id
// (the job id), --run-dir (runs/slurm-JOBID/NODE unless given). kInvalidArgument naming the
// variable when one is missing or malformed, or for --node-rank (Slurm gives it).
Result<LaunchFlags> slurm_launch_flags(LaunchFlags flags, const Env& env);

// The TCP port of a job's embedded master when --rdzv-endpoint does not give one.
int slurm_master_port(long long job_id);

}  // namespace cairn::elastic
