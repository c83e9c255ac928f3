// Safe cut points and multi-threaded encoding.
#include "cairn/data/parallel_encode.h"

#include <algorithm>
#include <thread>

#include "pretokenize_impl.h"

namespace cairn::data {
namespace {

bool is_continuation(unsigned char b) { return (b & 0xC0) == 0x80; }

// The character (as the decoder sees it) that ends at byte `end` (exclusive), where
// text[end] is ASCII so that decoding before it does not depend on what follows.
char32_t char_before(std::string_view text, size_t end) {
  const unsigned char last = static_cast<unsigned char>(text[end - 1]);
  if (last < 0x80) return last;
  size_t p = end - 1;
  for (int back = 0; back < 3 && p > 0 && is_continuation(static_cast<unsigned char>(text[p]));
       ++back) {
    --p;
  }
  size_t len;
  char32_t c = internal::decode_utf8(text, p, &len);
  // If no well-formed character ends exactly here, the last unit is a U+FFFD.
  return p + len == end ? c : internal::kReplacementChar;
}

}  // namespace

bool is_safe_split(std::string_view text, size_t k) {
  if (k < 2 || k >= text.size() || text[k - 1] != '\n') return false;
  size_t len;
  return !internal::is_js_space(char_before(text, k - 1)) &&
         !internal::is_js_space(internal::decode_utf8(text, k, &len));
}

size_t next_safe_split(std::string_view text, size_t from) {
  // Candidates are the positions just after a "\n" at or after from - 1.
  size_t nl = from == 0 ? 0 : from - 1;
  while ((nl = text.find('\n', nl)) != std::string_view::npos) {
    if (is_safe_split(text, nl + 1)) return nl + 1;
    ++nl;
  }
  return text.size();
}

std::vector<int32_t> encode_parallel(const Tokenizer& tok, std::string_view text,
                                     const ParallelEncodeOptions& options) {
  std::vector<size_t> cuts = {0};
  const size_t chunk = std::max<size_t>(options.chunk_bytes, 1);
  while (cuts.back() < text.size()) {
    size_t want = cuts.back() + chunk;
    cuts.push_back(want >= text.size() ? text.size() : next_safe_split(text, want));
  }
  const size_t num_chunks = cuts.size() - 1;
  std::vector<std::vector<int32_t>> parts(num_chunks);
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < num_chunks;) {
      std::string_view piece = text.substr(cuts[i], cuts[i + 1] - cuts[i]);
      tok.encode_append(piece, &parts[i]);
      if (options.progress_bytes) *options.progress_bytes += static_cast<int64_t>(piece.size());
    }
  };
  size_t threads = options.num_threads > 0 ? static_cast<size_t>(options.num_threads)
                                           : std::max(1u, std::thread::hardware_concurrency());
  threads = std::min(threads, num_chunks);
  {
    std::vector<std::thread> pool;
    for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
    for (auto& th : pool) th.join();
  }
  size_t total = 0;
  for (auto& p : parts) total += p.size();
  std::vector<int32_t> ids;
  ids.reserve(total);
  for (auto& p : parts) {
    ids.insert(ids.end(), p.begin(), p.end());
    std::vector<int32_t>().swap(p);
  }
  return ids;
}

}  // namespace cairn::data
