#!/usr/bin/env bash
# Builds the libFuzzer targets into fuzz/bin/fuzz-<target>, with coverage instrumentation and
# AddressSanitizer. `bash fuzz/build.sh` builds all of them; `bash fuzz/build.sh gguf` builds one.
#
#   safetensors gguf hdf5 compressed tokenizer config
#                fuzz/<Name>Fuzz.swift + fuzz/FuzzSupport.swift, linked against the whole Formats module,
#                compiled once (instrumented, -enable-testing) into fuzz/bin/lib and rebuilt when a file
#                under Sources/Formats or its system-library modules is newer
#
# Every compilation takes /tmp/espalier-swift.lock, so it never runs beside another Swift build.
# FUZZ_BIN=<dir> builds into another directory (default fuzz/bin), e.g. beside binaries still fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=(safetensors gguf hdf5 compressed tokenizer config)
want=${1:-all}
if [[ $want != all && ! " ${targets[*]} " =~ " $want " ]]; then
  echo "unknown target '$want' (one of: ${targets[*]})" >&2
  exit 64
fi
bin=${FUZZ_BIN:-fuzz/bin}
mkdir -p "$bin/lib"
lock=/tmp/espalier-swift.lock
quiet() { { grep -v "Cannot export local symbol" || true; }; }
hdf5_cflags=$(pkg-config --cflags hdf5-serial)
hdf5_libs=$(pkg-config --libs hdf5-serial)
zstd_libs=$(pkg-config --libs libzstd 2>/dev/null || echo -lzstd)
# The system-library modules Formats imports (CZlib: HDF5 chunk decoding), when this checkout has them.
c_modules=()
for m in CHDF5 CZstd CZlib; do [[ -d Sources/$m ]] && c_modules+=("Sources/$m"); done
clang_includes=()
for m in "${c_modules[@]}"; do clang_includes+=(-I "$m"); done
other_libs=()
[[ -d Sources/CZlib ]] && other_libs+=(-lz)
for f in $hdf5_cflags; do clang_includes+=(-Xcc "$f"); done

# The Formats module, instrumented, as one object file and its .swiftmodule.
build_formats() {
  local lib=$bin/lib/Formats.o
  if [[ -f $lib && -f $bin/lib/Formats.swiftmodule ]] &&
    [[ -z $(find Sources/Formats "${c_modules[@]}" -newer "$lib" -type f -print -quit) ]]; then
    return
  fi
  echo "building the instrumented Formats module ($bin/lib)"
  mapfile -t sources < <(find Sources/Formats -name '*.swift' | sort)
  flock "$lock" swiftc -swift-version 6 -O -wmo -parse-as-library -sanitize=fuzzer,address -enable-testing \
    -module-name Formats "${clang_includes[@]}" \
    -emit-module -emit-module-path $bin/lib/Formats.swiftmodule \
    -c "${sources[@]}" -o "$lib.tmp" 2>&1 | quiet
  mv "$lib.tmp" "$lib"
}

build_target() {
  local name=$1 file=$2
  build_formats
  flock "$lock" swiftc -swift-version 6 -O -parse-as-library -sanitize=fuzzer,address \
    -module-name "${file%.swift}" -I $bin/lib "${clang_includes[@]}" \
    "fuzz/$file" fuzz/FuzzSupport.swift $bin/lib/Formats.o $hdf5_libs $zstd_libs "${other_libs[@]}" \
    -o "$bin/fuzz-$name" 2>&1 | quiet
  [[ -x $bin/fuzz-$name ]] || { echo "$bin/fuzz-$name was not built" >&2; exit 1; }
  echo "built $bin/fuzz-$name"
}

for t in "${targets[@]}"; do
  [[ $want == all || $want == "$t" ]] || continue
  case $t in
  safetensors) build_target safetensors SafetensorsFuzz.swift ;;
  gguf) build_target gguf GGUFFuzz.swift ;;
  hdf5) build_target hdf5 HDF5Fuzz.swift ;;
  compressed) build_target compressed CompressedFuzz.swift ;;
  tokenizer) build_target tokenizer TokenizerFuzz.swift ;;
  config) build_target config ConfigFuzz.swift ;;
  esac
done
