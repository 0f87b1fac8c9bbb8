#!/usr/bin/env bash
# The scale table (issue 14): a random-weight BF16 checkpoint with a real model's shapes
# (espalier-bench make-llama: llama-3.2-1b, llama-2-7b, llama-3-8b) through the whole pipeline: Wanda 2:4
# prune (8 windows of 512), eval (4 windows of 512), 2 LoRS steps of 1 × 256 with the gradient init,
# merge, verify, compress; the wall time and peak RSS of each from a fresh process.
#   bench/scale.sh SHAPE PRUNE_EVAL_BUDGET LORS_BUDGET      e.g. bench/scale.sh llama-3-8b 4GB 6GB
# Needs about 3.5x the checkpoint's size free under bench/out (removed afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.build/release shape=$1 budget=$2 tune=$3
out=bench/out/scale-$shape
docs=/usr/share/doc/python3.11/html/_sources
rm -rf "$out" && mkdir -p "$out"
trap 'rm -rf "$out"' EXIT
rss() { $bin/espalier-bench rss "$@" 2>/dev/null | tail -n 1 | sed "s|$out/||g; s|$bin/||g; s|$docs/||g"; }
$bin/espalier-bench make-llama "$shape" "$out/base" fixtures/tiny-llama/tokenizer.json
rss $bin/espalier-prune "$out/base" "$out/pruned" --method wanda --pattern 2:4 --calibration "$docs/library/functions.rst.txt" \
  --nsamples 8 --seq-len 512 --max-memory "$budget"
rm -rf "$out/base"
rss $bin/espalier-eval "$out/pruned" --text "$docs/tutorial/classes.rst.txt" --seq-len 512 --limit 4 --max-memory "$budget"
rss $bin/espalier-finetune "$out/pruned" --data "$docs/tutorial" --output "$out/lors" --steps 2 --batch-size 1 --grad-accum 1 \
  --seq-len 256 --init-samples 2 --save-every 0 --max-memory "$tune"
rss $bin/espalier-merge "$out/pruned" "$out/lors" "$out/merged"
rss $bin/espalier-verify "$out/merged" --base "$out/pruned" --adapter "$out/lors" --pattern 2:4 --sparsity 0.5
rm -rf "$out/lors"
rss $bin/espalier-convert "$out/merged" "$out/compressed" --compress
