// See progress.h.
#include "core/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace m3d {
namespace {

// A terminal redraws cheaply; a log file gets a line per interval, not one per item.
constexpr double kTerminalInterval = 0.2, kPlainInterval = 10.0;

}  // namespace

std::string clock_text(double seconds) {
  if (!std::isfinite(seconds)) return "--:--:--";
  const auto s = static_cast<int64_t>(std::max(0.0, seconds));
  return fmt::format("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
}

Progress::Progress(std::string label, int64_t total, bool enabled, int64_t first, std::FILE* sink)
    : label_(std::move(label)),
      total_(total),
      first_(first),
      enabled_(enabled),
      sink_(sink),
      terminal_(enabled && isatty(fileno(sink)) == 1),
      start_(Clock::now()),
      last_draw_(start_),
      done_(first) {}

double Progress::seconds_per_item(int64_t done) const {
  if (done <= first_) return std::numeric_limits<double>::infinity();
  return std::chrono::duration<double>(Clock::now() - start_).count() / static_cast<double>(done - first_);
}

void Progress::update(int64_t done, const std::string& extra) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (done < done_) return;  // threads may report out of order: keep the furthest
  done_ = done;
  extra_ = extra;
  pending_ = true;
  const auto now = Clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if (done == total_ || since >= (terminal_ ? kTerminalInterval : kPlainInterval)) draw(now);
}

void Progress::finish() {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (pending_) draw(Clock::now());
  if (open_line_) fmt::print(sink_, "\n");
  open_line_ = false;
  width_ = 0;
  std::fflush(sink_);
}

void Progress::draw(Clock::time_point now) {
  std::string line = fmt::format("[{}] {}/{}  ", label_, done_, total_);
  if (!extra_.empty()) line += extra_ + "  ";
  const int64_t left = total_ - done_;
  line += "ETA " + clock_text(left <= 0 ? 0.0 : seconds_per_item(done_) * static_cast<double>(left));
  if (terminal_) {
    const size_t width = line.size();
    if (width < width_) line.append(width_ - width, ' ');
    width_ = width;
    fmt::print(sink_, "\r{}", line);
    open_line_ = true;
  } else {
    fmt::print(sink_, "{}\n", line);
  }
  std::fflush(sink_);
  last_draw_ = now;
  pending_ = false;
}

}  // namespace m3d
