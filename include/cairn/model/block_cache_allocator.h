// libtorch's CPU allocator for training processes: every tensor's memory through the process's
// block cache (core/block_cache.h), so that large tensors freed in one step serve the next and
// the resident memory stops growing after the first step.
#pragma once

#include <string>

namespace cairn::model {

// Makes core::process_block_cache() libtorch's CPU allocator, once per process; later calls do
// nothing. Call it before the first tensor that should use it (tensors made before keep the
// allocator they came from). Returns a line for the log.
std::string install_block_cache_allocator();

// The allocator training processes run with: glibc's settings (core::keep_freed_memory, unless
// the user chose them) and the block cache as libtorch's CPU allocator. CAIRN_BLOCK_CACHE=0
// leaves the cache out, CAIRN_MALLOC_DEFAULTS=1 both; so does a build with a sanitizer. Returns
// what was done, for the log.
std::string use_training_allocator();

// True once install_block_cache_allocator has run in this process.
bool block_cache_allocator_installed();

}  // namespace cairn::model
