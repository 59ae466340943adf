#!/usr/bin/env bash
# `alod demo` with configs/demo.yaml as it is, on a lent GPU machine: fp32, then bf16 autocast
# (train.amp/score.amp = gpu) while time is left. Each run's wall seconds, scorer and per-cycle
# mAP50 go to OUT_DIR/demo_gpu.jsonl (benchmarks/_demo_record.py), its log tail to demo_gpu.txt.
# Usage: benchmarks/run_gpu_demo.sh OUT_DIR [SECONDS_BUDGET]
set -uo pipefail
out=${1:?out dir}; budget=${2:-240}
start=$SECONDS
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia_smi.txt" 2>&1
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$out/nvidia_smi.txt"
git log -1 --format=%H > "$out/commit.txt" 2>/dev/null || true
for amp in false gpu; do
  left=$((budget - (SECONDS - start)))
  if [ "$left" -lt 60 ]; then echo "skip demo amp $amp: ${left}s left" | tee -a "$out/demo_gpu.txt"; continue; fi
  name=demo-gpu-$amp
  t0=$SECONDS
  timeout $((left - 5)) python3 -m alod demo --no-progress --set run.name=$name \
    --set train.amp=$amp --set score.amp=$amp > "runs_$name.log" 2>&1
  echo "demo amp $amp: rc $? in $((SECONDS - t0)) s" | tee -a "$out/demo_gpu.txt"
  tail -8 "runs_$name.log" >> "$out/demo_gpu.txt"
  python3 benchmarks/_demo_record.py "$name" "$((SECONDS - t0))" "$out/demo_gpu.jsonl"
done
echo "total $((SECONDS - start)) s" | tee -a "$out/demo_gpu.txt"
