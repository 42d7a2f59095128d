#!/usr/bin/env bash
# The GPU checks of the scale-and-speed issue as one prepared command for a lent GPU machine (the
# session's `device` tool): the VAE and DCGAN benchmarks on the GPU (the whole dataset on the device),
# fp32, bf16-mixed and torch.compile, against the hand-written loops in the same process, and a 1-GPU
# DDP smoke run of genlab-train (trainer=ddp_gpu) that must write its metrics.json.
#
# Here, on a machine that reaches the package registries, once per checkout:
#     bash scripts/gpu_checks.sh prepare
# puts the wheels the GPU image lacks (hydra-core, omegaconf, antlr4, kornia) in .whl/ and a copy of
# mnist10k in .gpu_data/ (both git-ignored through .git/info/exclude). Then, through the device tool:
#     run(command="bash scripts/gpu_checks.sh run", carry=[".whl", ".gpu_data"], timeout_s=560)
# Each check has its own time limit (about 8 minutes in all); every log is printed and written to $OUT.
# `DEVICE=cpu bash scripts/gpu_checks.sh run` tries the same steps on a CPU (slowly; a dry run).
set -uo pipefail
cd "$(dirname "$0")/.."

prepare() {
    local py="${PYTHON:-python3}"
    mkdir -p .git/info .whl .gpu_data
    for pat in /.whl/ /.gpu_data/; do
        grep -qxF "$pat" .git/info/exclude 2>/dev/null || echo "$pat" >> .git/info/exclude
    done
    # the versions installed here; the GPU image runs Python 3.12 on x86-64
    local pins
    pins=$("$py" - <<'EOF'
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in ("hydra-core", "omegaconf", "kornia", "kornia_rs")))
EOF
)
    # shellcheck disable=SC2086
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl $pins || return 1
    # antlr4-python3-runtime (Hydra's parser) is published as source only: build its pure-Python wheel here
    "$py" -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==4.9.3" || return 1
    rm -rf .gpu_data/mnist10k
    # mnist10k where GENLAB_MNIST10K says, else beside the checkout (as scripts/benchmark.py)
    local mnist="${GENLAB_MNIST10K:-../shared/data/mnist10k}"
    if [ -d "$mnist/MNIST/raw" ]; then
        cp -r "$mnist" .gpu_data/mnist10k
    else
        echo "no mnist10k at $mnist (GENLAB_MNIST10K): the benchmarks will use synthetic data" >&2
    fi
    ls -la .whl .gpu_data
}

run() {
    local device="${DEVICE:-cuda}" out="${OUT:-/tmp/genlab-gpu-checks}" site=/tmp/genlab-site
    mkdir -p "$out"
    export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
    if [ "$device" = cuda ]; then
        ls .whl/*.whl > /dev/null || { echo "no .whl/: run 'bash scripts/gpu_checks.sh prepare' here first" >&2; return 2; }
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            .whl/*.whl || return 3
    fi
    # genlab as its wheel lays it out (conf/ as genlab.conf), without building one offline
    rm -rf "$site/genlab" && mkdir -p "$site" && cp -r genlab "$site/genlab" && cp -r conf "$site/genlab/conf"
    export PYTHONPATH="$site"
    if [ "$device" = cuda ]; then
        nvidia-smi -L | tee "$out/env.txt"
    fi
    [ -d .gpu_data/mnist10k ] && export GENLAB_MNIST10K="$PWD/.gpu_data/mnist10k"
    python3 -c "import torch, pytorch_lightning as pl, genlab; print('torch', torch.__version__, 'lightning', \
pl.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())" | tee -a "$out/env.txt"
    local epochs=5 dcgan_epochs=4 precisions="${PRECISIONS:-32-true bf16-mixed}"
    [ "$device" = cpu ] && epochs=2 dcgan_epochs=2 precisions="${PRECISIONS:-32-true}"  # a dry run

    echo "== 1. VAE benchmark on $device ($precisions): eager, compiled, 8 updates per loader batch"
    timeout 250 python3 scripts/benchmark.py vae --device "$device" --epochs "$epochs" --repeats 2 \
        --precision $precisions --compile --updates 8 2>&1 | grep -v "available\|LOCAL_RANK\|Tip\|stopped" \
        | tee "$out/vae.log"

    echo "== 2. DCGAN benchmark on $device"
    timeout 120 python3 scripts/benchmark.py dcgan --device "$device" --epochs "$dcgan_epochs" --repeats 2 \
        --precision $precisions 2>&1 | grep -v "available\|LOCAL_RANK\|Tip\|stopped" | tee "$out/dcgan.log"

    local run_dir=/tmp/genlab-ddp-smoke trainer=(trainer=ddp_gpu trainer.devices=1)
    [ "$device" = cpu ] && trainer=(trainer=ddp_cpu trainer.devices=1)
    echo "== 3. genlab-train under DDP on one $device (${trainer[*]}), digits, 2 epochs"
    rm -rf "$run_dir"
    (cd /tmp && timeout 150 python3 -m genlab.train "${trainer[@]}" model=vae data=digits trainer.max_epochs=2 \
        "hydra.run.dir=$run_dir" 2>&1 | tail -25) | tee "$out/ddp.log"
    if [ -f "$run_dir/metrics.json" ]; then
        cp "$run_dir/metrics.json" "$out/ddp_metrics.json"
        echo "DDP smoke: metrics.json written"
    else
        echo "DDP smoke: FAILED, no metrics.json"
        return 4
    fi
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: bash scripts/gpu_checks.sh prepare|run" >&2; exit 2 ;;
esac
