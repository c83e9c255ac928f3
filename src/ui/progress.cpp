// Progress line formatting and printing.
#include "cairn/ui/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace cairn::ui {

std::string format_duration(double s) {
  if (!(s >= 0) || std::isinf(s)) return "?";
  char buf[32];
  auto t = int64_t(std::llround(s));
  if (t >= 3600)
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", (long long)(t / 3600),
                  (long long)(t % 3600 / 60));
  else if (t >= 60)
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", (long long)(t / 60), (long long)(t % 60));
  else
    std::snprintf(buf, sizeof(buf), "%llds", (long long)t);
  return buf;
}

std::string format_progress(const ProgressFigures& f) {
  char buf[256];
  int width = int(std::to_string(f.total).size());
  std::snprintf(buf, sizeof(buf),
                "step %*lld/%lld | loss %.4f | lr %.2e | %.0f tok/s | MFU %.1f%% | ETA %s", width,
                (long long)f.step, (long long)f.total, f.loss, f.lr, f.tokens_per_s, 100.0 * f.mfu,
                format_duration(f.eta_seconds).c_str());
  std::string s = buf;
  if (!f.extra.empty()) s += " | " + f.extra;
  return s;
}

bool ProgressLine::stderr_is_tty() { return ::isatty(STDERR_FILENO) == 1; }

void ProgressLine::update(const ProgressFigures& f) {
  std::string line = format_progress(f);
  if (tty_) {
    std::fprintf(stderr, "\r%s\033[K", line.c_str());
    std::fflush(stderr);
    open_line_ = true;
  } else if (f.step % log_every_ == 0 || f.step == f.total || !f.extra.empty()) {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  last_ = line;
}

void ProgressLine::message(const std::string& text) {
  if (open_line_) std::fprintf(stderr, "\r\033[K");
  std::fprintf(stderr, "%s\n", text.c_str());
  if (open_line_) std::fprintf(stderr, "%s", last_.c_str());
  std::fflush(stderr);
}

void ProgressLine::finish() {
  if (open_line_) std::fprintf(stderr, "\n");
  open_line_ = false;
}

}  // namespace cairn::ui
