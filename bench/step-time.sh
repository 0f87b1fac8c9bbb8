#!/usr/bin/env bash
# LoRS step time of espalier-finetune runs (median of steps 2..N from train_log.jsonl) and the run's peak
# RSS, for A/B comparisons of binaries and memory plans:
#   bench/step-time.sh BIN MODEL TEXT STEPS [extra finetune flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1 model=$2 text=$3 steps=$4
shift 4
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
rss=$(.build/release/espalier-bench rss "$bin" "$model" --data "$text" --output "$out/run" --steps "$steps" \
  --batch-size 4 --grad-accum 1 --seq-len 256 --rank 16 --init random --save-every 0 "$@" 2>/dev/null | tail -n 1 | sed 's/.*peak RSS //')
median=$(python3 -c "
import json, statistics, sys
rows = [json.loads(l) for l in open('$out/run/train_log.jsonl')]
print('%.3f' % statistics.median(r['seconds'] for r in rows[1:]))")
echo "step-time: $bin $* : median step $median s, peak RSS $rss"
