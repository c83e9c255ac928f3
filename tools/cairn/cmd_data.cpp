// `cairn data`: encode and decode text with the GPT-2 tokenizer, and prepare token files for
// training (train.bin, val.bin, meta.json).
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cairn/core/fs.h"
#include "cairn/core/mutex.h"
#include "cairn/core/status.h"
#include "cairn/data/parallel_encode.h"
#include "cairn/data/prepare.h"
#include "cairn/data/token_file.h"
#include "cairn/data/token_stream.h"
#include "cairn/data/tokenizer.h"
#include "commands.h"

namespace cairn::cli {
namespace {

template <typename T>
T value_or_throw(Result<T> r) {
  if (!r.ok()) throw StatusError(r.status());
  return std::move(r).value();
}

std::string read_stdin() {
  std::string text;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), stdin)) > 0) text.append(buf, n);
  if (std::ferror(stdin)) throw StatusError(Status::IoError("cannot read standard input"));
  return text;
}

std::string read_input(const std::string& path) {
  return path == "-" ? read_stdin() : value_or_throw(core::read_file(path));
}

void write_stdout(std::string_view bytes) {
  if (std::fwrite(bytes.data(), 1, bytes.size(), stdout) != bytes.size() ||
      std::fflush(stdout) != 0) {
    throw StatusError(Status::IoError("cannot write standard output"));
  }
}

std::unique_ptr<data::Tokenizer> open_tokenizer(const std::string& name) {
  return value_or_throw(data::Tokenizer::Open(data::resolve_tokenizer_dir(name)));
}

// Whitespace-separated decimal ids.
std::vector<int32_t> parse_ids(std::string_view text) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (true) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    if (i == text.size()) break;
    size_t j = i;
    while (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j]))) ++j;
    int64_t v = 0;
    auto [end, ec] = std::from_chars(text.data() + i, text.data() + j, v);
    std::string item(text.substr(i, std::min<size_t>(j - i, 40)));
    if (ec == std::errc::result_out_of_range ||
        (ec == std::errc() && end == text.data() + j && (v < INT32_MIN || v > INT32_MAX))) {
      throw StatusError(Status::InvalidArgument("token id " + item + " at position " +
                                                std::to_string(ids.size()) +
                                                " is outside the vocabulary"));
    }
    if (ec != std::errc() || end != text.data() + j) {
      throw StatusError(Status::InvalidArgument("\"" + item + "\" at position " +
                                                std::to_string(ids.size()) +
                                                " is not a token id; expected integers"));
    }
    ids.push_back(static_cast<int32_t>(v));
    i = j;
  }
  return ids;
}

// Draws "encoding  42%  12.0/28.5 MB  9.8 MB/s" on stderr until stopped. Joins on destruction.
class ProgressBar {
 public:
  ProgressBar(const std::atomic<int64_t>* done, int64_t total) : done_(done), total_(total) {
    thread_ = std::thread([this] { run(); });
  }
  ~ProgressBar() {
    {
      core::MutexLock lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    std::fprintf(stderr, "\r\033[K");
  }

 private:
  void run() {
    const auto t0 = std::chrono::steady_clock::now();
    core::MutexLock lock(mu_);
    while (!cv_.wait_for(mu_, std::chrono::milliseconds(200),
                         [this]() CAIRN_REQUIRES(mu_) { return stop_; })) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double done = static_cast<double>(done_->load()), mb = 1e6;
      const int width = 30, fill = static_cast<int>(width * done / static_cast<double>(total_));
      std::fprintf(stderr, "\rencoding [%s%s] %3.0f%%  %.1f/%.1f MB  %.1f MB/s\033[K",
                   std::string(fill, '#').c_str(), std::string(width - fill, '.').c_str(),
                   100 * done / static_cast<double>(total_), done / mb,
                   static_cast<double>(total_) / mb, s > 0 ? done / mb / s : 0.0);
      std::fflush(stderr);
    }
  }
  const std::atomic<int64_t>* done_;
  int64_t total_;
  core::Mutex mu_;
  core::CondVar cv_;
  bool stop_ CAIRN_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

void run_encode(const std::string& tokenizer) {
  auto tok = open_tokenizer(tokenizer);
  std::string text = read_stdin();
  std::vector<int32_t> ids = data::encode_parallel(*tok, text);
  std::string out;
  out.reserve(ids.size() * 6 + 1);
  char buf[16];
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out.push_back(' ');
    auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), ids[i]);
    out.append(buf, end);
  }
  out.push_back('\n');
  write_stdout(out);
}

// Reads standard input as it comes, encodes every piece that ends at a safe split and appends
// its ids to DIR/train.stream; at the end of the input the stream is closed (the .done marker).
void run_stream(const std::string& tokenizer, const std::string& out_dir) {
  auto tok = open_tokenizer(tokenizer);
  auto writer = value_or_throw(data::TokenStreamWriter::Create(out_dir));
  std::string pending;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(0, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw StatusError(core::errno_status("read", "standard input"));
    if (n > 0) pending.append(buf, size_t(n));
    // Everything up to the last safe split is final; the rest may still change its encoding.
    size_t cut = 0;
    for (size_t k = data::next_safe_split(pending, 1); k < pending.size();
         k = data::next_safe_split(pending, k + 1))
      cut = k;
    if (n == 0) cut = pending.size();
    if (cut > 0) {
      std::vector<int32_t> ids = tok->encode(std::string_view(pending).substr(0, cut));
      if (Status s = writer->append(ids.data(), ids.size()); !s.ok()) throw StatusError(s);
      pending.erase(0, cut);
    }
    if (n == 0) break;
  }
  if (Status s = writer->close(); !s.ok()) throw StatusError(s);
  spdlog::info("stream {}/{} closed at {} tokens", out_dir, data::kStreamFile, writer->tokens());
}

void run_decode(const std::string& tokenizer, const std::string& input) {
  auto tok = open_tokenizer(tokenizer);
  std::vector<int32_t> ids;
  if (input.empty()) {
    ids = parse_ids(read_stdin());
  } else {
    auto file = value_or_throw(data::TokenFile::Open(input));
    ids.resize(static_cast<size_t>(file->size()));
    for (int64_t i = 0; i < file->size(); ++i) ids[i] = file->at(i);
  }
  auto text = tok->decode(ids);
  if (!text.ok()) {
    throw StatusError(text.status().WithContext(input.empty() ? "standard input" : input));
  }
  write_stdout(*text);
}

void run_prepare(data::PrepareOptions opts, const std::string& input) {
  if (!(opts.val_fraction > 0 && opts.val_fraction <= 0.5)) {
    char msg[80];
    std::snprintf(msg, sizeof(msg), "--val-fraction %g is outside (0, 0.5]", opts.val_fraction);
    throw StatusError(Status::InvalidArgument(msg));
  }
  opts.source = input;
  std::string text = read_input(input);
  if (text.empty()) {
    throw StatusError(Status::InvalidArgument((input == "-" ? "standard input" : input) +
                                              " is empty; nothing to prepare"));
  }
  std::atomic<int64_t> progress{0};
  opts.progress_bytes = &progress;
  Result<data::PrepareStats> stats = Status::Internal("not run");
  {
    const bool show = ::isatty(STDERR_FILENO) && text.size() >= (4u << 20);
    std::unique_ptr<ProgressBar> bar;
    if (show) bar = std::make_unique<ProgressBar>(&progress, static_cast<int64_t>(text.size()));
    stats = data::prepare_dataset(text, opts);
  }
  if (!stats.ok()) throw StatusError(stats.status());
  const double mb = static_cast<double>(stats->input_bytes) / 1e6;
  std::fprintf(stderr,
               "prepared %s: %.2f MB -> %lld tokens (train %lld, val %lld) in %.2f s "
               "(encoding %.1f MB/s) into %s/{train.bin,val.bin,meta.json}\n",
               input.c_str(), mb, static_cast<long long>(stats->train_tokens + stats->val_tokens),
               static_cast<long long>(stats->train_tokens),
               static_cast<long long>(stats->val_tokens), stats->total_seconds,
               stats->encode_seconds > 0 ? mb / stats->encode_seconds : 0.0, opts.out_dir.c_str());
}

}  // namespace

void register_data_command(CLI::App& app) {
  CLI::App* data =
      app.add_subcommand("data", "Tokenize text and prepare token files (GPT-2 byte-level BPE)");
  data->require_subcommand(1);

  struct Args {
    std::string tokenizer = "gpt2";
    std::string decode_input;
    std::string input;
    data::PrepareOptions prepare;
  };
  auto args = std::make_shared<Args>();
  const std::string tok_help =
      "Tokenizer: \"gpt2\" ($CAIRN_TOKENIZER_DIR, else the source tree's .cache/gpt2) or a "
      "directory holding encoder.json and vocab.bpe";

  CLI::App* enc =
      data->add_subcommand("encode", "Encode standard input; print the ids on one line");
  enc->add_option("--tokenizer", args->tokenizer, tok_help)->capture_default_str();
  enc->footer("Example:\n  echo 'In the beginning' | cairn data encode\n  # 818 262 3726 198");
  enc->callback([args] { run_encode(args->tokenizer); });

  CLI::App* dec = data->add_subcommand(
      "decode", "Decode whitespace-separated ids from standard input (or a token file) to text");
  dec->add_option("--tokenizer", args->tokenizer, tok_help)->capture_default_str();
  dec->add_option("--input", args->decode_input,
                  "Decode this token file (e.g. data/kjv/val.bin) instead of standard input");
  dec->footer(
      "Examples:\n  echo '818 262 3726 198' | cairn data decode\n"
      "  cairn data decode --input data/kjv/val.bin | head");
  dec->callback([args] { run_decode(args->tokenizer, args->decode_input); });

  CLI::App* stream = data->add_subcommand(
      "stream", "Encode standard input as it arrives, appending to DIR/train.stream");
  stream->add_option("--out", args->input, "Output directory (created if missing)")->required();
  stream->add_option("--tokenizer", args->tokenizer, tok_help)->capture_default_str();
  stream->footer(
      "The online-learning source of dynamic sharding (data.stream: true): trainers take shards\n"
      "of the stream as it grows; DIR/train.stream.done appears when the input ends.\n"
      "Example:\n  tail -n +1 -f feed.txt | cairn data stream --out data/feed\n"
      "  bible -f 'Genesis 1:1-Revelation 22:21' | cairn data stream --out data/feed");
  stream->callback([args] { run_stream(args->tokenizer, args->input); });

  CLI::App* prep = data->add_subcommand(
      "prepare", "Encode a text file into DIR/train.bin, DIR/val.bin and DIR/meta.json");
  prep->add_option("--input", args->input, "Text file to encode, or - for standard input")
      ->required();
  prep->add_option("--out", args->prepare.out_dir, "Output directory (created if missing)")
      ->required();
  prep->add_option("--val-fraction", args->prepare.val_fraction,
                   "Fraction of the tokens, taken from the end, that form val.bin; in (0, 0.5]")
      ->capture_default_str();
  prep->add_option("--tokenizer", args->prepare.tokenizer, tok_help)->capture_default_str();
  prep->add_option("--threads", args->prepare.num_threads, "Encoding threads; 0 uses every core")
      ->capture_default_str();
  prep->footer(
      "Example:\n  bible -f 'Genesis 1:1-Revelation 22:21' > kjv.txt\n"
      "  cairn data prepare --input kjv.txt --out data/kjv --val-fraction 0.005");
  prep->callback([args] { run_prepare(args->prepare, args->input); });
}

}  // namespace cairn::cli
