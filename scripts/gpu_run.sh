#!/usr/bin/env bash
# One prepared run for a machine with a CUDA GPU: the CUDA tests, the GPU benchmarks, then the
# GPU presets of the three studies (distill, robust, seg), in that order.
#
#   scripts/gpu_run.sh OUT [DATA]
#
# OUT keeps everything: a log per part, times.txt (exit status and wall seconds of each part),
# and the studies' run folders under OUT/reproduce. DATA holds cifar10/ and camvid/ (the
# layouts `softlabels` reads); a study whose data is missing there is skipped. A part that
# finished leaves OUT/<part>.done and is skipped by the next call, and the studies resume their
# own folders, so calling the script again with the same OUT continues where a time limit
# stopped it. PYTHON names the interpreter (default: python). Budget: the tests and
# benchmarks take a few minutes; the presets are sized for about 10 minutes each on one H200
# (docs/results.md).
set -uo pipefail

OUT=${1:?usage: scripts/gpu_run.sh OUT [DATA]}
DATA=${2:-}
PY=${PYTHON:-python}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

part() {
    local name=$1
    shift
    if [ -e "$OUT/$name.done" ]; then
        echo "$name: done earlier" | tee -a "$OUT/times.txt"
        return
    fi
    local start=$SECONDS
    "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name: rc=$rc $((SECONDS - start)) s" | tee -a "$OUT/times.txt"
    [ "$rc" = 0 ] && touch "$OUT/$name.done"
}

part env "$PY" -c "import torch, platform; print(platform.node(), torch.__version__,
    torch.version.cuda, torch.cuda.get_device_name(0))"
# The device fixture runs each such test on cuda too; -k cuda keeps the cuda instances and
# the tests that exist only for CUDA (kernels, sync-free checks).
part cuda-tests "$PY" -m pytest -q -k cuda -p no:cacheprovider
part bench-jml "$PY" benchmarks/jml.py --device cuda --dtype float32 bfloat16
part bench-students "$PY" benchmarks/students.py --device cuda
part bench-engine "$PY" benchmarks/engine_data.py --device cuda

# The presets of the studies whose data is in DATA (CIFAR-10's JPEGs are about 55 MB and
# CamVid's 49 MB: where the copy to the GPU machine is size-limited, give one per call).
studies=()
[ -n "$DATA" ] && [ -d "$DATA/cifar10" ] && studies+=(distill robust)
[ -n "$DATA" ] && [ -d "$DATA/camvid" ] && studies+=(seg)
if [ "${#studies[@]}" -gt 0 ]; then
    # One reproduce call: it writes one report over the study folders, and each study
    # resumes its own folder on a second call.
    part "presets-${studies[*]// /-}" "$PY" -m softlabels reproduce --full --recipe paper \
        --studies "${studies[@]}" --data-root "$DATA" --device cuda --out "$OUT/reproduce"
else
    echo "presets: skipped (no cifar10/ or camvid/ under DATA)" | tee -a "$OUT/times.txt"
fi
