#!/usr/bin/env bash
# The seed papers' table (issue 17): LoRA, LoRS, SQFT and SPP on the same pruned model and token budget,
# each at its default recipe (espalier finetune's defaults: MethodRecipe), rank 16, STEPS steps of 4 x 256
# tokens of the Python tutorial; wall time (init included), median step, peak RSS of each finetune process,
# held-out perplexity of the merged model (reference/datamodel + reference/expressions, 48 windows of 512).
# With torch, transformers and peft importable (PYTHON), the PyTorch + PEFT LoRA step on the same model
# and batch is measured in the same run (bench/torch_step.py) and each step is given as a ratio to it, and
# the whole finetune command (init included) as a ratio to STEPS of its steps.
# A method may name its gradient-init sample count: lors:16 runs lors with --init-samples 16.
#   bench/methods.sh PRUNED [STEPS] [METHODS]      e.g. bench/methods.sh bench/out/wanda50 150 "lors:128 lors:16"
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.build/release pruned=$1 steps=${2:-150} methods=${3:-"lora lors sqft spp"}
docs=/usr/share/doc/python3.11/html/_sources
out=bench/out/methods
rm -rf "$out" && mkdir -p "$out"
trap 'rm -rf "$out"' EXIT
cat $docs/reference/datamodel.rst.txt $docs/reference/expressions.rst.txt > "$out/heldout.txt"
ppl() { $bin/espalier-eval "$1" --text "$out/heldout.txt" --seq-len 512 --limit 48 --json 2>/dev/null | grep -o '"perplexity": *[0-9.]*' | grep -o '[0-9.]*$'; }
echo "methods: $pruned, $steps steps of 4 x 256, rank 16, each method at its default recipe; pruned perplexity $(ppl "$pruned")"
torch_step=""
if ${PYTHON:-python3} -c "import torch, transformers, peft" 2>/dev/null; then
  torch_step=$(${PYTHON:-python3} bench/torch_step.py "$pruned" "$docs/tutorial" --batch-size 4 --seq-len 256 --rank 16 --steps 6 2>/dev/null | tail -n 1)
  echo "$torch_step"
else
  echo "torch-step: skipped (torch, transformers or peft not importable by ${PYTHON:-python3})"
fi
torch_median=$(echo "$torch_step" | grep -o 'median step [0-9.]*' | grep -o '[0-9.]*$' || true)
for entry in $methods; do
  method=${entry%%:*} init_flags="" label=$entry
  [ "$method" = "$entry" ] || { init_flags="--init-samples ${entry#*:}"; label="$method (--init-samples ${entry#*:})"; }
  rss=$($bin/espalier-bench rss $bin/espalier-finetune "$pruned" --method $method --data $docs/tutorial --output "$out/$method" \
    --steps "$steps" --batch-size 4 --grad-accum 1 --seq-len 256 --rank 16 --save-every 0 --overwrite $init_flags 2>/dev/null | tail -n 1)
  wall=$(echo "$rss" | sed -E 's/.*exit [0-9]+, ([0-9.]+) s, peak RSS ([0-9.]+) MB.*/\1/')
  peak=$(echo "$rss" | sed -E 's/.*exit [0-9]+, ([0-9.]+) s, peak RSS ([0-9.]+) MB.*/\2/')
  read -r median init final < <(python3 -c "
import json, statistics
rows = [json.loads(l) for l in open('$out/$method/train_log.jsonl')]
print('%.3f %.1f %.4f' % (statistics.median(r['seconds'] for r in rows[1:]), rows[0]['elapsed'] - rows[0]['seconds'], rows[-1]['loss']))")
  $bin/espalier-merge "$pruned" "$out/$method" "$out/merged" --overwrite $([ $method = lora ] && echo --allow-densify) >/dev/null 2>&1
  ratio=""
  [ -n "$torch_median" ] && ratio=", step / PyTorch LoRA step $(awk -v a="$median" -v b="$torch_median" 'BEGIN { printf "%.3f", a / b }'), wall / $steps PyTorch LoRA steps $(awk -v a="$wall" -v b="$torch_median" -v n="$steps" 'BEGIN { printf "%.3f", a / (n * b) }')"
  echo "method $label: wall $wall s (init and set-up $init s), median step $median s, peak RSS $peak MB, final loss $final, held-out perplexity $(ppl "$out/merged")$ratio"
  rm -rf "$out/$method" "$out/merged"
done
