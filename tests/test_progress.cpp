// The progress line (core/progress.h): the clock format, plain lines for logs and files,
// and \r redraws on a terminal (a pseudo-terminal stands in for one).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <regex>
#include <string>
#include <thread>

#include "core/progress.h"

namespace m3d {
namespace {

// Everything written to a temporary file so far.
std::string file_text(std::FILE* file) {
  std::fflush(file);
  std::rewind(file);
  std::string text;
  for (int c; (c = std::fgetc(file)) != EOF;) text += static_cast<char>(c);
  return text;
}

TEST(Progress, ClockText) {
  EXPECT_EQ(clock_text(0), "00:00:00");
  EXPECT_EQ(clock_text(59.9), "00:00:59");  // whole seconds, rounded down
  EXPECT_EQ(clock_text(3661), "01:01:01");
  EXPECT_EQ(clock_text(86399), "23:59:59");
  EXPECT_EQ(clock_text(360000), "100:00:00");  // hours are not capped
  EXPECT_EQ(clock_text(-5), "00:00:00");
  EXPECT_EQ(clock_text(std::numeric_limits<double>::infinity()), "--:--:--");
  EXPECT_EQ(clock_text(std::nan("")), "--:--:--");
}

TEST(Progress, FileGetsOneLineAtTheEnd) {
  std::FILE* file = std::tmpfile();
  ASSERT_NE(file, nullptr);
  {
    Progress progress("m3d test", 3, true, 0, file);
    for (int64_t i = 1; i <= 3; ++i) progress.update(i, "loss 0.5");  // well inside 10 s: only the last is shown
    progress.finish();
  }  // the destructor adds nothing after finish()
  EXPECT_EQ(file_text(file), "[m3d test] 3/3  loss 0.5  ETA 00:00:00\n");
  std::fclose(file);
}

TEST(Progress, FinishShowsWhereAStoppedLoopGot) {
  std::FILE* file = std::tmpfile();
  ASSERT_NE(file, nullptr);
  {
    Progress progress("m3d test", 4, true, 0, file);
    progress.update(1, "a");
  }  // the destructor finishes
  EXPECT_EQ(file_text(file), "[m3d test] 1/4  a  ETA 00:00:00\n");
  std::fclose(file);
}

TEST(Progress, ResumedLoopCountsOnlyNewItems) {
  std::FILE* file = std::tmpfile();
  ASSERT_NE(file, nullptr);
  Progress progress("m3d test", 4, true, 2, file);
  EXPECT_TRUE(std::isinf(progress.seconds_per_item(2)));  // nothing done in this run yet
  progress.update(3);
  EXPECT_TRUE(std::isfinite(progress.seconds_per_item(3)));
  progress.update(4);
  progress.update(2);  // a thread reporting late: the furthest count stays
  progress.finish();
  EXPECT_EQ(file_text(file), "[m3d test] 4/4  ETA 00:00:00\n");
  std::fclose(file);
}

TEST(Progress, DisabledPrintsNothing) {
  std::FILE* file = std::tmpfile();
  ASSERT_NE(file, nullptr);
  {
    Progress progress("m3d test", 2, false, 0, file);
    progress.update(1, "x");
    progress.update(2, "x");
    progress.finish();
  }
  EXPECT_EQ(file_text(file), "");
  std::fclose(file);
}

TEST(Progress, TerminalRedrawsInPlace) {
  const int master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) GTEST_SKIP() << "no pseudo-terminal here";
  const int slave = open(ptsname(master), O_RDWR | O_NOCTTY);
  ASSERT_GE(slave, 0);
  termios mode{};
  ASSERT_EQ(tcgetattr(slave, &mode), 0);
  cfmakeraw(&mode);  // bytes through unchanged (no \n -> \r\n)
  ASSERT_EQ(tcsetattr(slave, TCSANOW, &mode), 0);
  std::FILE* terminal = fdopen(slave, "w");
  ASSERT_NE(terminal, nullptr);
  {
    Progress progress("m3d test", 3, true, 0, terminal);
    std::this_thread::sleep_for(std::chrono::milliseconds(250));  // past the 0.2 s redraw interval
    progress.update(1, "a longer text");
    progress.update(2, "b");  // within 0.2 s of the last draw: skipped
    progress.update(3, "c");  // the last item: always drawn, blanking the longer line
    progress.finish();
  }
  std::fclose(terminal);
  std::string text;
  char buffer[256];
  pollfd ready{master, POLLIN, 0};
  while (poll(&ready, 1, 200) > 0 && (ready.revents & POLLIN)) {
    const ssize_t n = read(master, buffer, sizeof(buffer));
    if (n <= 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  close(master);
  text = std::regex_replace(text, std::regex("ETA \\d\\d:\\d\\d:\\d\\d"), "ETA hh:mm:ss");  // a busy machine may take a second
  const std::string first = "[m3d test] 1/3  a longer text  ETA hh:mm:ss", last = "[m3d test] 3/3  c  ETA hh:mm:ss";
  EXPECT_EQ(text, "\r" + first + "\r" + last + std::string(first.size() - last.size(), ' ') + "\n");
}

}  // namespace
}  // namespace m3d
