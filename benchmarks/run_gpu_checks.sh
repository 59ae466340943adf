#!/usr/bin/env bash
# The GPU checks of the cost issue, as one script for a lent GPU machine (its results were copied
# into benchmarks/results/gpu*.json by hand; see README "Speed and cost").
#   1. benchmarks/bench_gpu.py: R50-FPN at 1280x720, training and scoring images/s, fp32 vs bf16,
#      JPEG decoding on the CPU vs nvJPEG.
#   2. `alod demo` with its defaults, fp32 against bf16 autocast (train.amp/score.amp = gpu), seed 0
#      then seed 1 while time is left: bf16's effect on mAP50 next to the run-to-run spread.
# Usage: benchmarks/run_gpu_checks.sh OUT_DIR FRAMES_DIR [SECONDS_BUDGET]
set -uo pipefail
out=${1:?out dir}; frames=${2:?BDD100K frames folder}; budget=${3:-400}
start=$SECONDS
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia_smi.txt" 2>&1
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$out/nvidia_smi.txt"
timeout 180 python3 benchmarks/bench_gpu.py --frames "$frames" --out "$out/gpu.json" 2>&1 | tee "$out/bench_gpu.log"
for seed in 0 1; do
  for amp in false gpu; do
    left=$((budget - (SECONDS - start)))
    if [ "$left" -lt 90 ]; then echo "skip demo seed $seed amp $amp: ${left}s left"; continue; fi
    name=demo-gpu-s$seed-$amp
    t0=$SECONDS
    timeout $((left - 10)) python3 -m alod demo --no-progress --set run.name=$name --set run.seed=$seed \
      --set train.amp=$amp --set score.amp=$amp > "runs_$name.log" 2>&1
    echo "demo seed $seed amp $amp: rc $? in $((SECONDS - t0)) s" | tee -a "$out/demo_gpu.txt"
    tail -8 "runs_$name.log" >> "$out/demo_gpu.txt"
    python3 benchmarks/_demo_record.py "$name" "$((SECONDS - t0))" "$out/demo_gpu.jsonl"
  done
done
echo "total $((SECONDS - start)) s"
