#!/usr/bin/env bash
# timed.sh FILE COMMAND...: runs COMMAND and writes its wall time in seconds to FILE (only when it
# succeeds, so that a failed stage leaves no record behind). Used by the demo's Makefile rules.
set -uo pipefail
out=$1
shift
start=$EPOCHREALTIME
"$@"
status=$?
end=$EPOCHREALTIME
if [[ $status -eq 0 ]]; then
  # bash has no floating point: microseconds from the two timestamps, printed as seconds.
  us=$(( (${end%.*} - ${start%.*}) * 1000000 + 10#${end#*.} - 10#${start#*.} ))
  printf '%d.%06d\n' $((us / 1000000)) $((us % 1000000)) > "$out"
fi
exit $status
