#!/usr/bin/env bash
# Why LoSA does or does not beat Wanda + LoRS (issue 15): the settings of bench/losa.sh at one sparsity
# (default 0.7), changing one factor at a time:
#   losa with --alpha 64     LoSA's adapters at LoRS' scale (s = 64/16 = 4 = 16/sqrt(16))
#   wanda+lors --init random LoRS without its gradient-SVD init
# Compare with bench/losa.sh's rows. Usage: bench/losa-diagnose.sh [STEPS] [SPARSITY]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.build/release steps=${1:-60} S=${2:-0.7}
out=bench/out/losa-diagnose
source bench/losa-setup.sh
train=(--data $docs/tutorial --steps "$steps" --batch-size 2 --grad-accum 1 --seq-len 256 --lr 2e-4 --seed 0 --save-every 0 --overwrite)
$bin/espalier-finetune models/smollm2-135m --output "$out/losa" --method losa --sparsity "$S" --calibration "$out/calibration.txt" \
  --calibration-samples 32 --similarity-samples 16 --alpha 64 "${train[@]}" >/dev/null 2>&1
$bin/espalier-merge "$out/losa/base" "$out/losa" "$out/merged" --overwrite >/dev/null 2>&1
echo "S=$S losa --alpha 64 (s = 4): perplexity $(ppl "$out/merged")"
$bin/espalier-prune models/smollm2-135m "$out/wanda" --method wanda --sparsity "$S" --calibration "$out/calibration.txt" \
  --nsamples 32 --seq-len 256 --overwrite >/dev/null 2>&1
$bin/espalier-finetune "$out/wanda" --output "$out/lors" --method lors --init random "${train[@]}" >/dev/null 2>&1
$bin/espalier-merge "$out/wanda" "$out/lors" "$out/merged" --overwrite >/dev/null 2>&1
echo "S=$S wanda+lors --init random: perplexity $(ppl "$out/merged")"
