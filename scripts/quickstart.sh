#!/usr/bin/env bash
# The README's main command: from a clean clone to a trained recogniser and its ExpRate.
#   1. install the Debian packages (scripts/setup.sh)
#   2. configure + build hmer (Release, CPU; HMER_CUDA=AUTO adds the GPU backend when nvcc is there)
#   3. synthesise the default data with `hmer synth` (seeded, skipped when present):
#      data/synth_train (seed 1) and the held-out data/synth_test (seed 2). Both keep the expressions
#      of at most QUICKSTART_MAX_TOKENS (10) tokens so a small model learns them within minutes; the
#      images of longer expressions stay on disk, unused (allow_extra_images in the config)
#   4. hmer train --config configs/quickstart.yaml
#   5. hmer eval on data/synth_test -> runs/quickstart/eval.json, and print the ExpRate line
# Environment: BUILD_DIR (default build), HMER_CUDA (default OFF), JOBS (default: all cores),
# QUICKSTART_TRAIN_COUNT (12000 generated), QUICKSTART_TEST_COUNT (1000), QUICKSTART_MAX_TOKENS (10),
# HMER_BUILD_TESTS (OFF), OMP_NUM_THREADS (1: see below).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${BUILD_DIR:-build}"
HMER_CUDA="${HMER_CUDA:-OFF}"
JOBS="${JOBS:-$(nproc)}"
TRAIN_COUNT="${QUICKSTART_TRAIN_COUNT:-12000}"
TEST_COUNT="${QUICKSTART_TEST_COUNT:-1000}"
MAX_TOKENS="${QUICKSTART_MAX_TOKENS:-10}"
CONFIG=configs/quickstart.yaml
RUN=runs/quickstart

bash scripts/setup.sh
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHMER_CUDA="$HMER_CUDA" \
  -DHMER_BUILD_TESTS="${HMER_BUILD_TESTS:-OFF}" >/dev/null
ninja -C "$BUILD_DIR" -j"$JOBS" hmer_cli
HMER="$BUILD_DIR/bin/hmer"
# The quickstart model's ops are small: with two OpenMP threads most of the time goes to thread
# synchronisation (measured ~8x slower than one thread on a busy 2-core machine), while one thread
# computes and the data loader's thread decodes images on the other core.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

start=$(date +%s)

# Keeps the caption lines of at most MAX_TOKENS tokens (the images stay; the config allows them).
synth_split() {  # dir count seed name
  local dir=$1 count=$2 seed=$3 name=$4
  if [ -s "$dir/caption.txt" ] && [ -f "$dir/.quickstart-$count-$seed-$MAX_TOKENS" ]; then
    echo "quickstart: $dir present ($(wc -l < "$dir/caption.txt") expressions)"
    return
  fi
  "$HMER" synth --out "$dir" --count "$count" --seed "$seed" --split-name "$name" --no-inkml >/dev/null
  awk -F'\t' -v max="$MAX_TOKENS" 'split($2, t, " ") <= max' "$dir/caption.txt" > "$dir/caption.txt.tmp"
  mv "$dir/caption.txt.tmp" "$dir/caption.txt"
  touch "$dir/.quickstart-$count-$seed-$MAX_TOKENS"
  echo "quickstart: $dir: $(wc -l < "$dir/caption.txt") of $count expressions have <= $MAX_TOKENS tokens"
}
synth_split data/synth_train "$TRAIN_COUNT" 1 synth
synth_split data/synth_test "$TEST_COUNT" 2 test

if [ -f "$RUN/latest.json" ]; then
  echo "quickstart: $RUN already holds a run; moving it to $RUN.old.$start"
  mv "$RUN" "$RUN.old.$start"
fi
"$HMER" train --config "$CONFIG" --set train.run_dir="$RUN"
"$HMER" eval --config "$RUN/config.yaml" --weights "$RUN/weights_best.safetensors" --data data/synth_test \
  --out "$RUN/eval.json" | tee "$RUN/eval.txt"

end=$(date +%s)
echo
echo "quickstart: data + training + evaluation took $((end - start)) s (build excluded)"
grep -m1 '^ExpRate' "$RUN/eval.txt" | sed 's/^/quickstart: held-out synthetic split: /'
echo "quickstart: report $RUN/eval.json; try: $HMER predict --weights $RUN/weights_best.safetensors data/synth_test/img/test_000000.png"
