#!/usr/bin/env bash
# Formats every C++ file as .clang-format says (what the SourceFormat test checks).
set -euo pipefail
cd "$(dirname "$0")/.."
find src tools include examples tests bench \( -name '*.cpp' -o -name '*.h' \) -not -path 'tests/fixtures/*' -print0 | xargs -0 clang-format -i
