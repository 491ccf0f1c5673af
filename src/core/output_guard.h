// Guards around third-party libraries that print instead of returning errors: while
// alive, one mutes file descriptor 2, the other collects what goes to std::cerr.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string>

namespace m3d {

// fd 2 goes to /dev/null while alive (third-party writers that print their own errors).
// Mutes on several threads take turns (a lock held while alive): interleaved, one would save
// another's /dev/null as "the" stderr and leave the process mute.
class StderrMuted {
 public:
  StderrMuted() : lock_(mutex()) {
    std::fflush(stderr);
    saved_ = ::dup(2);
    const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (saved_ >= 0 && null >= 0) ::dup2(null, 2);
    if (null >= 0) ::close(null);
  }
  ~StderrMuted() {
    std::fflush(stderr);
    if (saved_ >= 0) {
      ::dup2(saved_, 2);
      ::close(saved_);
    }
  }
  StderrMuted(const StderrMuted&) = delete;
  StderrMuted& operator=(const StderrMuted&) = delete;

 private:
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  std::unique_lock<std::mutex> lock_;
  int saved_ = -1;
};

// What third-party readers print on std::cerr while alive (MetaIO reports its errors
// there), so it becomes part of m3d's one-line message instead of lines of its own.
// std::cerr is one per process: captures on several threads take turns (a lock held while
// alive), or one thread would restore another's buffer and leave std::cerr pointing at a
// destroyed one. Inactive, it captures nothing and takes no lock.
class CerrCaptured {
 public:
  explicit CerrCaptured(bool active = true) {
    if (!active) return;
    lock_ = std::unique_lock<std::mutex>(mutex());
    saved_ = std::cerr.rdbuf(text_.rdbuf());
  }
  ~CerrCaptured() {
    if (lock_.owns_lock()) std::cerr.rdbuf(saved_);
  }
  CerrCaptured(const CerrCaptured&) = delete;
  CerrCaptured& operator=(const CerrCaptured&) = delete;
  std::string text() const { return text_.str(); }

 private:
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  std::unique_lock<std::mutex> lock_;
  std::ostringstream text_;
  std::streambuf* saved_ = nullptr;
};

}  // namespace m3d
