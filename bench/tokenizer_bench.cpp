// Tokenizer throughput: cairn's GPT-2 encoder on the King James Bible on one thread, and the
// speed ratio against the reference JavaScript encoder (Encoder.js under node, one thread) on
// 20 KB and 200 KB slices of the same text. Every figure is the best of 3 runs, on both sides:
// cairn encodes with a fresh tokenizer (cold cache) each time, the peer is a fresh node process
// each time (its own encode time, without node's start-up, as tests/tokenizer_reference.js
// reports it).
//
// usage: tokenizer_bench [kjv.txt] [tokenizer dir]
//   Without a file the text is generated with `bible -f "Genesis 1:1-Revelation 22:21"`.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cairn/data/tokenizer.h"

namespace {

using cairn::data::Tokenizer;

constexpr int kRepeats = 3;  // every figure, both sides: the best of this many runs

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string run_capture(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) {
    *status = -1;
    return out;
  }
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  *status = ::pclose(p);
  return out;
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::unique_ptr<Tokenizer> open_or_die(const std::string& dir) {
  auto t = Tokenizer::Open(dir);
  if (!t.ok()) {
    std::fprintf(stderr, "tokenizer_bench: %s\n", t.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(t).value();
}

// Seconds for a fresh tokenizer (empty cache) to encode `text`; the ids go to *ids.
double time_cold_encode(const std::string& dir, const std::string& text,
                        std::vector<int32_t>* ids) {
  auto tok = open_or_die(dir);
  double t0 = now_seconds();
  *ids = tok->encode(text);
  return now_seconds() - t0;
}

// Times the reference encoder and cairn (cold cache, best of 3 each) on the first `bytes` of text
// cut at a line boundary; prints both speeds and the ratio. False if the ids differ or the
// reference could not run.
bool compare_with_peer(const std::string& dir, const std::string& text, size_t bytes) {
  size_t cut = text.rfind('\n', bytes);
  std::string slice = text.substr(0, cut == std::string::npos ? bytes : cut + 1);
  char path[] = "/tmp/cairn_tokbench_XXXXXX";
  int fd = ::mkstemp(path);
  if (fd < 0 || ::write(fd, slice.data(), slice.size()) != static_cast<ssize_t>(slice.size())) {
    std::fprintf(stderr, "tokenizer_bench: cannot write a temporary file\n");
    return false;
  }
  ::close(fd);
  const std::string script = std::string(CAIRN_SOURCE_DIR) + "/tests/tokenizer_reference.js";
  const std::string err_path = std::string(path) + ".err";
  double ref_ms = 1e30;
  std::string ref;
  for (int rep = 0; rep < kRepeats; ++rep) {
    int status;
    std::string out =
        run_capture("CAIRN_REF_TIME=1 node " + shell_quote(script) + " " + shell_quote(dir) + " " +
                        shell_quote(path) + " 2>" + shell_quote(err_path),
                    &status);
    std::ifstream err_in(err_path);
    std::string word;
    double ms = -1;
    while (err_in >> word) {
      if (word == "encode_ms") err_in >> ms;
    }
    if (status != 0 || ms <= 0 || (rep > 0 && out != ref)) {
      ::unlink(path);
      ::unlink(err_path.c_str());
      std::fprintf(stderr, "tokenizer_bench: the reference encoder did not run (node %s)\n",
                   script.c_str());
      return false;
    }
    ref = std::move(out);
    ref_ms = std::min(ref_ms, ms);
  }
  ::unlink(path);
  ::unlink(err_path.c_str());

  std::vector<int32_t> slice_ids;
  double best = 1e30;
  for (int rep = 0; rep < kRepeats; ++rep)
    best = std::min(best, time_cold_encode(dir, slice, &slice_ids));
  std::string mine;
  for (size_t i = 0; i < slice_ids.size(); ++i) {
    mine += (i ? " " : "") + std::to_string(slice_ids[i]);
  }
  const bool same = mine + "\n" == ref;
  const double slice_mb = static_cast<double>(slice.size()) / 1e6;
  const double ref_s = ref_ms / 1000;
  std::printf("slice of %.0f KB, cold cache, 1 thread each, best of %d each:\n", slice_mb * 1000,
              kRepeats);
  std::printf("  peer Encoder.js (node): %.3f s = %.3f MB/s\n", ref_s, slice_mb / ref_s);
  std::printf("  cairn:                  %.4f s = %.1f MB/s\n", best, slice_mb / best);
  std::printf("  ratio cairn/peer: %.0fx  (ids %s)\n", ref_s / best, same ? "identical" : "DIFFER");
  return same;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = cairn::data::resolve_tokenizer_dir(argc > 2 ? argv[2] : "gpt2");
  std::string text;
  if (argc > 1) {
    std::ifstream in(argv[1], std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "tokenizer_bench: cannot read %s\n", argv[1]);
      return 1;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  } else {
    int status;
    text = run_capture("bible -f 'Genesis 1:1-Revelation 22:21'", &status);
    if (status != 0 || text.empty()) {
      std::fprintf(stderr, "tokenizer_bench: `bible` failed; pass a text file instead\n");
      return 1;
    }
  }
  const double mb = static_cast<double>(text.size()) / 1e6;

  int status = 0;
  const std::string node = run_capture("node --version 2>/dev/null", &status);
  std::printf(
      "machine: %u cores; both sides on 1 thread (cairn's encoder is single-threaded; "
      "the peer is node %s running Encoder.js from %s)\n",
      std::thread::hardware_concurrency(),
      status == 0 && !node.empty() ? node.substr(0, node.find('\n')).c_str() : "(not found)",
      dir.c_str());

  // Whole text, one thread: cold cache (a fresh tokenizer each run), then warm; best of 3.
  std::vector<int32_t> ids;
  double cold = 1e30;
  for (int rep = 0; rep < kRepeats; ++rep) cold = std::min(cold, time_cold_encode(dir, text, &ids));
  auto tok = open_or_die(dir);
  tok->encode(text);
  double warm = 1e30;
  std::vector<int32_t> again;
  for (int rep = 0; rep < kRepeats; ++rep) {
    double t0 = now_seconds();
    again = tok->encode(text);
    warm = std::min(warm, now_seconds() - t0);
  }
  std::printf("cairn encode, 1 thread: %.2f MB -> %zu tokens (best of %d)\n", mb, ids.size(),
              kRepeats);
  std::printf("  cold cache: %.3f s = %.1f MB/s\n", cold, mb / cold);
  std::printf("  warm cache: %.3f s = %.1f MB/s\n", warm, mb / warm);
  if (again != ids) {
    std::fprintf(stderr, "tokenizer_bench: warm and cold encodes differ\n");
    return 1;
  }

  // Slices ending at a line boundary, for the reference encoder, whose time grows faster
  // than linearly with the text length.
  bool all_same = true;
  for (size_t bytes : {size_t{20000}, size_t{200000}}) {
    all_same = compare_with_peer(dir, text, bytes) && all_same;
  }
  return all_same ? 0 : 1;
}
