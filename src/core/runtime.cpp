#include "m3d/runtime.h"

#include <ATen/Parallel.h>
#include <sched.h>

#include <cstdlib>
#include <thread>

namespace m3d {

void runtime_set_threads(int threads) {
  if (threads <= 0) {
    if (const char* env = std::getenv("OMP_NUM_THREADS"); env != nullptr && std::atoi(env) > 0) {
      threads = std::atoi(env);
    } else {
      cpu_set_t set;
      CPU_ZERO(&set);
      threads = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set)
                                                             : static_cast<int>(std::thread::hardware_concurrency());
    }
  }
  at::set_num_threads(threads > 0 ? threads : 1);
}

}  // namespace m3d
