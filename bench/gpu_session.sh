#!/usr/bin/env bash
# Every GPU check of the speed work in one prepared run (docs/method.md, "Speed at real size"): bench/gpu_session.py
# at the target (120 frames, 512x384, 10 steps, K = 3 against K = 0) for each fast-path option once, most
# important first, each result written as soon as it is measured (a run stopped at its limit keeps what it had),
# configurations that would end past BUDGET_S seconds skipped.
#
#   here, once:       bash bench/gpu_session.sh --fetch-wheels   # diffusers and PyAV for the device's Python 3.12
#   on the device:    bash bench/gpu_session.sh                  # with carry [".whl"], timeout_s about 540
#   CPU dry run:      DEVICE=cpu HALF=fp32 FRAMES=3 WIDTH=64 HEIGHT=64 STEPS=1 BATCH=2 ONLY=fp32,merged bash bench/gpu_session.sh
#
# Results: $OUT (or bench/out/gpu): results.json, summary.txt, log.txt; copy the numbers, the GPU's name and the
# date into bench/RESULTS.md.
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

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>/dev/null \
    || echo "no nvidia-smi"; date -u +%Y-%m-%dT%H:%MZ; } | tee "$out/gpu.txt"
# One process: the model is built once per precision, the options switched on and off on it.
python3 bench/gpu_session.py --device "${DEVICE:-cuda}" --frames "${FRAMES:-120}" --width "${WIDTH:-512}" \
    --height "${HEIGHT:-384}" --steps "${STEPS:-10}" --batch-size "${BATCH:-8}" --half "${HALF:-fp16}" \
    --repeats "${REPEATS:-1}" --budget-s "${BUDGET_S:-420}" ${ONLY:+--only "$ONLY"} --out "$out" 2>&1 | tee "$out/log.txt"
