#!/usr/bin/env bash
# The test command: every CTest test except those labelled `slow`, then the
# torch-free parsers and tokenizer with their tests under AddressSanitizer + UBSan, then the
# libFuzzer targets (FUZZ_SECONDS for safetensors, half that for torch .bin, .npy, tokenizer.model and NIfTI, a quarter for PNG/JPEG slice checks, CSV, WordPiece, the HF config readers and recipes).
# Run scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${M3D_JOBS:-$(nproc)}"
fuzz_seconds="${FUZZ_SECONDS:-60}"

ctest --test-dir build -LE slow --output-on-failure -j "$jobs"

echo "== parsers, tokenizers and volume I/O tests under ASan + UBSan"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DM3D_SANITIZE=ON -DM3D_WITH_TORCH=OFF -DM3D_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan -j "$jobs" --target test_io_base test_gguf test_gguf_tokenizer test_text test_volume_io test_recipe test_dicom_seg test_metrics test_meteor test_progress test_quant_matmul test_jinja
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs"

if [ "$fuzz_seconds" -gt 0 ]; then
  echo "== fuzzing (${fuzz_seconds}s safetensors, $((fuzz_seconds / 2))s each GGUF, torch .bin, .npy, tokenizer.model, NIfTI; $((fuzz_seconds / 4))s each CSV, WordPiece, Jinja, recipes)"
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
    -DM3D_FUZZ=ON -DM3D_WITH_TORCH=OFF -DM3D_BUILD_BENCH=OFF >/dev/null
  cmake --build build-fuzz -j "$jobs" --target fuzz_safetensors fuzz_gguf fuzz_torch_bin fuzz_npy fuzz_sentencepiece fuzz_nifti fuzz_slice_image fuzz_csv fuzz_wordpiece fuzz_hf_config fuzz_jinja fuzz_recipe
  for target in safetensors gguf torch_bin npy sentencepiece nifti slice_image csv wordpiece hf_config jinja recipe; do
    corpus="build-fuzz/corpus_$target"
    mkdir -p "$corpus"
    seconds=$fuzz_seconds
    case "$target" in
      safetensors) cp tests/fixtures/io/*.safetensors tests/fixtures/io/st_sharded/*.safetensors "$corpus"/ ;;
      gguf) cp tests/fixtures/gguf/*.gguf "$corpus"/; seconds=$((fuzz_seconds / 2)) ;;
      torch_bin) cp tests/fixtures/io/*.bin "$corpus"/; seconds=$((fuzz_seconds / 2)) ;;
      npy) cp tests/fixtures/io/*.npy "$corpus"/; seconds=$((fuzz_seconds / 2)) ;;
      sentencepiece) cp tests/fixtures/tokenizers/tiny_bpe.model "$corpus"/; seconds=$((fuzz_seconds / 2)) ;;
      nifti) cp /usr/lib/python3/dist-packages/nibabel/tests/data/{anatomical,functional,reoriented_anat_moved}.nii "$corpus"/
             seconds=$((fuzz_seconds / 2)) ;;
      slice_image) for f in tests/fixtures/volumes/m3d_cap_slices/1.png tests/fixtures/volumes/jpeg_slices/*.jpg; do  # first byte: the kind asked for
                     for kind in 0 1 2; do { printf "\\$(printf %03o $kind)"; cat "$f"; } > "$corpus/$kind-$(basename "$f")"; done
                   done
                   header_mha='ObjectType = Image\nNDims = 3\nDimSize = 2 2 1\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n'
                   header_nrrd='NRRD0004\ntype: uchar\ndimension: 3\nsizes: 2 2 1\nencoding: %s\n\n'
                   { printf '\003'"$header_mha"; printf abcd; } > "$corpus/3-raw.mha"
                   { printf '\004'"$header_nrrd" raw; printf abcd; } > "$corpus/4-raw.nrrd"
                   { printf '\004'"$header_nrrd" gzip; printf abcd | gzip -c; } > "$corpus/4-gzip.nrrd"
                   seconds=$((fuzz_seconds / 4)) ;;
      csv) cp tests/fixtures/metrics/*.csv "$corpus"/; seconds=$((fuzz_seconds / 4)) ;;
      jinja) printf '%s' '{% for m in messages %}{{ m.role | upper }}: {{ m.content | trim }}{% if not loop.last %}\n{% endif %}{% endfor %}' > "$corpus/seed"
             seconds=$((fuzz_seconds / 4)) ;;
      hf_config) cp tests/fixtures/lamed_phi3_tiny/config.json "$corpus"/config.json
                 printf '{"add_bos_token": true, "model_max_length": 2048, "chat_template": "{{ x }}", "bos_token": {"content": "<s>"}}' > "$corpus/tokenizer_config.json"
                 printf '{"bos_token_id": 1, "eos_token_id": [2, 32007], "do_sample": false}' > "$corpus/generation.json"
                 printf '{"<im_patch>": 32011, "[SEG]": 32014}' > "$corpus/added.json"
                 seconds=$((fuzz_seconds / 4)) ;;
      recipe) printf '%s' '{"name": "m3d-lamed", "source": "M3D Data/process/m3d_cap_data_prepare.py", "ops": [{"op": "minmax"}, {"op": "crop_foreground", "threshold": 0, "margin": 0}, {"op": "resize", "size": [32, 256, 256], "mode": "trilinear"}]}' > "$corpus/m3d-lamed.json"
              printf '%s' '{"name": "ct", "ops": [{"op": "orient", "axcodes": "RAS"}, {"op": "spacing", "pixdim": [2.5, 1, 1], "mode": "bilinear"}, {"op": "window", "preset": "abdomen"}, {"op": "window", "level": 40, "width": 400}, {"op": "scale_range", "a_min": -1000, "a_max": 1000, "b_min": 0.0, "b_max": 1.0, "clip": true}, {"op": "percentile_range", "lower": 0.5, "upper": 99.5}, {"op": "zscore"}, {"op": "pad", "size": [40, 48, 41]}, {"op": "center_crop", "size": [10, 12, 15]}]}' > "$corpus/every_op.json"
              seconds=$((fuzz_seconds / 4)) ;;
      wordpiece) printf 'hello\n##s\nworld\n##\xc3\xa9\n\0Hello worlds! caf\xc3\xa9 [CLS]' > "$corpus/seed"; seconds=$((fuzz_seconds / 4)) ;;
    esac
    "build-fuzz/tests/fuzz_$target" -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 \
      -artifact_prefix=build-fuzz/ "$corpus" 2>&1 | tail -n 12
  done
fi
echo "test: all passed"
