// The live progress line of a training run: step/total, loss, tokens/s, MFU, ETA.
// On a terminal it rewrites one line in place; otherwise it prints a line every
// `log_every` updates so that logs stay readable.
#pragma once

#include <cstdint>
#include <string>

namespace cairn::ui {

struct ProgressFigures {
  int64_t step = 0;   // steps done
  int64_t total = 0;  // steps planned
  double loss = 0;
  double lr = 0;
  double tokens_per_s = 0;
  double mfu = 0;           // fraction, 0..1
  double eta_seconds = -1;  // < 0: unknown
  std::string extra;        // e.g. "val 4.93"
};

// Formats one line without a trailing newline. Pure.
std::string format_progress(const ProgressFigures& f);
// "1h02m", "4m05s", "12s".
std::string format_duration(double seconds);

class ProgressLine {
 public:
  // `tty` selects in-place updates; log_every applies otherwise.
  ProgressLine(bool tty, int64_t log_every) : tty_(tty), log_every_(log_every) {}
  ~ProgressLine() { finish(); }
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  void update(const ProgressFigures& f);
  // Prints a message on its own line without garbling the progress line.
  void message(const std::string& text);
  // Ends the in-place line with a newline (idempotent).
  void finish();

  static bool stderr_is_tty();

 private:
  bool tty_;
  int64_t log_every_;
  bool open_line_ = false;
  std::string last_;
};

}  // namespace cairn::ui
