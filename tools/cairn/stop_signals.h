// Serving until SIGINT or SIGTERM, for the commands that run a server in the foreground
// (`cairn master`, `cairn dashboard`).
#pragma once

#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <string>

namespace cairn::cli {

// Blocks SIGINT and SIGTERM first (the threads `start` starts inherit the mask, so only this
// thread takes them), runs `start` (which returns what must live until a signal, or throws),
// waits for either signal, then destroys what `start` returned and restores the mask. Logs
// "<who>: SIGINT received, shutting down".
template <class Start>
void serve_until_stop_signal(const std::string& who, Start start) {
  sigset_t stop_signals, old_mask;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, &old_mask);
  try {
    auto running = start();
    int sig = 0;
    sigwait(&stop_signals, &sig);
    spdlog::info("{}: {} received, shutting down", who, sig == SIGINT ? "SIGINT" : "SIGTERM");
  } catch (...) {
    pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    throw;
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
}

}  // namespace cairn::cli
