#!/usr/bin/env python3
"""Prints the demo's summary table from the files its Makefile rules wrote (standard library only).

usage: demo_summary.py DEMO_DIR DENSE_DIR
DEMO_DIR holds eval-{dense,pruned,tuned}.json, generate-{dense,pruned,tuned}.json (optional),
verify-{pruned,merged}.json, time-*.txt and the pruned/,
merged/ and compressed/ checkpoints; DENSE_DIR is the dense checkpoint.
"""
import json
import os
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def seconds(demo, stage):
    try:
        with open(os.path.join(demo, f"time-{stage}.txt")) as f:
            return float(f.read())
    except OSError:
        return None


def weights_bytes(directory):
    return sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory) if n.endswith(".safetensors"))


def megabytes(n):
    return f"{n / 1e6:.1f} MB"


def main():
    demo, dense = sys.argv[1], sys.argv[2]
    ppl = {m: load(os.path.join(demo, f"eval-{m}.json")) for m in ("dense", "pruned", "tuned")}
    before = load(os.path.join(demo, "verify-pruned.json"))
    after = load(os.path.join(demo, "verify-merged.json"))
    windows, tokens = ppl["dense"]["windows"], ppl["dense"]["tokens"]
    print()
    print(f"held-out perplexity ({windows} windows, {tokens} tokens of text no stage saw)")
    rows = [("dense SmolLM2-135M", "dense"), ("Wanda 2:4", "pruned"), ("Wanda 2:4 + LoRS, merged", "tuned")]
    for label, key in rows:
        print(f"  {label:<28} {ppl[key]['perplexity']:>9.2f}")

    def pattern(report):
        violations = sum(t.get("pattern_violations", 0) for t in report["tensors"])
        return "every group" if violations == 0 else f"{violations} groups break it"

    print()
    print("projection weights            sparsity   2:4")
    for label, report in (("before the merge (pruned)", before), ("after the merge", after)):
        print(f"  {label:<28} {100 * report['global_sparsity']:6.2f}%   {pattern(report)}")
    print(f"  verify against the base: {'PASS' if after['passed'] else 'FAIL'} "
          f"(zeros filled: {sum(t.get('zeros_filled', 0) or 0 for t in after['tensors'])})")

    print()
    print("size on disk")
    for label, directory in (("dense (f32)", dense), ("pruned (f32)", os.path.join(demo, "pruned")),
                             ("merged, compressed", os.path.join(demo, "compressed"))):
        print(f"  {label:<28} {megabytes(weights_bytes(directory)):>10}")

    answers = [(label, os.path.join(demo, f"generate-{key}.json")) for label, key in rows]
    if all(os.path.exists(path) for _, path in answers):
        prompt = load(answers[0][1])
        print()
        print(f"one greedy answer from each model (prompt: examples/demo_prompt.txt, {len(prompt['prompt_ids'])} tokens;"
              f" at most {prompt['max_tokens']} new tokens)")
        for label, path in answers:
            answer = load(path)
            text = " ".join(answer["text"].split())
            ending = "" if answer["stop"] == "eos" else " [...]"
            print(f"  {label:<28} {text}{ending}")

    print()
    print("time per stage")
    total = 0.0
    for stage in ("prune", "finetune", "merge", "verify", "compress", "eval", "generate"):
        if stage in ("eval", "generate"):
            parts = [seconds(demo, f"{stage}-{m}") for m in ("dense", "pruned", "tuned")]
            s = sum(p for p in parts if p is not None) if any(p is not None for p in parts) else None
        else:
            s = seconds(demo, stage)
        if s is None:
            continue
        total += s
        print(f"  {stage + (' (3 models)' if stage in ('eval', 'generate') else ''):<28} {s:>8.1f} s")
    print(f"  {'total (these stages)':<28} {total:>8.1f} s")
    if os.path.exists(os.path.join(demo, "report.html")):
        print()
        print(f"the run as a page (loss curve, per-layer sparsity and weight change): {os.path.join(demo, 'report.html')}")


if __name__ == "__main__":
    main()
