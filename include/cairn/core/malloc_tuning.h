// How the process's allocator treats large blocks. A training step allocates and frees the
// same large tensors every time (activations, logits and their gradients, often tens of MB).
// glibc serves blocks above its mmap threshold (which it raises to at most 32 MB) with fresh
// mappings and returns the top of the heap to the kernel once more than the trim threshold is
// free there, so each step faulted the same memory in again: about 0.5 ms per MB here, a
// quarter of a step of the demo model. Keeping freed memory in the heap removes that. And
// glibc gives threads their own arenas: a block freed in one (a communication thread's
// buffer) cannot serve another thread's next allocation, so each kept heap grew to its own
// peak (a ZeRO-1 worker of the demo model: 652 MB resident against 550 MB in one arena, at
// the same step time).
#pragma once

#include <cstdint>
#include <string>

namespace cairn::core {

// Sets glibc's mmap threshold to 1 GiB and its trim threshold to 2 GiB (mallopt), so freed
// blocks below 1 GiB are reused instead of unmapped: the process keeps its peak heap resident;
// and one arena for every thread (M_ARENA_MAX 1; call it before starting threads). Leaves the
// allocator alone when the user chose its settings (MALLOC_MMAP_THRESHOLD_,
// MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_, MALLOC_ARENA_MAX or a malloc tunable in
// GLIBC_TUNABLES) or set CAIRN_MALLOC_DEFAULTS=1.
struct AllocatorSetting {
  bool keeps_freed = false;  // freed blocks below 1 GiB now stay in the heap
  std::string description;   // what was done and why, for the log
};
AllocatorSetting keep_freed_memory();

// True when the user asked for glibc's allocator as it comes (CAIRN_MALLOC_DEFAULTS=1): no
// settings of cairn's, and no block cache.
bool malloc_defaults_requested();

// Bytes the allocators have handed out and not taken back (glibc's mallinfo2: heap blocks in
// use plus mmapped blocks, and the large blocks process_block_cache() has handed out): what the
// process's tensors and other objects hold right now, unlike the resident size, which keeps
// freed memory.
int64_t heap_bytes_in_use();

// Bytes malloc's heaps hold from the system, in use or free (glibc's mallinfo2 arena): with
// cairn's settings they never shrink while a job runs, so their growth over a phase is what its
// small allocations and the holes between them took at most.
int64_t heap_size_bytes();

// Hands the heap's free pages back to the kernel (glibc's malloc_trim): after a phase whose
// freed memory the steps will not reuse, such as building a job.
void return_free_heap();

}  // namespace cairn::core
