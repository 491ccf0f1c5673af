// The one progress line for counted loops (training steps, bench samples, synthetic
// studies) and the one clock format. One-off messages (resumed, stopped, eval result)
// go through spdlog in the caller; nothing in src/ prints with fprintf.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>

namespace m3d {

// "hh:mm:ss" (hours not capped at 99); negative seconds read as 0, non-finite as "--:--:--".
std::string clock_text(double seconds);

// A status line "[label] done/total  extra  ETA hh:mm:ss" on `sink` (stderr by default).
// On a terminal it is redrawn in place with \r, at most every 0.2 s; elsewhere (CI logs,
// files) it is printed as plain lines at most every 10 s, so logs stay readable. The last
// item (done == total) is always shown. The rate, and so the ETA, counts only the items
// done since construction: `first` is where a resumed loop starts. Disabled, it prints
// nothing. update() may be called from several threads.
class Progress {
 public:
  Progress(std::string label, int64_t total, bool enabled, int64_t first = 0, std::FILE* sink = stderr);
  ~Progress() { finish(); }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // `done` items of `total` are finished; `extra` (e.g. "loss 0.1234") goes before the ETA.
  void update(int64_t done, const std::string& extra = "");
  // Shows the latest update if it was skipped and ends the line; call it before logging
  // a message between updates (a later update starts a new line) and at the end.
  void finish();
  // Seconds per item since construction, counting items first..done; infinite before any.
  double seconds_per_item(int64_t done) const;

 private:
  using Clock = std::chrono::steady_clock;
  void draw(Clock::time_point now);  // writes the pending state; caller holds mutex_

  const std::string label_;
  const int64_t total_, first_;
  const bool enabled_;
  std::FILE* const sink_;
  const bool terminal_;  // the sink is a TTY: redraw with \r
  const Clock::time_point start_;
  std::mutex mutex_;
  Clock::time_point last_draw_;  // the construction time until the first line
  int64_t done_;  // the latest update
  std::string extra_;
  bool pending_ = false;  // an update not yet on the sink
  bool open_line_ = false;  // a \r line is drawn and not yet ended
  size_t width_ = 0;  // its length, to blank out a longer previous line
};

}  // namespace m3d
