#!/usr/bin/env bash
# The include-layer check: a file under src/<layer>/ may include only its own layer and
# the layers below it (ARCHITECTURE.md: core <- io <- text, imaging <- models <- generate
# <- data <- eval, train <- tools; text/imaging and eval/train are siblings, neither
# includes the other). include/m3d/ (the public API) is allowed everywhere.
# Exceptions, each with its reason, are listed in tests/layers_allowed.txt.
# Usage: check_layers.sh SOURCE_DIR. Exit 1 with one line per violation.
set -euo pipefail
root="${1:?usage: check_layers.sh SOURCE_DIR}"
declare -A rank=([core]=0 [io]=1 [text]=2 [imaging]=2 [models]=3 [generate]=4 [data]=5 [eval]=6 [train]=6 [serve]=7)
allowed_file="$root/tests/layers_allowed.txt"
violations=0
while IFS= read -r -d '' file; do
  rel="${file#"$root"/}"
  layer="$(echo "$rel" | cut -d/ -f2)"
  [[ -n "${rank[$layer]:-}" ]] || { echo "$rel: src/$layer is not a known layer (add it to tests/check_layers.sh)"; violations=$((violations + 1)); continue; }
  while IFS= read -r target; do
    [[ "$target" == "$layer" || -z "${rank[$target]:-}" ]] && continue
    if (( rank[$target] >= rank[$layer] )); then
      if grep -qxF "$rel $target" <(sed -e 's/[[:space:]]*#.*//' -e '/^$/d' "$allowed_file"); then continue; fi
      echo "$rel includes $target/: $layer may include only layers below it"
      violations=$((violations + 1))
    fi
  done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([a-z_]*\)\/.*/\1/p' "$file" | sort -u)
done < <(find "$root/src" \( -name '*.h' -o -name '*.cpp' \) -print0 | sort -z)
if (( violations > 0 )); then
  echo "include layers: $violations violation(s)"
  exit 1
fi
echo "include layers: ok"
