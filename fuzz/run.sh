#!/usr/bin/env bash
# Fuzzes the safetensors reader for $1 seconds (default 600) on one core. The corpus starts from every
# committed .safetensors fixture; crashes land in fuzz/artifacts/ (a non-zero exit means one was found).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
mkdir -p fuzz/corpus fuzz/artifacts
find fixtures -name '*.safetensors' -size -64k -exec cp {} fuzz/corpus/ \;
exec fuzz/bin/fuzz-safetensors fuzz/corpus \
  -dict=fuzz/safetensors.dict -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix=fuzz/artifacts/ -print_final_stats=1
