// A mutex, its scoped lock and a condition variable that clang's thread-safety analysis
// (-Wthread-safety) understands: fields say which mutex guards them (CAIRN_GUARDED_BY), functions
// which mutex they need held (CAIRN_REQUIRES) or must not hold (CAIRN_EXCLUDES), and a build
// with clang checks every access (tests/thread_safety_test.sh). Under GCC the annotations are
// empty and these are std::mutex, std::lock_guard and std::condition_variable_any.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define CAIRN_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define CAIRN_THREAD_ANNOTATION(x)
#endif

#define CAIRN_CAPABILITY(name) CAIRN_THREAD_ANNOTATION(capability(name))
#define CAIRN_SCOPED_CAPABILITY CAIRN_THREAD_ANNOTATION(scoped_lockable)
#define CAIRN_GUARDED_BY(m) CAIRN_THREAD_ANNOTATION(guarded_by(m))
#define CAIRN_PT_GUARDED_BY(m) CAIRN_THREAD_ANNOTATION(pt_guarded_by(m))
#define CAIRN_REQUIRES(...) CAIRN_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define CAIRN_EXCLUDES(...) CAIRN_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define CAIRN_ACQUIRE(...) CAIRN_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define CAIRN_RELEASE(...) CAIRN_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define CAIRN_RETURN_CAPABILITY(m) CAIRN_THREAD_ANNOTATION(lock_returned(m))
#define CAIRN_NO_THREAD_SAFETY_ANALYSIS CAIRN_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace cairn::core {

class CAIRN_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() CAIRN_ACQUIRE() { m_.lock(); }
  void unlock() CAIRN_RELEASE() { m_.unlock(); }

 private:
  std::mutex m_;
};

// Holds `m` for its scope.
class CAIRN_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& m) CAIRN_ACQUIRE(m) : m_(m) { m_.lock(); }
  ~MutexLock() CAIRN_RELEASE() { m_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& m_;
};

// Waits release `m` and take it again before they return; to the analysis `m` stays held.
class CondVar {
 public:
  void notify_one() { cv_.notify_one(); }
  void notify_all() { cv_.notify_all(); }

  void wait(Mutex& m) CAIRN_REQUIRES(m) { cv_.wait(m); }
  template <class Pred>
  void wait(Mutex& m, Pred done) CAIRN_REQUIRES(m) {
    cv_.wait(m, std::move(done));
  }
  // Returns early when notified (or spuriously).
  template <class Rep, class Period>
  void wait_for(Mutex& m, std::chrono::duration<Rep, Period> d) CAIRN_REQUIRES(m) {
    cv_.wait_for(m, d);
  }
  // True when `done()` holds, false when the time ran out first.
  template <class Rep, class Period, class Pred>
  bool wait_for(Mutex& m, std::chrono::duration<Rep, Period> d, Pred done) CAIRN_REQUIRES(m) {
    return cv_.wait_for(m, d, std::move(done));
  }

 private:
  std::condition_variable_any cv_;
};

}  // namespace cairn::core
