// Small helpers shared by the benchmark programs.
#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <vector>

namespace m3d::bench {

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// As Python's statistics.median (the reference scripts' statistic): the mean of the two
// middle values for an even count.
inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// The read roofline's kernel: every 8-byte word of `bytes` added, threaded as the GEMV
// kernels are (OpenMP, one contiguous range per thread; serial in a program built without
// OpenMP). The sum keeps the read from being optimised away.
inline uint64_t sum_words(const void* data, int64_t bytes) {
  const auto* words = static_cast<const uint64_t*>(data);
  const int64_t count = bytes / 8;
  uint64_t total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
  for (int64_t i = 0; i < count; ++i) total += words[i];
  return total;
}

// GB/s of reading a 512 MiB buffer (past every cache) with all threads, each of `repeat`
// reads timed: the bound of a decode step, which reads each weight byte once. The one
// read roofline every benchmark divides by.
inline std::vector<double> read_bandwidth_gbs(int repeat) {
  const std::vector<uint64_t> buffer(64 << 20, 1);
  const int64_t bytes = static_cast<int64_t>(buffer.size() * sizeof(uint64_t));
  std::vector<double> gbs;
  for (int r = 0; r < repeat; ++r) {
    const auto start = std::chrono::steady_clock::now();
    const uint64_t sum = sum_words(buffer.data(), bytes);
    gbs.push_back(static_cast<double>(bytes) / seconds_since(start) / 1e9);
    if (sum != buffer.size()) std::abort();
  }
  return gbs;
}

// The process's peak resident memory so far, in GiB.
inline double peak_rss_gb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1048576.0;
}

}  // namespace m3d::bench
