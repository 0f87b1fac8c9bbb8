#!/usr/bin/env python3
"""Rewrites bench/RESULTS.md from the output of bench/run.sh (standard library only).

usage: write_results.py LOG_DIR MACHINE DATE COMMIT
LOG_DIR holds SECTION.txt (what the section printed) and SECTION.seconds for each section that ran. Each
section of RESULTS.md lies between `<!-- section: NAME -->` and `<!-- end: NAME -->`; the sections that
ran are replaced, the others keep their text. A section's figures are its output verbatim, plus a table
where one reads better (the methods table).
"""
import os
import re
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")

SECTIONS = [
    ("foundation", "Foundation: BF16 → F32 conversion against memcpy; inspect's memory on 8.6 GB (issue 2)"),
    ("conversion", "Conversion: the SmolLM2 GGUF to F32 safetensors and HDF5 (issue 3)"),
    ("engine", "Engine: forward and backward of SmolLM2-135M against sgemm (issue 4)"),
    ("pruning", "Pruning: Wanda and SparseGPT on SmolLM2-135M, held-out perplexity (issue 5)"),
    ("finetune", "Fine-tuning: one step of each method against LoRA (issue 6)"),
    ("sparse", "Compressed sparse checkpoints and verify (issue 7)"),
    ("memory", "Models larger than memory: resident against --max-memory 700MB (issue 14)"),
    ("init-quality", "The sketched gradient init against the exact one (issue 14)"),
    ("scale", "Random-weight checkpoints with real shapes through the pipeline (issue 14)"),
    ("losa", "LoSA against prune-then-tune (issue 15)"),
    ("methods", "The seed papers' table: LoRA, LoRS, SQFT, SPP at their default recipes (issue 17)"),
    ("generate", "Decoding with the KV cache (issue 17)"),
    ("quality", "The quality bar: 150 LoRS steps, the whole command against PyTorch's 150 LoRA steps (issue 17)"),
    ("gguf", "GGUF out: SmolLM2 2:4 perplexity from the HF checkpoint and from each GGUF type (issue 18)"),
    ("owl", "OWL: uniform Wanda against OWL's layerwise sparsity on SmolLM2 at 60% and 70% (issue 18)"),
    ("mpi", "Past one machine: SmolLM2 under mpirun, 1 rank x 2 threads against 2 ranks x 1 thread, and the projection to 64 nodes (issue 19)"),
]

HEADER = """# Benchmark results

Written by `make bench` (`bench/run.sh`, then `bench/write_results.py`); do not edit by hand. Each section
holds the figures of its latest run: the machine, the date, the commit, and the command that reruns it.
`make bench` runs every section (about 4 hours on 2 cores); `make bench BENCH="methods generate"` runs
only those and keeps the others. Every figure is a ratio or a bound measured in its own run. The analyses
of earlier runs, which explain why a figure is what it is, are in `bench/NOTES.md`.
"""


def methods_table(text):
    rows = []
    for line in text.splitlines():
        m = re.match(r"method (.+?): wall ([\d.]+) s \(init and set-up ([\d.]+) s\), median step ([\d.]+) s, "
                     r"peak RSS ([\d.]+) MB, final loss ([\d.]+), held-out perplexity ([\d.]+)"
                     r"(?:, step / PyTorch LoRA step ([\d.]+))?(?:, wall / \d+ PyTorch LoRA steps ([\d.]+))?", line)
        if m:
            rows.append(m.groups())
    if not rows:
        return ""
    lora = next((r for r in rows if r[0] == "lora"), None)
    out = ["| method | median step | step / LoRA step | step / PyTorch LoRA step | init and set-up | wall | wall / the steps in PyTorch | peak RSS | final loss | held-out perplexity |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for method, wall, init, step, rss, loss, ppl, torch, whole in rows:
        ratio = f"{float(step) / float(lora[3]):.3f}" if lora else "—"
        no_torch = "— (no torch)"
        out.append(f"| {method} | {step} s | {ratio} | {torch or no_torch} | {init} s | {wall} s | {whole or no_torch} | {rss} MB | {loss} | {ppl} |")
    return "\n".join(out) + "\n\n"


def section(name, title, logs, machine, date, commit):
    text = open(os.path.join(logs, name + ".txt")).read().rstrip()
    seconds = open(os.path.join(logs, name + ".seconds")).read().strip()
    body = f"## {title}\n\n"
    body += f"Ran {date} on {machine}, commit {commit}, in {seconds} s. Rerun: `make bench BENCH={name}`.\n\n"
    if name in ("methods", "quality"):
        body += methods_table(text)
    if name == "mpi":
        body += mpi_projection(text)
        text = "\n".join(l for l in text.splitlines() if not l.startswith("|"))
    body += "```text\n" + text + "\n```\n"
    return body


MPI_FORMULA = """Projected steps/s on N nodes of this machine's kind, each run as 2 ranks × 1 thread (bench/mpi_projection.py):
LoRS step, global batch G = 64 sequences of 256: `t = f + ⌈G/N⌉·q + t_ar(S, N)`; Wanda block, 128 windows of 512 in
batches of 4: `t = s/L + 4·⌈32/N⌉·p/L + Σ_7 statistics t_ar(S_i, N)`; all-reduce (our rank-order chain in 256 KiB
chunks c, then MPI_Bcast): `t_ar(S, N) = 2S/B + (N − 1 + ⌈log₂N⌉)·(α + min(S, c)/B)`, with B = 1.25 GB/s, α = 25 µs
(10 Gbit/s Ethernet) or B = 12.5 GB/s, α = 3 µs (100 Gbit/s). f, q, s and p are fitted from the runs below
(two batch sizes, two window counts); the 8B shape scales q and p by the FLOPs per token, f by the adapter size
and s by the weight bytes (the inputs line below gives each).

"""


def mpi_projection(text):
    rows = [l for l in text.splitlines() if l.startswith("|")]
    return MPI_FORMULA + "\n".join(rows) + "\n\n" if rows else ""


def main():
    logs, machine, date, commit = sys.argv[1:5]
    old = open(RESULTS).read() if os.path.exists(RESULTS) else ""
    parts = [HEADER]
    for name, title in SECTIONS:
        if os.path.exists(os.path.join(logs, name + ".txt")):
            body = section(name, title, logs, machine, date, commit)
        else:
            m = re.search(rf"<!-- section: {re.escape(name)} -->\n(.*?)<!-- end: {re.escape(name)} -->", old, re.S)
            body = m.group(1) if m else f"## {title}\n\nNot run by `make bench` since RESULTS.md became generated; the last figures recorded by hand are in `bench/NOTES.md`.\n"
        parts.append(f"<!-- section: {name} -->\n{body}<!-- end: {name} -->\n")
    tmp = RESULTS + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(parts))
    os.replace(tmp, RESULTS)


if __name__ == "__main__":
    main()
