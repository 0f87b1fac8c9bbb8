#!/usr/bin/env python3
"""PyTorch reference for the fine-tuning step benchmark: one training step of PEFT LoRA (or a minimal
LoRS) on a (pruned) Llama-family HF checkpoint, timed the way `espalier-bench finetune-step` times ours
(bench/run.sh, "Fine-tuning (issue 6)"), so the two figures can be read side by side.

    python3 bench/torch_step.py MODEL_DIR TEXT [--batch-size 4] [--seq-len 256] [--rank 16] [--steps 6]
        [--method lora|lors] [--threads N] [--attn eager|sdpa]

The setting matches espalier-bench's:
  - float32 on the CPU, torch.set_num_threads(--threads; default: the CPUs this process may use, as
    OpenBLAS defaults to), no gradient checkpointing, model.train();
  - adapters on all 7 projections (q, k, v, o, gate, up, down) of every layer, rank 16, alpha 16, no
    dropout; lora = PEFT LoRA (scale alpha / r); lors = LoRA whose merged update is masked by the base
    weight's non-zero pattern, y = x ((W + s B A) * M)^T with M = (W != 0), recomputed every forward and
    backpropagated through (scale alpha / sqrt(r), rsLoRA, as espalier's LoRS);
  - data: TEXT (a file, or a directory whose *.txt files are joined in sorted order by blank lines)
    tokenized by the checkpoint's tokenizer.json without special tokens, cut into non-overlapping windows
    of seq_len tokens; each step takes batch_size consecutive windows (cycling over the first 8 batches,
    as espalier-bench uses its first 8 * B windows); labels = inputs (transformers shifts them);
  - a step = forward + loss + backward + global-norm clip at 1.0 (espalier's default) + AdamW (lr 2e-4,
    no weight decay, as espalier's) + zero_grad.
Each step is timed with time.perf_counter; the figure is the median of steps 2..N (step 1 is warm-up;
espalier-bench reports the best of 3 after one warm-up, and the step list printed here gives the best
too). Peak RSS is the process's ru_maxrss (model load included, as in espalier-bench).

Attention: "eager" is the default, measured the faster here (SmolLM2-135M, 4 x 256, 2 threads, idle
machine: median step 9.2-9.6 s against 9.8-10.5 s for "sdpa"), though it peaks 1.5 GB higher in RSS
(5.9 GB against 4.3 GB); --attn sdpa selects the other. Run it on an otherwise idle machine: the line
reports the cores the process got, and under contention OpenMP's threads wait on each other (2 threads on
2 busy cores took ~6x their idle step). The one line on stdout:

    torch-step lora: B×T = 4×256, rank 16, 4884480 trainable, attn eager, threads 2, median step 9.207 s
    (steps: 11.115 10.063 9.062 8.337 9.816 9.207), 111.2 tokens/s, peak RSS 5873 MB, CPU 1.95 cores,
    torch 2.13.0+cpu, transformers 5.23.0, peft 0.21.2
"""

import argparse
import math
import os
import resource
import statistics
import sys
import time

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def read_text(path):
    """A file's text, or a directory's *.txt files in sorted order joined by blank lines."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.endswith(".txt"))
        return "\n\n".join(open(os.path.join(path, n), encoding="utf-8").read() for n in names)
    return open(path, encoding="utf-8").read()


def make_lors_linear(torch, base, rank, scale):
    """A frozen Linear whose effective weight is (W + scale * B A) masked by W's non-zero pattern."""

    class LoRSLinear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = base.weight  # frozen, shared with the loaded model (no copy)
            self.register_buffer("mask", base.weight != 0, persistent=False)
            out_features, in_features = base.weight.shape
            # PEFT's LoRA initialisation: A Kaiming-uniform, B zero.
            self.lora_A = torch.nn.Parameter(torch.empty(rank, in_features))
            self.lora_B = torch.nn.Parameter(torch.zeros(out_features, rank))
            torch.nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            self.scale = scale

        def forward(self, x):
            # The masked merged weight is rebuilt every forward; autograd carries the gradient through the
            # mask and the product to A and B.
            merged = (self.weight + self.scale * (self.lora_B @ self.lora_A)) * self.mask
            return torch.nn.functional.linear(x, merged)

    return LoRSLinear()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir")
    p.add_argument("text")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--method", choices=["lora", "lors"], default="lora")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--attn", choices=["eager", "sdpa"], default="eager")
    args = p.parse_args()
    if args.steps < 2:
        p.error("--steps must be at least 2 (the first step is warm-up)")

    try:
        import torch
        import transformers
        import peft
        from tokenizers import Tokenizer
    except ImportError:
        print("torch-step: skipped (torch, transformers or peft not importable)")
        return 0

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, T, r, alpha = args.batch_size, args.seq_len, args.rank, 16

    # Windows of T tokens; B consecutive windows per batch, over the first 8 batches.
    tokenizer = Tokenizer.from_file(os.path.join(args.model_dir, "tokenizer.json"))
    ids = tokenizer.encode(read_text(args.text), add_special_tokens=False).ids
    n_windows = min(len(ids) // T, 8 * B) // B * B
    if n_windows == 0:
        sys.exit(f"torch-step: the text has {len(ids)} tokens, fewer than one batch of {B} × {T}")
    windows = torch.tensor(ids[: n_windows * T], dtype=torch.long).view(-1, B, T)

    model = transformers.AutoModelForCausalLM.from_pretrained(
        args.model_dir, dtype=torch.float32, attn_implementation=args.attn)
    model.config.use_cache = False
    if args.method == "lora":
        config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=PROJECTIONS, bias="none")
        model = peft.get_peft_model(model, config)
    else:
        model.requires_grad_(False)
        for layer in model.model.layers:
            for block in (layer.self_attn, layer.mlp):
                for name in PROJECTIONS:
                    if hasattr(block, name):
                        setattr(block, name, make_lors_linear(torch, getattr(block, name), r, alpha / math.sqrt(r)))
    model.train()
    trainable = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-4, weight_decay=0.0)

    times, cpu = [], []  # wall seconds per step; the process's CPU seconds (all threads) per step
    for step in range(args.steps):
        batch = windows[step % len(windows)]
        t0, c0 = time.perf_counter(), time.process_time()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if not math.isfinite(loss.item()):
            sys.exit(f"torch-step: non-finite loss at step {step + 1}")

    median = statistics.median(times[1:])
    # Cores this process actually got over the timed steps: well below --threads means other processes
    # shared the CPUs, and the figure is not a clean one (with OpenMP, contention costs far more than the
    # lost share: 2 threads on 2 busy cores took ~6x their idle step here).
    cores = sum(cpu[1:]) / sum(times[1:])
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    print(f"torch-step {args.method}: B×T = {B}×{T}, rank {r}, {sum(q.numel() for q in trainable)} trainable, "
          f"attn {args.attn}, threads {args.threads}, median step {median:.3f} s "
          f"(steps: {' '.join(f'{t:.3f}' for t in times)}), {B * T / median:.1f} tokens/s, "
          f"peak RSS {rss_mb:.0f} MB, CPU {cores:.2f} cores, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"peft {peft.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
