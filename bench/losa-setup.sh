# Shared by bench/losa.sh and bench/losa-diagnose.sh (sourced, with $out set): a fresh output folder,
# the SmolLM2 checkpoint, the calibration and held-out texts from the Python docs, and ppl MODEL, the
# held-out perplexity at 512 tokens.
docs=/usr/share/doc/python3.11/html/_sources
rm -rf "$out" && mkdir -p "$out"
trap 'rm -rf "$out"' EXIT
make -s smollm2
cat $docs/library/functions.rst.txt $docs/library/stdtypes.rst.txt > "$out/calibration.txt"
cat $docs/reference/datamodel.rst.txt $docs/reference/expressions.rst.txt > "$out/heldout.txt"
ppl() { $bin/espalier-eval "$1" --text "$out/heldout.txt" --seq-len 512 --json 2>/dev/null | grep -o '"perplexity": *[0-9.]*' | grep -o '[0-9.]*$'; }
