#!/usr/bin/env bash
# The second GPU call of the cost issue (after run_gpu_checks.sh), on a lent GPU machine:
#   1. bench_gpu.py at batch 16 per device (the first call measured 4 and 8),
#   2. bench_loader.py with configs/bdd100k.yaml's 8 workers (persistent vs fresh DataLoader workers),
#   3. `alod demo` with the release's demo defaults, fp32 against bf16 autocast, seed 0.
# Usage: benchmarks/run_gpu_followup.sh OUT_DIR FRAMES_DIR [SECONDS_BUDGET]
set -uo pipefail
out=${1:?out dir}; frames=${2:?BDD100K frames folder}; budget=${3:-240}
start=$SECONDS
export PYTHONUNBUFFERED=1
timeout 90 python3 benchmarks/bench_gpu.py --frames "$frames" --batches 16 --repeats 6 --out "$out/gpu_b16.json" 2>&1 | tee "$out/followup.log"
timeout 60 python3 benchmarks/bench_loader.py --frames "$frames" --workers 8 --epochs 4 --out "$out/loader_gpu_machine.json" 2>&1 | tee -a "$out/followup.log"
for amp in false gpu; do
  left=$((budget - (SECONDS - start)))
  if [ "$left" -lt 60 ]; then echo "skip demo amp $amp: ${left}s left" | tee -a "$out/followup.log"; continue; fi
  name=demo-gpu-new-$amp
  t0=$SECONDS
  timeout $((left - 5)) python3 -m alod demo --no-progress --set run.name=$name --set train.amp=$amp --set score.amp=$amp > "runs_$name.log" 2>&1
  echo "demo amp $amp: rc $? in $((SECONDS - t0)) s" | tee -a "$out/followup.log"
  tail -8 "runs_$name.log" >> "$out/followup.log"
done
echo "total $((SECONDS - start)) s" | tee -a "$out/followup.log"
