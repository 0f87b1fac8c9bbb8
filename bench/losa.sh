#!/usr/bin/env bash
# LoSA against prune-then-tune (issue 15): SmolLM2-135M at 50% and 70% unstructured, the same training
# budget for every method (STEPS optimizer steps of 2 x 256 tokens of the Python tutorial, lr 2e-4, seed 0),
# the same calibration text and count (32 windows of 256 tokens from library/functions + stdtypes):
#   wanda+lors   espalier prune --method wanda, then espalier finetune --method lors (its defaults: gradient
#                init, rsLoRA scale), merged
#   wanda+sqft   the same pruned model, --method sqft (random init, s = alpha/r)
#   losa         espalier finetune --method losa from the dense model (5 iterations, Wanda, r_max 16,
#                alpha 32: s = 2 as the reference), merged into OUT/base
# Held-out perplexity on reference/datamodel + reference/expressions at 512; wall time and peak RSS of
# each process (prune + finetune for the two-step methods). Usage: bench/losa.sh [STEPS] [SPARSITIES]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.build/release steps=${1:-150} sparsities=${2:-"0.5 0.7"}
out=bench/out/losa
source bench/losa-setup.sh
# "exit 0, 12.3 s, peak RSS 456.7 MB" -> "12.3 456.7"
measure() { $bin/espalier-bench rss "$@" 2>/dev/null | sed -E 's/.*exit ([0-9]+), ([0-9.]+) s, peak RSS ([0-9.]+) MB.*/\2 \3/' | tail -1; }
train=(--data $docs/tutorial --steps "$steps" --batch-size 2 --grad-accum 1 --seq-len 256 --lr 2e-4 --seed 0 --save-every 0 --overwrite)
echo "losa bench: SmolLM2-135M, $steps steps of 2 x 256, $(nproc) cores, $(date -u +%Y-%m-%d)"
[ -n "${SKIP_DENSE:-}" ] || echo "dense perplexity $(ppl models/smollm2-135m)"
for S in $sparsities; do
  read -r pt pr < <(measure $bin/espalier-prune models/smollm2-135m "$out/wanda" --method wanda --sparsity "$S" \
    --calibration "$out/calibration.txt" --nsamples 32 --seq-len 256 --overwrite)
  echo "S=$S wanda: ${pt} s, peak ${pr} MB, perplexity $(ppl "$out/wanda")"
  for method in lors sqft; do
    read -r ft fr < <(measure $bin/espalier-finetune "$out/wanda" --output "$out/$method" --method $method "${train[@]}")
    $bin/espalier-merge "$out/wanda" "$out/$method" "$out/merged" --overwrite >/dev/null 2>&1
    $bin/espalier-verify "$out/merged" --base "$out/wanda" >/dev/null 2>&1 || echo "S=$S wanda+$method: VERIFY FAILED"
    echo "S=$S wanda+$method: $(awk -v a="$pt" -v b="$ft" 'BEGIN { printf "%.1f", a + b }') s (tune ${ft}), peak $(awk -v a="$pr" -v b="$fr" 'BEGIN { print (a > b ? a : b) }') MB, perplexity $(ppl "$out/merged")"
  done
  read -r lt lr < <(measure $bin/espalier-finetune models/smollm2-135m --output "$out/losa" --method losa --sparsity "$S" \
    --calibration "$out/calibration.txt" --calibration-samples 32 --similarity-samples 16 --alpha 32 "${train[@]}")
  $bin/espalier-merge "$out/losa/base" "$out/losa" "$out/merged" --overwrite >/dev/null 2>&1
  $bin/espalier-verify "$out/merged" --base "$out/losa/base" >/dev/null 2>&1 || echo "S=$S losa: VERIFY FAILED"
  plan=$($bin/espalier-finetune models/smollm2-135m --output "$out/plan" --method losa --sparsity "$S" --calibration-samples 32 \
    --alpha 32 "${train[@]}" --plan-only --json 2>/dev/null | grep -o '"total_bytes": *[0-9]*' | grep -o '[0-9]*$')
  zeros() { grep -o '"zeros": *[0-9]*' "$1/sparsity.json" | tail -1 | grep -o '[0-9]*$'; }
  echo "S=$S losa: ${lt} s, peak ${lr} MB (plan $((plan / 1000000)) MB), perplexity $(ppl "$out/merged"); zeros $(zeros "$out/losa/base"), uniform Wanda's $(zeros "$out/wanda")"
  python3 -c "import json; d = json.load(open('$out/losa/losa.json')); print('\n'.join('  round %d: target %.4f sparsity %.4f rates %.3f-%.3f ranks %d-%d recon %.3f-%.3f' % (i['iteration'], i['target_sparsity'], i['sparsity'], min(i['rates']), max(i['rates']), min(i['ranks']), max(i['ranks']), min(i['reconstruction_loss']), max(i['reconstruction_loss'])) for i in d['per_iteration']))"
  [ -z "${LOSA_KEEP:-}" ] || cp "$out/losa/losa.json" "$LOSA_KEEP/losa-$S.json"
done
