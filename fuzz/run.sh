#!/usr/bin/env bash
# Fuzzes each target in turn for FUZZ_SECONDS (default 600) on one core, at nice 19, or only the target
# named by $1: `bash fuzz/run.sh`, `FUZZ_SECONDS=60 bash fuzz/run.sh gguf`. (A number as $1 is taken as
# the seconds, as the single-target script took them.) Needs the binaries of fuzz/build.sh.
#
# Each target keeps its corpus in fuzz/corpus/<target> (seeded from the committed fixtures on every run,
# small files only), writes crashes and its log (run.log) to fuzz/artifacts/<target>/, and uses
# fuzz/<target>.dict when there is one. The exit status is non-zero when any target found a crash.
# FUZZ_KEEP_GOING=1 keeps fuzzing after a crash (libFuzzer -fork=1 -ignore_crashes: one worker process
# at a time, each distinct crash saved once), for long runs that should not stop at a known bug.
set -uo pipefail
# Swift's own crash backtracer reads the crashed stack in a way ASan reports as a second error; let
# libFuzzer print the trace instead.
export SWIFT_BACKTRACE=enable=no
cd "$(dirname "$0")/.."
targets=(safetensors gguf hdf5 compressed tokenizer config)
seconds=${FUZZ_SECONDS:-600}
want=all
if [[ ${1:-} =~ ^[0-9]+$ ]]; then seconds=$1; elif [[ -n ${1:-} ]]; then want=$1; fi
if [[ $want != all && ! " ${targets[*]} " =~ " $want " ]]; then
  echo "unknown target '$want' (one of: ${targets[*]})" >&2
  exit 64
fi

# Copies fixture files into a corpus under names that keep their origin (never overwriting).
seed() {
  local corpus=$1 limit=$2
  shift 2
  local f
  for f in "$@"; do
    [[ -f $f ]] || continue
    [[ $(stat -c %s "$f") -le $limit ]] || continue
    local name=${f#fixtures/}
    name=${name#fuzz/seeds/}
    cp -n "$f" "$corpus/seed-${name//\//-}"
  done
}

# Per target: the seeds, and the longest input libFuzzer makes.
prepare() {
  local t=$1 corpus=fuzz/corpus/$1
  case $t in
  safetensors)
    seed "$corpus" 65535 $(find fixtures -name '*.safetensors')
    max_len=8192 ;;
  gguf)
    # fixtures/gguf/tiny-llama.q8_0.gguf (152 KB) fuzzes 30x slower than fuzz/seeds/gguf/llama-small.gguf,
    # which has the same kinds of metadata and tensors.
    seed "$corpus" 65535 $(find fixtures/gguf -name '*.gguf')
    max_len=65536 ;;
  hdf5)
    seed "$corpus" 65535 $(find fixtures/hdf5 -name '*.h5')
    max_len=65536 ;;
  compressed)
    # A selector byte (0: no config.json, 1: sparse-bitmask, 2: sparse-24-bitmask), then the model.
    local d sel
    for d in fixtures/sparse/*/; do
      [[ -f $d/model.safetensors && $(stat -c %s "$d/model.safetensors") -le 65535 ]] || continue
      sel=0
      grep -q '"sparse-24-bitmask"' "$d/config.json" 2>/dev/null && sel=2
      grep -q '"sparse-bitmask"' "$d/config.json" 2>/dev/null && sel=1
      local out="$corpus/seed-sparse-$(basename "$d")"
      [[ -f $out ]] || { printf "\\x0$sel" | cat - "$d/model.safetensors" >"$out"; }
    done
    ESPALIER_FUZZ_WRITE_SEEDS=$corpus fuzz/bin/fuzz-compressed >/dev/null 2>&1 ||
      echo "warning: could not write the espalier-layout seeds" >&2
    max_len=32768 ;;
  tokenizer)
    seed "$corpus" 262143 $(find fixtures -name 'tokenizer.json')
    max_len=32768 ;;
  config)
    seed "$corpus" 16383 $(find fixtures -name 'config.json' -o -name '*_config.json' -o -name 'espalier.json')
    max_len=8192 ;;
  esac
  seed "$corpus" 1048576 $(find "fuzz/seeds/$t" -type f 2>/dev/null)
}

failed=()
for t in "${targets[@]}"; do
  [[ $want == all || $want == "$t" ]] || continue
  bin=fuzz/bin/fuzz-$t
  if [[ ! -x $bin ]]; then
    echo "$bin is missing: run bash fuzz/build.sh $t" >&2
    failed+=("$t (not built)")
    continue
  fi
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  prepare "$t"
  dict=()
  [[ -f fuzz/$t.dict ]] && dict=(-dict="fuzz/$t.dict")
  mode=()
  [[ ${FUZZ_KEEP_GOING:-0} == 1 ]] && mode=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
  # libhdf5 keeps free lists and error stacks across calls: in-loop leak reports that never reproduce
  # on replay (65 in the first 600 s run), so the hdf5 target does not check for leaks.
  # The hdf5 target reads each input first in a child with the crash guard on, as the tools do (a fault
  # inside libhdf5 ends it with exit 2, contained), then, when the child finished cleanly, in its own
  # process with the guard off, so that libFuzzer's SIGALRM timeouts keep working. The child's
  # watchdog takes 2 s per step (6 s for a 64 MiB read), so the timeout is longer; a huge allocation fails (returns NULL) as
  # it does outside the sanitizer, and libhdf5's error-path leaks are not reported at exit either.
  timeout=10
  asan=${ASAN_OPTIONS:-}
  if [[ $t == hdf5 ]]; then
    mode+=(-detect_leaks=0)
    timeout=20
    asan="allocator_may_return_null=1:detect_leaks=0${asan:+:$asan}"
  fi
  export ESPALIER_HDF5_GUARD=off
  # The child's watchdog: 2 s per libhdf5 step instead of 10 (an input that loops costs the fuzzer 2 s).
  export ESPALIER_HDF5_WATCH_SECONDS=2
  echo "== fuzzing $t for $seconds s (corpus fuzz/corpus/$t, log fuzz/artifacts/$t/run.log)"
  marker=$(mktemp)
  ASAN_OPTIONS=$asan nice -n 19 "$bin" "fuzz/corpus/$t" "${dict[@]}" "${mode[@]}" -max_total_time="$seconds" -max_len="$max_len" \
    -timeout="$timeout" -rss_limit_mb=2048 -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 \
    >"fuzz/artifacts/$t/run.log" 2>&1
  status=$?
  found=$(find "fuzz/artifacts/$t" -newer "$marker" \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | wc -l)
  rm -f "$marker"
  [[ $found -gt 0 && $status -eq 0 ]] && status=1
  rm -rf /dev/shm/espalier-fuzz-"$t"-* /tmp/espalier-fuzz-"$t"-* 2>/dev/null
  if [[ ${FUZZ_KEEP_GOING:-0} == 1 ]]; then
    execs=$(grep -oE '^#[0-9]+: cov' "fuzz/artifacts/$t/run.log" | tail -1 | tr -dc 0-9)
  else
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "fuzz/artifacts/$t/run.log" | tail -1)
  fi
  cov=$(grep -o 'cov: [0-9]*' "fuzz/artifacts/$t/run.log" | tail -1)
  units=$(find "fuzz/corpus/$t" -type f | wc -l)
  if [[ $status -ne 0 ]]; then
    failed+=("$t")
    echo "   $t: FAILED (exit $status, $found new artifacts), ${execs:-?} executions, $units corpus units, $cov"
    grep -m1 -E 'ERROR: |Fatal error|SUMMARY' "fuzz/artifacts/$t/run.log" | sed 's/^/   /'
    grep -m1 'Test unit written to' "fuzz/artifacts/$t/run.log" | sed 's/^/   /'
  else
    echo "   $t: ok, ${execs:-?} executions, $units corpus units, $cov"
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzzing found problems in: ${failed[*]}" >&2
  exit 1
fi
