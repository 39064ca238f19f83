#!/usr/bin/python3
"""Writes a random Llama model folder (config.json, model.safetensors) and random PEFT LoRA
adapters for bench/server_bench.sh: a model big enough that a step's compute is not lost in
per-token overheads, yet quick on a laptop CPU. Seeded; numpy only.

    /usr/bin/python3 bench/server_bench_model.py OUT_DIR [--adapters 4] [--rank 16]
      [--targets q_proj,k_proj,...] [--hidden 512] [--layers 8] [--heads 8] [--kv-heads 4]
      [--ffn 1408] [--vocab 8192]

OUT_DIR gets the model, and OUT_DIR/adapters/task<i> the adapters (all seven projections
unless --targets names fewer).
"""

import argparse
import json
import os
import struct

import numpy as np


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def projections(a):
    head_dim = a.hidden // a.heads
    q, kv = a.heads * head_dim, a.kv_heads * head_dim
    # name: (out, in)
    return {"self_attn.q_proj": (q, a.hidden), "self_attn.k_proj": (kv, a.hidden),
            "self_attn.v_proj": (kv, a.hidden), "self_attn.o_proj": (a.hidden, q),
            "mlp.gate_proj": (a.ffn, a.hidden), "mlp.up_proj": (a.ffn, a.hidden),
            "mlp.down_proj": (a.hidden, a.ffn)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--adapters", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                    help="projections the adapters target, comma-separated")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=1408)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--context", type=int, default=256)
    a = ap.parse_args()
    rng = np.random.default_rng(1)
    os.makedirs(a.out, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": a.hidden, "intermediate_size": a.ffn,
              "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
              "num_key_value_heads": a.kv_heads, "max_position_embeddings": a.context,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
              "torch_dtype": "float32", "vocab_size": a.vocab, "bos_token_id": 1,
              "eos_token_id": 2, "hidden_act": "silu"}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    std = 0.02
    t = {"model.embed_tokens.weight": rng.normal(0, std, (a.vocab, a.hidden)),
         "model.norm.weight": np.ones(a.hidden), "lm_head.weight": rng.normal(0, std, (a.vocab, a.hidden))}
    for i in range(a.layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = np.ones(a.hidden)
        t[p + "post_attention_layernorm.weight"] = np.ones(a.hidden)
        for name, shape in projections(a).items():
            t[p + name + ".weight"] = rng.normal(0, std, shape)
    write_safetensors(os.path.join(a.out, "model.safetensors"), t)
    targets = a.targets.split(",")
    for k in range(a.adapters):
        folder = os.path.join(a.out, "adapters", f"task{k}")
        os.makedirs(folder, exist_ok=True)
        cfg = {"peft_type": "LORA", "r": a.rank, "lora_alpha": 2 * a.rank, "bias": "none",
               "target_modules": targets, "use_rslora": False, "use_dora": False,
               "fan_in_fan_out": False, "modules_to_save": None, "rank_pattern": {},
               "alpha_pattern": {}, "layers_to_transform": None, "task_type": "CAUSAL_LM"}
        with open(os.path.join(folder, "adapter_config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        w = {}
        for i in range(a.layers):
            for name, (out_dim, in_dim) in projections(a).items():
                if name.split(".")[1] not in targets:
                    continue
                p = f"base_model.model.model.layers.{i}.{name}"
                w[p + ".lora_A.weight"] = rng.normal(0, 1 / np.sqrt(in_dim), (a.rank, in_dim))
                w[p + ".lora_B.weight"] = rng.normal(0, std, (out_dim, a.rank))
        write_safetensors(os.path.join(folder, "adapter_model.safetensors"), w)
    print(f"wrote {a.out}: {sum(v.size for v in t.values()) / 1e6:.1f} M parameters, "
          f"{a.adapters} adapters of rank {a.rank}")


if __name__ == "__main__":
    main()
