#!/usr/bin/env bash
# Every GPU check of the speed work in one prepared run (docs/method.md, "Speed at real size"): bench/gpu_fairy.py
# at the target (120 frames, 512x384, 10 steps, K = 3 against K = 0) for each fast-path option once, most
# important first, each result written as soon as it is measured (a run stopped at its limit keeps what it had).
#
#   here, once:       bash bench/gpu_session.sh --fetch-wheels   # diffusers and PyAV for the device's Python 3.12
#   on the device:    bash bench/gpu_session.sh                  # with carry [".whl"], timeout_s about 540
#   CPU dry run:      DEVICE=cpu HALF=fp32 FRAMES=3 WIDTH=64 HEIGHT=64 STEPS=1 BATCH=2 bash bench/gpu_session.sh
#
# Results: $OUT (or bench/out/gpu) as one JSON file per configuration and summary.txt; copy the numbers, the
# GPU's name and the date into bench/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--fetch-wheels" ]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "diffusers==0.42.1" "av==18.1.0" "importlib_metadata==8.7.0"
    exit
fi

out="${OUT:-bench/out/gpu}"
mkdir -p "$out"
if [ -d .whl ] && ! python3 -c "import diffusers, av" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# The repository's packages by their installed names (pyproject's package-dir), without installing them.
mkdir -p /tmp/fairy-src
ln -sfn "$PWD/server" /tmp/fairy-src/fairy_server
ln -sfn "$PWD/plugin" /tmp/fairy-src/fairy_plugin
export PYTHONPATH="$PWD:$PWD/proto:/tmp/fairy-src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

device="${DEVICE:-cuda}"
size=(--device "$device" --frames "${FRAMES:-120}" --width "${WIDTH:-512}" --height "${HEIGHT:-384}"
      --steps "${STEPS:-10}" --batch-size "${BATCH:-8}")
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  date -u +%Y-%m-%dT%H:%MZ; python3 -c "import torch; print('torch', torch.__version__)"; } > "$out/summary.txt"

run() {  # NAME, then gpu_fairy.py's options
    local name="$1"; shift
    echo "== $name: $*" | tee -a "$out/summary.txt"
    python3 bench/gpu_fairy.py "${size[@]}" "$@" --json "$out/gpu_$name.json" 2>&1 | tee "$out/log_$name.txt" \
        | grep -E "frames/s|over per-frame|phases|GiB" >> "$out/summary.txt"
}

half="${HALF:-fp16}"  # the precision every option is measured in (fp32 for a quick CPU dry run)
run "$half" --dtype "$half"
run bf16 --dtype bf16
run "$half-merged" --dtype "$half" --kernel merged
run "$half-reduced-finest" --dtype "$half" --reduced-anchors finest
run "$half-reduced-all" --dtype "$half" --reduced-anchors all
run "$half-channels-last" --dtype "$half" --channels-last
run "$half-no-overlap" --dtype "$half" --no-overlap-io
run "$half-24-frames" --dtype "$half" --frames "${FRAMES_SHORT:-24}"  # peak memory: 120 frames against 24
run "$half-vae-tiling" --dtype "$half" --vae-tiling
echo "done" >> "$out/summary.txt"
