// Process-wide runtime settings.
#pragma once

namespace m3d {

// Sets libtorch's intra-op threads: `threads` > 0 as given; 0 means OMP_NUM_THREADS
// when set, else every CPU this process may run on. Debian's libtorch otherwise
// starts with one thread on some machines (measured: 1 of 2 here), halving GEMM speed.
// More than the CPUs this process may use is capped to them, with a warning.
void runtime_set_threads(int threads = 0);

}  // namespace m3d
