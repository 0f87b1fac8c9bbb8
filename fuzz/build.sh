#!/usr/bin/env bash
# Builds fuzz/bin/fuzz-safetensors: the safetensors reader's sources plus the libFuzzer entry point,
# compiled as one module with coverage instrumentation and AddressSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p fuzz/bin
sources=(DType DTypeConversion FormatError JSON MappedFile Tensor Safetensors/Safetensors Safetensors/SafetensorsWriter Safetensors/Shards AtomicFile)
swiftc -swift-version 6 -O -parse-as-library -sanitize=fuzzer,address \
  -module-name SafetensorsFuzz \
  $(for s in "${sources[@]}"; do echo "Sources/Formats/$s.swift"; done) \
  fuzz/SafetensorsFuzz.swift -o fuzz/bin/fuzz-safetensors 2>&1 | { grep -v "Cannot export local symbol" || true; }
echo "built fuzz/bin/fuzz-safetensors"
