#!/usr/bin/env python3
"""Writes a Llama-3-8B-shaped checkpoint folder with random bf16 weights, for benchmarks.

    /usr/bin/python3 bench/write_random_llama.py OUT_DIR [--layers 32] [--vocab 128256]

OUT_DIR gets config.json (LlamaForCausalLM: hidden 4096, 32 heads / 8 KV heads, ffn 14336,
llama3 rope scaling, torch_dtype bfloat16) and model.safetensors (about 16 GB at 32 layers),
written tensor by tensor so the script needs a few hundred MB of memory whatever the size.
Weights are random bf16 values of magnitude about 1/sqrt(in) (random sign and mantissa, the
exponent drawn from four values), norms 1: numbers nobody trains, shaped like the real model.
"""
import argparse
import json
import os
import struct

import numpy as np

CHUNK = 1 << 26  # elements generated at a time


def tensors(layers, vocab, dim=4096, ffn=14336, heads=32, kv_heads=8):
    head_dim = dim // heads
    yield "model.embed_tokens.weight", (vocab, dim)
    for i in range(layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (dim,)
        yield p + "post_attention_layernorm.weight", (dim,)
        yield p + "self_attn.q_proj.weight", (heads * head_dim, dim)
        yield p + "self_attn.k_proj.weight", (kv_heads * head_dim, dim)
        yield p + "self_attn.v_proj.weight", (kv_heads * head_dim, dim)
        yield p + "self_attn.o_proj.weight", (dim, heads * head_dim)
        yield p + "mlp.gate_proj.weight", (ffn, dim)
        yield p + "mlp.up_proj.weight", (ffn, dim)
        yield p + "mlp.down_proj.weight", (dim, ffn)
    yield "model.norm.weight", (dim,)
    yield "lm_head.weight", (vocab, dim)


def random_bf16(rng, n, fan_in):
    """n bf16 bit patterns: random sign and mantissa, exponent around 1/sqrt(fan_in)."""
    top = 127 + int(np.floor(np.log2(1.0 / np.sqrt(fan_in))))
    bits = np.frombuffer(rng.bytes(2 * n), dtype=np.uint16)
    # Sign and mantissa as drawn; two of the drawn exponent bits pick one of 4 exponents.
    return (bits & 0x807F) | ((top - (bits >> 7 & 3)) << 7).astype(np.uint16)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": args.layers, "num_attention_heads": 32,
        "num_key_value_heads": 8, "vocab_size": args.vocab, "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "hidden_act": "silu",
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "bos_token_id": 128000,
        "eos_token_id": 128001,
    }
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)

    layout = list(tensors(args.layers, args.vocab))
    header, offset = {}, 0
    for name, shape in layout:
        nbytes = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    rng = np.random.default_rng(args.seed)
    path = os.path.join(args.out_dir, "model.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for i, (name, shape) in enumerate(layout):
            n = int(np.prod(shape))
            if len(shape) == 1:
                f.write(np.full(n, 0x3F80, dtype=np.uint16).tobytes())  # 1.0
                continue
            for start in range(0, n, CHUNK):
                f.write(random_bf16(rng, min(CHUNK, n - start), shape[1]).tobytes())
            print(f"\r{i + 1}/{len(layout)} tensors", end="", flush=True)
    print(f"\nwrote {path}: {offset / 2**30:.2f} GiB of bf16 weights")


if __name__ == "__main__":
    main()
