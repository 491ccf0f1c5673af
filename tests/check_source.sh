#!/usr/bin/env bash
# The source-shape check: every C++ file in src/ tools/ include/ examples/ tests/ bench/ is
# formatted as .clang-format says (fix: scripts/format.sh), and no file in src/ is over
# 600 lines (docs/development.md, "Size of files and functions").
# Usage: check_source.sh SOURCE_DIR. Exit 1 with one line per problem.
set -euo pipefail
root="${1:?usage: check_source.sh SOURCE_DIR}"
cd "$root"
problems=0
mapfile -d '' files < <(find src tools include examples tests bench \( -name '*.cpp' -o -name '*.h' \) -not -path 'tests/fixtures/*' -print0 | sort -z)
for file in "${files[@]}"; do
  if ! clang-format --dry-run --Werror "$file" >/dev/null 2>&1; then
    echo "$file: not formatted as .clang-format says (scripts/format.sh fixes it)"
    problems=$((problems + 1))
  fi
done
while IFS= read -r -d '' file; do
  lines=$(wc -l < "$file")
  if (( lines > 600 )); then
    echo "$file: $lines lines; a file in src/ stays under 600 (split it along a seam)"
    problems=$((problems + 1))
  fi
done < <(find src \( -name '*.cpp' -o -name '*.h' \) -print0)
if (( problems > 0 )); then
  echo "source shape: $problems problem(s)"
  exit 1
fi
echo "source shape: ok (${#files[@]} files)"
