#include "m3d/runtime.h"

#include <ATen/Parallel.h>
#include <sched.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <thread>

namespace m3d {
namespace {

int available_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  const int n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : static_cast<int>(std::thread::hardware_concurrency());
  return n > 0 ? n : 1;
}

}  // namespace

void runtime_set_threads(int threads) {
  const int cpus = available_cpus();
  if (threads <= 0) {
    const char* env = std::getenv("OMP_NUM_THREADS");
    threads = env != nullptr && std::atoi(env) > 0 ? std::atoi(env) : cpus;
  }
  // More threads than CPUs only oversubscribes them: every parallel region then waits
  // for descheduled workers (1,000 threads on 2 CPUs ran for minutes).
  if (threads > cpus) {
    spdlog::warn("{} threads requested but this process may use {} CPUs: using {}", threads, cpus, cpus);
    threads = cpus;
  }
  at::set_num_threads(threads);
}

}  // namespace m3d
