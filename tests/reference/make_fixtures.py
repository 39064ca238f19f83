#!/usr/bin/python3
"""Writes the test fixtures: small random models in Hugging Face layout, PEFT LoRA adapters for
each, and golden outputs computed by reference.py from the files as written.

  /usr/bin/python3 tests/reference/make_fixtures.py [--out tests/reference/fixtures]

Deterministic: the same script writes the same weights (fixed seeds). Each model folder is
replaced whole. See tests/reference/README.md for the layout and what each fixture covers.
"""

import argparse
import json
import math
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402

STEPS = 32          # greedy steps per case
PROMPT_LEN = 32     # tokens per prompt
BASE_PROMPTS = 3    # base-model cases per model
# Every case's reference top-2 logit gap is at least this at every step, so the engine's tokens
# can be compared over all 32 steps even in bf16 compute (DESIGN.md: eps 1e-3 fp32, 5e-2 bf16).
MIN_GAP = 0.05
FIRST_TOKEN = 3     # prompts avoid ids 0-2 (bos and eos in the fixtures)

MODELS = [
    dict(name="llama_mha_f32", arch="LlamaForCausalLM", model_type="llama", dtype="F32",
         vocab=256, hidden=32, intermediate=96, layers=2, heads=4, kv_heads=4, tie=False,
         rope_theta=10000.0, rms_norm_eps=1e-5, seed=1,
         extra={"eos_token_id": 1},
         generation_config={"bos_token_id": 0, "eos_token_id": [1, 2]}),
    dict(name="llama_gqa_bf16_llama3rope", arch="LlamaForCausalLM", model_type="llama",
         dtype="BF16", vocab=256, hidden=48, intermediate=128, layers=2, heads=4, kv_heads=2,
         tie=True, rope_theta=10000.0, rms_norm_eps=1e-5, seed=2, residual_gain=3.0,
         # head_dim 12: wavelengths 6.3 .. 13541, so one frequency is kept (< 16), one
         # interpolated (16 .. 64) and the rest divided by factor (> 64).
         extra={"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 64},
                "eos_token_id": 2}),
    dict(name="llama_bias_linrope_f32", arch="LlamaForCausalLM", model_type="llama",
         dtype="F32", vocab=256, hidden=32, intermediate=64, layers=2, heads=4, kv_heads=2,
         tie=False, rope_theta=500000.0, rms_norm_eps=1e-5, seed=3,
         extra={"attention_bias": True, "mlp_bias": True,
                "rope_scaling": {"type": "linear", "factor": 2.0}, "eos_token_id": 2}),
    dict(name="qwen2_sharded_f16", arch="Qwen2ForCausalLM", model_type="qwen2", dtype="F16",
         vocab=256, hidden=48, intermediate=96, layers=2, heads=6, kv_heads=2, tie=False,
         rope_theta=1000000.0, rms_norm_eps=1e-6, seed=4, shards=2,
         extra={"use_sliding_window": False, "sliding_window": 4096, "eos_token_id": 2}),
    dict(name="qwen3_headdim_bf16", arch="Qwen3ForCausalLM", model_type="qwen3", dtype="BF16",
         vocab=256, hidden=32, intermediate=96, layers=2, heads=4, kv_heads=2, head_dim=16,
         tie=True, rope_theta=1000000.0, rms_norm_eps=1e-6, seed=5, residual_gain=3.0,
         extra={"attention_bias": False, "eos_token_id": 2}),
]

ALL_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# The same four adapter shapes on every model (their weights differ per model). Adapters are
# stored in F32 on F32 models and in BF16 on the others, except `odd_dtype` ones (the other way
# round), so each model sees both.
ADAPTERS = [
    dict(name="all7_r8", config={"r": 8, "lora_alpha": 16,
                                               "target_modules": ALL_MODULES}),
    dict(name="attn_r16_rslora",
         config={"r": 16, "lora_alpha": 8, "use_rslora": True,
                 "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
                 "rank_pattern": {"o_proj": 4}}),
    dict(name="mlp_r4_layer1", odd_dtype=True,
         config={"r": 4, "lora_alpha": 8, "target_modules": ["gate_proj", "up_proj", "down_proj"],
                 "layers_to_transform": [1], "layers_pattern": "layers"}),
    dict(name="regex_patterns",
         config={"r": 8, "lora_alpha": 16,
                 "target_modules": r".*\.(q_proj|v_proj)|.*\.layers\.1\.mlp\.down_proj",
                 "rank_pattern": {"q_proj": 16, "layers.1.self_attn.v_proj": 4},
                 "alpha_pattern": {"v_proj": 32}}),
]

PEFT_DEFAULTS = {
    "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": None, "bias": "none",
    "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
    "layers_pattern": None, "layers_to_transform": None, "lora_dropout": 0.0,
    "modules_to_save": None, "peft_type": "LORA", "rank_pattern": {}, "revision": None,
    "task_type": "CAUSAL_LM", "use_dora": False, "use_rslora": False,
}


def model_config_json(spec):
    head_dim = spec.get("head_dim", spec["hidden"] // spec["heads"])
    config = {
        "architectures": [spec["arch"]],
        "model_type": spec["model_type"],
        "hidden_act": "silu",
        "hidden_size": spec["hidden"],
        "intermediate_size": spec["intermediate"],
        "num_hidden_layers": spec["layers"],
        "num_attention_heads": spec["heads"],
        "num_key_value_heads": spec["kv_heads"],
        "max_position_embeddings": 128,
        "rms_norm_eps": spec["rms_norm_eps"],
        "rope_theta": spec["rope_theta"],
        "tie_word_embeddings": spec["tie"],
        "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[spec["dtype"]],
        "vocab_size": spec["vocab"],
        "bos_token_id": 0,
        "use_cache": True,
        "transformers_version": "4.46.0",
    }
    if "head_dim" in spec:
        config["head_dim"] = head_dim
    config.update(spec["extra"])
    return config


def random_weights(spec, config):
    """{name: float64 array} in the order transformers saves them. Scales keep activations near
    unit size and spread the logits (std about 4.5) so that top-2 gaps are rarely tiny. With tied
    embeddings, `residual_gain` > 1 makes the layers outweigh the input token's own embedding in
    the residual stream, which otherwise makes the model repeat its last token forever."""
    rng = np.random.default_rng(spec["seed"])
    c = reference.ModelConfig(config)
    d, f = c.hidden_size, c.intermediate_size
    out_gain = spec.get("residual_gain", 1.0)
    q_dim, kv_dim = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim

    def normal(shape, std):
        return rng.normal(0.0, std, size=shape)

    def norm_weight(n):
        return 1.0 + normal((n,), 0.15)

    w = {}
    embed_std = 4.5 / math.sqrt(d) if c.tie_word_embeddings else 1.0
    w["model.embed_tokens.weight"] = normal((c.vocab_size, d), embed_std)
    for layer in range(c.num_layers):
        p = f"model.layers.{layer}."
        w[p + "input_layernorm.weight"] = norm_weight(d)
        for name, out, inp, gain in (("q_proj", q_dim, d, 1.5), ("k_proj", kv_dim, d, 1.5),
                                     ("v_proj", kv_dim, d, 1.0), ("o_proj", d, q_dim, out_gain)):
            w[p + f"self_attn.{name}.weight"] = normal((out, inp), gain / math.sqrt(inp))
            if (c.qkv_bias and name != "o_proj") or (c.o_bias and name == "o_proj"):
                w[p + f"self_attn.{name}.bias"] = normal((out,), 0.3)
        if c.qk_norm:
            w[p + "self_attn.q_norm.weight"] = norm_weight(c.head_dim)
            w[p + "self_attn.k_norm.weight"] = norm_weight(c.head_dim)
        w[p + "post_attention_layernorm.weight"] = norm_weight(d)
        for name, out, inp, gain in (("gate_proj", f, d, 1.5), ("up_proj", f, d, 1.5),
                                     ("down_proj", d, f, out_gain)):
            w[p + f"mlp.{name}.weight"] = normal((out, inp), gain / math.sqrt(inp))
            if c.mlp_bias:
                w[p + f"mlp.{name}.bias"] = normal((out,), 0.3)
    w["model.norm.weight"] = norm_weight(d)
    if not c.tie_word_embeddings:
        w["lm_head.weight"] = normal((c.vocab_size, d), 4.5 / math.sqrt(d))
    return w


def write_model(spec, model_dir):
    config = model_config_json(spec)
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    if "generation_config" in spec:
        gen = dict(spec["generation_config"], transformers_version="4.46.0")
        with open(os.path.join(model_dir, "generation_config.json"), "w") as f:
            json.dump(gen, f, indent=2)
            f.write("\n")
    weights = random_weights(spec, config)
    entries = [(name, spec["dtype"], value.shape, reference.encode_tensor(value, spec["dtype"]))
               for name, value in weights.items()]
    shards = spec.get("shards", 1)
    metadata = {"format": "pt"}
    if shards == 1:
        reference.write_safetensors(os.path.join(model_dir, "model.safetensors"), entries,
                                    metadata)
        return
    # Layer l goes to shard l * shards // layers; embeddings to the first, the rest to the last.
    layers = config["num_hidden_layers"]
    parts = [[] for _ in range(shards)]
    for entry in entries:
        name = entry[0]
        if name.startswith("model.layers."):
            parts[int(name.split(".")[2]) * shards // layers].append(entry)
        elif name.startswith("model.embed_tokens"):
            parts[0].append(entry)
        else:
            parts[-1].append(entry)
    weight_map = {}
    for i, part in enumerate(parts):
        file_name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        reference.write_safetensors(os.path.join(model_dir, file_name), part, metadata)
        weight_map.update({entry[0]: file_name for entry in part})
    index = {"metadata": {"total_size": sum(len(e[3]) for e in entries)},
             "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(model_dir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


def write_adapter(spec, adapter_spec, model_config, adapter_dir, seed):
    """A PEFT adapter folder. B is non-zero (a trained adapter), sized so the delta is about a
    third of the projection's output."""
    rng = np.random.default_rng(seed)
    dtype = "F32" if (spec["dtype"] == "F32") != adapter_spec.get("odd_dtype", False) else "BF16"
    config = dict(PEFT_DEFAULTS)
    config.update(adapter_spec["config"])
    config["base_model_name_or_path"] = spec["name"]
    os.makedirs(adapter_dir)
    with open(os.path.join(adapter_dir, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    c = model_config
    q_dim, kv_dim = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    shapes = {"q_proj": (q_dim, c.hidden_size), "k_proj": (kv_dim, c.hidden_size),
              "v_proj": (kv_dim, c.hidden_size), "o_proj": (c.hidden_size, q_dim),
              "gate_proj": (c.intermediate_size, c.hidden_size),
              "up_proj": (c.intermediate_size, c.hidden_size),
              "down_proj": (c.hidden_size, c.intermediate_size)}
    entries = []
    for layer in range(c.num_layers):
        for module in ALL_MODULES:
            key = reference.module_key(layer, module)
            if not reference.target_module_exists(config, key):
                continue
            r, scale = reference.module_rank_and_scale(config, key)
            out, inp = shapes[module]
            a = rng.normal(0.0, 1.0 / math.sqrt(inp), size=(r, inp))
            b = rng.normal(0.0, 0.6 / (scale * math.sqrt(r)), size=(out, r))
            for part, value in (("lora_A", a), ("lora_B", b)):
                entries.append((f"base_model.model.{key}.{part}.weight", dtype, value.shape,
                                reference.encode_tensor(value, dtype)))
    reference.write_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"), entries)


def golden_case(model, adapter, rng, vocab):
    """A random prompt whose greedy continuation has no near tie, and that continuation."""
    for _ in range(200):
        prompt = [int(t) for t in rng.integers(FIRST_TOKEN, vocab, size=PROMPT_LEN)]
        out = model.greedy(prompt, STEPS, adapter)
        if min(out["top2_gap"]) >= MIN_GAP:
            return prompt, out
    raise RuntimeError("no prompt without a near tie in 200 tries; change the model's scales")


def golden_json_text(golden):
    """golden.json with one line per field of a case (lists stay on their line)."""
    cases = []
    for case in golden["cases"]:
        fields = [f'    "{key}": {json.dumps(value)}' for key, value in case.items()]
        cases.append("  {\n" + ",\n".join(fields) + "\n  }")
    head = {key: value for key, value in golden.items() if key != "cases"}
    head_text = "".join(f'"{key}": {json.dumps(value)}, ' for key, value in head.items())
    return "{" + head_text + '"cases": [\n' + ",\n".join(cases) + "\n]}\n"


def make_fixture(spec, out_root):
    model_dir = os.path.join(out_root, spec["name"])
    if os.path.exists(model_dir):
        shutil.rmtree(model_dir)
    os.makedirs(model_dir)
    write_model(spec, model_dir)
    model = reference.Model(model_dir)
    rng = np.random.default_rng(1000 + spec["seed"])
    cases = []
    for i in range(BASE_PROMPTS):
        prompt, out = golden_case(model, None, rng, model.config.vocab_size)
        cases.append((f"base_{i}", None, prompt, out))
    for k, adapter_spec in enumerate(ADAPTERS):
        adapter_dir = os.path.join(model_dir, "adapters", adapter_spec["name"])
        write_adapter(spec, adapter_spec, model.config, adapter_dir, 100 * spec["seed"] + k)
        adapter = reference.LoraAdapter(adapter_dir, model.config)
        prompt, out = golden_case(model, adapter, rng, model.config.vocab_size)
        # The adapter must matter: the base model on the same prompt gives other logits.
        base = model.forward(prompt + out["greedy_token_ids"])[PROMPT_LEN - 1:-1]
        effect = float((base - out["logits"]).abs().max())
        if effect < 1.0:
            raise RuntimeError(f"{spec['name']}/{adapter_spec['name']}: effect only {effect}")
        cases.append((f"{adapter_spec['name']}_0", adapter_spec["name"], prompt, out))

    golden = {"steps": STEPS, "min_top2_gap": MIN_GAP, "cases": []}
    logits = []
    for name, adapter_name, prompt, out in cases:
        golden["cases"].append({
            "name": name, "adapter": adapter_name, "prompt_token_ids": prompt,
            "greedy_token_ids": out["greedy_token_ids"], "top2_gap": out["top2_gap"],
            "logprobs": out["logprobs"]})
        values = out["logits"].numpy()
        logits.append((f"{name}.logits", "F32", values.shape, reference.encode_tensor(values, "F32")))
    with open(os.path.join(model_dir, "golden.json"), "w") as f:
        f.write(golden_json_text(golden))
    reference.write_safetensors(os.path.join(model_dir, "golden.safetensors"), logits)
    for name, adapter_name, _, out in cases:
        distinct = len(set(out["greedy_token_ids"]))
        print(f"{spec['name']:28s} {name:20s} min gap {min(out['top2_gap']):6.3f}  "
              f"distinct tokens {distinct:2d}/{STEPS}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "fixtures"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # the same float64 sums on every machine
    os.makedirs(args.out, exist_ok=True)
    for spec in MODELS:
        make_fixture(spec, args.out)
    total = sum(os.path.getsize(os.path.join(d, f))
                for d, _, files in os.walk(args.out) for f in files)
    print(f"fixtures: {total / 1024:.0f} KiB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
