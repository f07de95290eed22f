#!/usr/bin/env bash
# The CPU speed benchmark of issue 7: hmer against its PyTorch twin (tools/bench_torch.py) on the full
# CAN (configs/can.yaml), at 120x480 with 30 tokens and at 200x800 with 60 tokens, one after the other
# (never two timings at once), then a table of the ratios PyTorch / hmer.
#   scripts/bench.sh                 both sizes, 10 timed steps each (2 warm-up), 5 decodes
#   STEPS=3 SIZES="120x480x30" scripts/bench.sh     a shorter run
# Environment: BUILD_DIR (default build-native), HMER_NATIVE (ON: -march=native, the fast build;
# OFF: the portable one), THREADS (2), STEPS (10), WARMUP (2), DECODE_REPEATS (5), BATCH (8),
# SIZES ("120x480x30 200x800x60"), OUT (runs/bench), SKIP_SETUP (0).
# PyTorch runs in its best CPU setup on this machine: OpenBLAS's OpenMP build
# (libopenblas0-openmp, put first with LD_LIBRARY_PATH), ATEN_CPU_CAPABILITY=avx512, oneDNN
# convolutions (on by default in Debian's torch), OMP_NUM_THREADS=THREADS. It runs three times per
# size: with glibc's malloc (the issue's setup), with tcmalloc preloaded (the allocator the hmer CLI
# links; PyTorch's CPU tuning guides recommend it), and with tcmalloc plus the OpenMP settings hmer
# runs under (OMP_ENV below: threads spin while waiting and stay on their cores). Each ratio is taken
# against the best of the three runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${BUILD_DIR:-build-native}"
HMER_NATIVE="${HMER_NATIVE:-ON}"
THREADS="${THREADS:-2}"
STEPS="${STEPS:-10}"
WARMUP="${WARMUP:-2}"
DECODE_REPEATS="${DECODE_REPEATS:-5}"
BATCH="${BATCH:-8}"
SIZES="${SIZES:-120x480x30 200x800x60}"
OUT="${OUT:-runs/bench}"
CONFIG=configs/can.yaml
# OpenMP settings for hmer and PyTorch's third run: on two dedicated cores, spinning waits and pinned
# threads save the wake-up and migration costs of the many short parallel regions of a step.
OMP_ENV="${OMP_ENV:-OMP_WAIT_POLICY=active OMP_PROC_BIND=close OMP_PLACES=cores}"
PY=/usr/bin/python3  # Debian's interpreter, the one with python3-torch

if [ "${SKIP_SETUP:-0}" != 1 ]; then
  bash scripts/setup.sh
  if ! dpkg -s libopenblas0-openmp >/dev/null 2>&1; then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get install -y -qq --no-install-recommends libopenblas0-openmp
  fi
fi
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHMER_CUDA=OFF -DHMER_NATIVE="$HMER_NATIVE" \
  -DHMER_BUILD_TESTS=OFF >/dev/null
ninja -C "$BUILD_DIR" hmer_cli
mkdir -p "$OUT"

TORCH_LIB=/usr/lib/x86_64-linux-gnu/openblas-openmp
[ -d "$TORCH_LIB" ] || echo "warning: $TORCH_LIB missing: PyTorch will not run with OpenMP OpenBLAS" >&2
TCMALLOC=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
[ -f "$TCMALLOC" ] || { echo "error: $TCMALLOC missing (scripts/setup.sh installs libgoogle-perftools-dev)" >&2; exit 1; }

for size in $SIZES; do
  IFS=x read -r H W T <<<"$size"
  echo "== $size: hmer ($BUILD_DIR, HMER_NATIVE=$HMER_NATIVE, $THREADS threads, $OMP_ENV)"
  env $OMP_ENV OMP_NUM_THREADS="$THREADS" "$BUILD_DIR/bin/hmer" bench --config "$CONFIG" --batch "$BATCH" --height "$H" \
    --width "$W" --tokens "$T" --steps "$STEPS" --warmup "$WARMUP" --decode-repeats "$DECODE_REPEATS" \
    --threads "$THREADS" --json "$OUT/hmer_$size.json"
  for alloc in glibc tcmalloc tcmalloc_omp; do
    echo "== $size: PyTorch ($THREADS threads, $alloc)"
    preload=""
    omp_env=""
    [ "$alloc" != glibc ] && preload="$TCMALLOC"
    [ "$alloc" = tcmalloc_omp ] && omp_env="$OMP_ENV"
    env $omp_env LD_PRELOAD="$preload" LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
      ATEN_CPU_CAPABILITY=avx512 OMP_NUM_THREADS="$THREADS" "$PY" tools/bench_torch.py --config "$CONFIG" --batch "$BATCH" --height "$H" \
      --width "$W" --tokens "$T" --steps "$STEPS" --warmup "$WARMUP" --decode-repeats "$DECODE_REPEATS" \
      --threads "$THREADS" --json "$OUT/torch_${alloc}_$size.json" >/dev/null
  done
done

"$PY" - "$OUT" $SIZES <<'EOF'
import json, sys
out, sizes = sys.argv[1], sys.argv[2:]
rows = []
print()
print("PyTorch columns: glibc malloc / tcmalloc preloaded / tcmalloc + OMP_ENV; each ratio against the best.")
print("| size | hmer step s | PyTorch step s | step ratio (PyTorch/hmer) | hmer decode s | PyTorch decode s "
      "| decode ratio | hmer peak MiB | PyTorch peak MiB | memory (hmer/PyTorch) | hmer GFLOP/s | PyTorch GFLOP/s |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for s in sizes:
    h = json.load(open(f"{out}/hmer_{s}.json"))
    ts = [json.load(open(f"{out}/torch_{a}_{s}.json")) for a in ("glibc", "tcmalloc", "tcmalloc_omp")]
    best_step = min(t["train_step_s"] for t in ts)
    best_dec = min(t["decode_s"] for t in ts)
    best_mem = min(t["peak_rss_mib"] for t in ts)
    r_step = best_step / h["train_step_s"]
    r_dec = best_dec / h["decode_s"]
    r_mem = h["peak_rss_mib"] / best_mem
    rows.append({"size": s, "step_ratio": r_step, "decode_ratio": r_dec, "memory_ratio": r_mem,
                 "hmer": {k: h[k] for k in ("train_step_s", "decode_s", "peak_rss_mib", "gflops_per_s")},
                 "torch_glibc": {k: ts[0][k] for k in ("train_step_s", "decode_s", "peak_rss_mib", "gflops_per_s")},
                 "torch_tcmalloc": {k: ts[1][k] for k in ("train_step_s", "decode_s", "peak_rss_mib", "gflops_per_s")},
                 "torch_tcmalloc_omp": {k: ts[2][k] for k in ("train_step_s", "decode_s", "peak_rss_mib", "gflops_per_s")}})
    two = lambda k, f: " / ".join(format(t[k], f) for t in ts)
    print(f"| {s} | {h['train_step_s']:.3f} | {two('train_step_s', '.3f')} | {r_step:.2f} | {h['decode_s']:.3f} | "
          f"{two('decode_s', '.3f')} | {r_dec:.2f} | {h['peak_rss_mib']:.0f} | {two('peak_rss_mib', '.0f')} | "
          f"{r_mem:.2f} | {h['gflops_per_s']:.1f} | {two('gflops_per_s', '.1f')} |")
def met(rows, key):
    ok = True
    for r in rows:
        t, h = r[key], r["hmer"]
        ok &= (t["train_step_s"] / h["train_step_s"] >= 1.5 and t["decode_s"] / h["decode_s"] >= 1.5
               and h["peak_rss_mib"] / t["peak_rss_mib"] <= 0.5)
    return "MET" if ok else "NOT MET"
goal = all(r["step_ratio"] >= 1.5 and r["decode_ratio"] >= 1.5 and r["memory_ratio"] <= 0.5 for r in rows)
print()
print("goal (step and decode ratio >= 1.5, memory <= 0.5 of PyTorch's):")
print("  against PyTorch with glibc malloc (the issue's setup): " + met(rows, "torch_glibc"))
print("  against PyTorch with tcmalloc preloaded:               " + met(rows, "torch_tcmalloc"))
print("  against PyTorch with tcmalloc and OMP_ENV:             " + met(rows, "torch_tcmalloc_omp"))
print("  against the best of the three per measure (the table): " + ("MET" if goal else "NOT MET"))
json.dump(rows, open(f"{out}/ratios.json", "w"), indent=2)
print(f"wrote {out}/ratios.json")
EOF
