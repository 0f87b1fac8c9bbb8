#!/usr/bin/env python3
"""Writes fuzz/seeds/gguf/llama-small.gguf: a 3 KB GGUF v3 llama with every piece GGUFCheckpoint reads
(llama hyperparameters, a gpt2 BPE tokenizer with merges and a CONTROL token, Q/K weights to unpermute,
one tensor of each supported type: F32 F16 BF16 Q4_0 Q4_1 Q8_0 Q4_K Q6_K, a tensor HF does not store).
The committed fixtures hold a llama GGUF too, but it is 152 KB, which fuzzes 30 times slower."""
import os, random, struct

def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b

def kv(key, type_id, payload):
    return gstr(key) + struct.pack("<I", type_id) + payload

u32 = lambda v: struct.pack("<I", v)
f32 = lambda v: struct.pack("<f", v)
def str_array(items):
    return u32(8) + struct.pack("<Q", len(items)) + b"".join(gstr(s) for s in items)
def i32_array(items):
    return u32(5) + struct.pack("<Q", len(items)) + b"".join(struct.pack("<i", v) for v in items)

tokens = ["H", "e", "l", "o", "\u0120", "w", "r", "d", "He", "ll", "llo", "\u0120w", "<|endoftext|>", "!", ",", "I"]
kvs = [
    kv("general.architecture", 8, gstr("llama")),
    kv("general.alignment", 4, u32(32)),
    kv("llama.vocab_size", 4, u32(len(tokens))),
    kv("llama.context_length", 4, u32(64)),
    kv("llama.embedding_length", 4, u32(8)),
    kv("llama.feed_forward_length", 4, u32(16)),
    kv("llama.block_count", 4, u32(1)),
    kv("llama.attention.head_count", 4, u32(2)),
    kv("llama.attention.head_count_kv", 4, u32(1)),
    kv("llama.attention.layer_norm_rms_epsilon", 6, f32(1e-5)),
    kv("llama.rope.freq_base", 6, f32(10000.0)),
    kv("tokenizer.ggml.model", 8, gstr("gpt2")),
    kv("tokenizer.ggml.pre", 8, gstr("smollm")),
    kv("tokenizer.ggml.tokens", 9, str_array(tokens)),
    kv("tokenizer.ggml.token_type", 9, i32_array([1] * 12 + [3] + [1] * 3)),
    kv("tokenizer.ggml.merges", 9, str_array(["H e", "l l", "ll o", "\u0120 w"])),
    kv("tokenizer.ggml.bos_token_id", 4, u32(12)),
    kv("tokenizer.ggml.eos_token_id", 4, u32(12)),
    kv("tokenizer.ggml.add_bos_token", 7, b"\x00"),
]
# name, dims (ne0 first), ggml type, bytes
F32, F16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K, BF16 = 0, 1, 2, 3, 8, 12, 14, 30
tensors = [
    ("token_embd.weight", [8, 16], F32, 8 * 16 * 4),
    ("blk.0.attn_q.weight", [32, 8], Q8_0, 8 * 34),
    ("blk.0.attn_q.bias", [8], F32, 32),
    ("blk.0.attn_k.weight", [8, 4], F16, 64),
    ("blk.0.attn_v.weight", [32, 4], Q4_0, 4 * 18),
    ("blk.0.attn_output.weight", [32, 2], Q4_1, 2 * 20),
    ("blk.0.ffn_down.weight", [256, 1], Q4_K, 144),
    ("blk.0.ffn_up.weight", [256, 1], Q6_K, 210),
    ("blk.0.attn_norm.weight", [8], BF16, 16),
    ("output_norm.weight", [8], F32, 32),
    ("rope_freqs.weight", [2], F32, 8),
]
pad = lambda n: (32 - n % 32) % 32
rng = random.Random(7)
infos, data, offset = b"", b"", 0
for name, dims, t, size in tensors:
    infos += gstr(name) + u32(len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + u32(t) + struct.pack("<Q", offset)
    if t == F32:
        blob = b"".join(f32(rng.uniform(-1, 1)) for _ in range(size // 4))
    elif t in (F16, BF16):
        blob = b"".join(struct.pack("<H", 0x3C00 if t == F16 else 0x3F80) for _ in range(size // 2))
    else:
        blob = bytes(rng.randrange(256) for _ in range(size))
        # f16 scales of 1/64 where the block starts with them (Q6_K keeps d last), so values stay finite
        blocks = {Q4_0: 18, Q4_1: 20, Q8_0: 34, Q4_K: 144, Q6_K: 210}[t]
        blob = bytearray(blob)
        for b in range(0, size, blocks):
            at = b + (208 if t == Q6_K else 0)
            blob[at:at + 2] = struct.pack("<H", 0x2400)
            if t in (Q4_1, Q4_K):
                blob[b + 2:b + 4] = struct.pack("<H", 0x2400)
        blob = bytes(blob)
    data += blob + b"\0" * pad(size)
    offset += size + pad(size)
head = b"GGUF" + u32(3) + struct.pack("<QQ", len(tensors), len(kvs)) + b"".join(kvs) + infos
out = head + b"\0" * pad(len(head)) + data
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "gguf", "llama-small.gguf")
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "wb") as f:
    f.write(out)
print(f"wrote {path} ({len(out)} bytes)")
