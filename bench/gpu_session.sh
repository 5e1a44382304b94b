# One GPU session in one command: environment, CUDA smoke tests, model-step benchmark, and an
# end-to-end training run timed against that benchmark (does the data loader keep the GPU fed?).
#
#   OUT=/some/folder bash bench/gpu_session.sh        (from the repository root; see bench/GPU_SESSION.md)
#
# Why one script: the lent GPU machine is reached by one copied working tree and one command at a
# time, with little device time; every stage runs whatever happened before it (its exit status is
# recorded), each has a timeout, and the whole script stays inside GPU_SESSION_BUDGET seconds
# (default 520, under the 10-minute limit of a call). Writes at most 7 files to $OUT:
#   env.txt  cuda_tests.log  e2e_train.log  e2e_history.jsonl  train_bench.log  train_bench.json  summary.txt
# GPU_SESSION_QUICK=1 shrinks every stage (CPU check of the script itself); the E2E_* and BENCH_*
# variables below override single settings; PYTHON picks the interpreter (default python3).
set -u

cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
: "${OUT:?set OUT to the folder for results}"
mkdir -p "$OUT"
PY=${PYTHON:-python3}
QUICK=${GPU_SESSION_QUICK:-0}
SITE=${GPU_SESSION_SITE:-/tmp/site}
WORK=${GPU_SESSION_WORK:-/tmp/gpu_session}
START=$SECONDS

if [ "$QUICK" = 1 ]; then
    BUDGET=${GPU_SESSION_BUDGET:-1500}
    E2E_PRESET=${E2E_PRESET:-quick}; E2E_SIZE=${E2E_SIZE:-96}; E2E_FACES=${E2E_FACES:-8}
    E2E_ITERS=${E2E_ITERS:-8}; E2E_BATCH=${E2E_BATCH:-2}; E2E_WORKERS=${E2E_WORKERS:-1}; E2E_LOG=${E2E_LOG:-2}
    BENCH_PRESETS=${BENCH_PRESETS:-quick}; BENCH_BATCHES=${BENCH_BATCHES:-2}; BENCH_EXTRA=${BENCH_EXTRA:---steps 2 --warmup 1}
else
    BUDGET=${GPU_SESSION_BUDGET:-520}
    # sae-256 at batch 16 (the benchmark's CUDA default batch); 7 workers per identity: 14 loader
    # processes + the trainer on 16 cores, what data.default_workers picks there
    E2E_PRESET=${E2E_PRESET:-sae-256}; E2E_SIZE=${E2E_SIZE:-256}; E2E_FACES=${E2E_FACES:-64}
    E2E_ITERS=${E2E_ITERS:-200}; E2E_BATCH=${E2E_BATCH:-16}; E2E_WORKERS=${E2E_WORKERS:-7}; E2E_LOG=${E2E_LOG:-10}
    # sae-256 first: the 40% target is about it, and a benchmark cut by the budget then still has it
    BENCH_PRESETS=${BENCH_PRESETS:-sae-256,quick}; BENCH_BATCHES=${BENCH_BATCHES:-8,16,32,64}; BENCH_EXTRA=${BENCH_EXTRA:-}
fi

declare -A STATUS
STAGES=()

# run_stage NAME MAX_SECONDS LOG COMMAND...: COMMAND under `timeout`, capped by what is left of the
# budget less RESERVE seconds kept for later stages; output shown and saved to LOG; status recorded.
RESERVE=0
run_stage() {
    local name=$1 max=$2 log=$3
    shift 3
    STAGES+=("$name")
    local left=$((BUDGET - (SECONDS - START) - RESERVE))
    local limit=$((max < left ? max : left))
    if ((limit < 15)); then
        STATUS[$name]="skipped: ${left}s of the budget left"
        echo "=== $name: skipped (budget) ===" | tee "$log"
        return
    fi
    echo "=== $name (timeout ${limit}s, $((SECONDS - START))s into the session) ==="
    local t0=$SECONDS
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    local note=""
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then note=" (timed out)"; fi
    STATUS[$name]="exit $rc$note after $((SECONDS - t0))s"
    echo "=== $name: ${STATUS[$name]} ==="
}

# --- 1. environment and carried wheels --------------------------------------------------------
{
    echo "date: $(date -Is)  host: $(hostname)  cores: $(nproc)  quick: $QUICK  budget: ${BUDGET}s"
    if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi
    free -g 2>/dev/null | head -2
} 2>&1 | tee "$OUT/env.txt"

STAGES+=("wheels")
if [ -d .whl ] && compgen -G ".whl/*.whl" >/dev/null; then
    ls -l .whl | tee -a "$OUT/env.txt"
    timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl 2>&1 | tail -20 | tee -a "$OUT/env.txt"
    STATUS[wheels]="pip exit ${PIPESTATUS[0]} into $SITE"
    export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
    STATUS[wheels]="no .whl folder: nothing installed"
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1  # a stage cut by its timeout still leaves its printed lines in the log
echo "wheels: ${STATUS[wheels]}; PYTHONPATH=$PYTHONPATH" | tee -a "$OUT/env.txt"

timeout 120 "$PY" - <<'EOF' 2>&1 | tee -a "$OUT/env.txt"
import importlib, sys
import torch
print(f"python {sys.version.split()[0]}  torch {torch.__version__}  cuda {torch.version.cuda}  "
      f"cudnn {torch.backends.cudnn.version()}  cuda available {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"gpu {torch.cuda.device_count()} x {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}, "
          f"bf16 {torch.cuda.is_bf16_supported()}")
for name in ("numpy", "scipy", "cv2", "safetensors", "numba", "skimage", "yaml", "tqdm", "triton", "OpenImageIO",
             "PyOpenColorIO"):
    try:
        m = importlib.import_module(name)
        print(f"  {name} {getattr(m, '__version__', '?')}  {getattr(m, '__file__', '')}")
    except Exception as e:
        print(f"  {name}: NOT IMPORTABLE ({type(e).__name__}: {e})")
try:
    import vfxswap.train.trainer, vfxswap.render.render  # noqa: F401  the import path every stage needs
    print("  vfxswap trainer and render import: ok")
except Exception as e:
    print(f"  vfxswap trainer/render import FAILED: {type(e).__name__}: {e}")
EOF

# --- 2. CUDA smoke tests -----------------------------------------------------------------------
RESERVE=$([ "$QUICK" = 1 ] && echo 0 || echo 200)  # keep room for the end-to-end run and the benchmark
run_stage cuda_tests 220 "$OUT/cuda_tests.log" \
    "$PY" -m pytest -q -s -rfEs --durations=0 -p no:cacheprovider tests/test_cuda.py

# --- 3. end-to-end training through the CLI -----------------------------------------------------
e2e() {
    rm -rf "$WORK" && mkdir -p "$WORK" || return 2
    "$PY" - "$WORK" "$E2E_SIZE" "$E2E_FACES" <<'EOF' || return 3
import sys, time
sys.path.insert(0, "tests")
from conftest import write_faceset
root, size, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0 = time.perf_counter()
yaws = [-40.0 + 80.0 * i / max(1, n - 1) for i in range(n)]
for name, seed in (("A", 1), ("B", 2)):
    write_faceset(f"{root}/{name}", yaws=yaws, size=size, seed=seed)
print(f"wrote 2 synthetic facesets of {n} faces at {size} px in {time.perf_counter() - t0:.1f}s")
EOF
    "$PY" -m vfxswap train --src "$WORK/A" --dst "$WORK/B" --model "$WORK/model" \
        --release-ref "SYNTHETIC-TEST (generated faces, no performer)" --preset "$E2E_PRESET" \
        --iters "$E2E_ITERS" --batch "$E2E_BATCH" --workers "$E2E_WORKERS" --warmup 10 \
        --log-every "$E2E_LOG" --preview-every 1000000 --save-every 1000000
}
RESERVE=$([ "$QUICK" = 1 ] && echo 0 || echo 120)
export -f e2e  # `timeout` runs programs, not functions: the stage is `bash -c e2e`
export WORK PY E2E_PRESET E2E_SIZE E2E_FACES E2E_ITERS E2E_BATCH E2E_WORKERS E2E_LOG
run_stage e2e_train 160 "$OUT/e2e_train.log" bash -c e2e
cp "$WORK/model/history.jsonl" "$OUT/e2e_history.jsonl" 2>/dev/null || echo "(no e2e history.jsonl)"

# --- 4. model-step benchmark --------------------------------------------------------------------
RESERVE=15
# shellcheck disable=SC2086  # BENCH_EXTRA is a list of flags
run_stage train_bench 400 "$OUT/train_bench.log" \
    "$PY" bench/train.py --presets "$BENCH_PRESETS" --batches "$BENCH_BATCHES" --batch "$E2E_BATCH" --compile \
    $BENCH_EXTRA --json "$OUT/train_bench.json"

# --- 5. end-to-end vs model step, and the summary ----------------------------------------------
COMPARE=$("$PY" - "$OUT" "$E2E_PRESET" "$E2E_BATCH" <<'EOF' 2>&1
"""Steady end-to-end samples/s (history times after a quarter of the run: loader start-up and
cuDNN tuning excluded) against bench/train.py's step rate for the same preset and batch, in the
variant the trainer runs by default on CUDA (bf16 channels_last fused). Off CUDA (the script's own
check here) it compares with fp32 eager, whatever the CPU trainer used: a plumbing check, not a figure."""
import json, re, sys
from pathlib import Path
out, preset, batch = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
try:
    rows = [r for r in map(json.loads, (out / "e2e_history.jsonl").read_text().splitlines()) if "loss" in r]
except (OSError, ValueError) as e:
    sys.exit(f"end-to-end: no history ({e})")
if len(rows) < 2:
    sys.exit(f"end-to-end: {len(rows)} logged steps, too few to time")
start = next((r for r in rows if r["iter"] >= rows[-1]["iter"] / 4 and r is not rows[-1]), rows[0])
end = rows[-1]
e2e = (end["iter"] - start["iter"]) * 2 * batch / max(1e-9, end["time"] - start["time"])
step, source = None, ""
try:
    bench = json.loads((out / "train_bench.json").read_text())
    res = next(r for r in bench["results"] if r["preset"] == preset)
    variant = "bf16 cl fused" if "bf16 cl fused" in res["median_s"] else "fp32 eager"
    if res["batch"] == batch:
        step, source = 2 * batch / res["median_s"][variant], f"train_bench.json {variant}"
    else:
        hit = [s for s in res.get("sweep", []) if s.get("batch") == batch and "step_s" in s]
        if hit:
            step, source = 2 * batch / hit[0]["step_s"], "train_bench.json sweep"
except (OSError, ValueError, StopIteration, KeyError) as e:
    source = f"train_bench.json unusable ({type(e).__name__})"
if step is None:  # the benchmark was cut short: its table rows are in the log
    try:
        log = (out / "train_bench.log").read_text()
        block = log.split(f"\n{preset} (", 1)[1]
        for variant in ("bf16 cl fused", "fp32 eager"):
            m = re.search(rf"^{re.escape(variant)}\s+([\d.]+)\s+([\d.]+)", block, re.M)
            if m:
                step, source = float(m.group(2)), f"train_bench.log {variant}"
                break
    except (OSError, IndexError):
        pass
first = f"end-to-end {e2e:.1f} samples/s (iterations {start['iter']}-{end['iter']}; whole run incl. start-up " \
        f"{end.get('samples_per_s', float('nan')):.1f})"
if step:
    print(f"{first} vs model step {step:.1f} samples/s = {100 * e2e / step:.0f}% [{preset}, batch {batch}, {source}]")
else:
    print(f"{first}; no model-step figure for {preset} at batch {batch} ({source or 'no benchmark output'})")
EOF
)
echo "$COMPARE"

{
    echo "GPU session summary ($(date -Is), $((SECONDS - START))s, budget ${BUDGET}s, quick=$QUICK)"
    grep -E "^(python |gpu )" "$OUT/env.txt"
    grep -E "NOT IMPORTABLE|FAILED" "$OUT/env.txt"
    echo "stages:"
    echo "  wheels: ${STATUS[wheels]}"
    for s in "${STAGES[@]}"; do [ "$s" = wheels ] || echo "  $s: ${STATUS[$s]:-not run}"; done
    echo "cuda tests: $(grep -E "(passed|failed|skipped|error)[^=]* in [0-9.]+s" "$OUT/cuda_tests.log" | tail -1)"
    grep -E "^(FAILED|ERROR) " "$OUT/cuda_tests.log" | head -10
    grep -E "(cuda|cpu): (loss|compiled)|vs cpu swap" "$OUT/cuda_tests.log" | sed 's/^[.sFE]*/  /' | head -10
    grep -E "^SUMMARY" "$OUT/train_bench.log"
    echo "$COMPARE"
    echo "files: $(cd "$OUT" && ls | tr '\n' ' ')"
} >"$OUT/summary.txt"
echo "=================================================================================="
cat "$OUT/summary.txt"
