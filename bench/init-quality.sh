#!/usr/bin/env bash
# Gradient init quality (issue 14): the one-pass sketch (--init gradient) against the exact SVD of dense
# gradients (--init gradient-exact) on PRUNED: 150 LoRS steps of 2 x 256 on the Python tutorial, merged,
# held-out perplexity on reference/datamodel + reference/expressions at 512. SEEDS: data order and sketch
# signs (default "0"; more seeds show the run-to-run noise).
#   bench/init-quality.sh PRUNED [SEEDS]        e.g. bench/init-quality.sh models/demo-2of4 "0 1"
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.build/release pruned=$1 seeds=${2:-0}
docs=/usr/share/doc/python3.11/html/_sources
out=bench/out/init-quality
rm -rf "$out" && mkdir -p "$out"
trap 'rm -rf "$out"' EXIT
cat $docs/reference/datamodel.rst.txt $docs/reference/expressions.rst.txt > "$out/heldout.txt"
ppl() { $bin/espalier-eval "$1" --text "$out/heldout.txt" --seq-len 512 --json 2>/dev/null | grep -o '"perplexity": *[0-9.]*' | grep -o '[0-9.]*$'; }
echo "init-quality: pruned perplexity $(ppl "$pruned")"
for seed in $seeds; do
  for init in gradient gradient-exact; do
    $bin/espalier-finetune "$pruned" --data $docs/tutorial --output "$out/tuned" --overwrite --steps 150 --batch-size 2 \
      --grad-accum 1 --seq-len 256 --lr 2e-4 --init-samples 32 --init $init --seed $seed --save-every 0 2>/dev/null > "$out/log"
    $bin/espalier-merge "$pruned" "$out/tuned" "$out/merged" --overwrite >/dev/null 2>&1
    echo "init-quality: --init $init --seed $seed: $(grep 'final loss' "$out/log"), held-out perplexity $(ppl "$out/merged")"
  done
done
