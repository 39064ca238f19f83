#!/usr/bin/python3
"""Float64 reference of the Hugging Face causal-LM forward pass, with PEFT LoRA adapters.

An independent, readable re-implementation (transformers and peft are not imported) of:
  * LlamaForCausalLM / MistralForCausalLM (same math; Llama's attention_bias and mlp_bias),
    Qwen2ForCausalLM (q/k/v bias) and Qwen3ForCausalLM (RMSNorm over each q/k head before RoPE,
    explicit head_dim); grouped-query attention; tied embeddings;
  * RoPE in the rotate-half convention with rope_theta and rope_scaling "linear" or "llama3"
    (transformers' _compute_llama3_parameters);
  * PEFT LoRA: adapter_config.json (r, lora_alpha, target_modules as a list or a regex string,
    use_rslora, rank_pattern, alpha_pattern, layers_to_transform, layers_pattern) and
    adapter_model.safetensors; each targeted projection's output gains
    scale * (x A^T) B^T with scale = alpha / r, or alpha / sqrt(r) with use_rslora.

Weights are read from disk with this file's own safetensors reader and converted exactly to
float64 (BF16/F16/F32 are subsets of float64), and every operation runs in float64, so the
reference's own error is far below the engine's tolerances. The one deliberate exception is
RoPE's inverse frequencies: transformers computes them once in float32 (a float32 buffer), and
so does this file; positions times frequencies are then taken in float64.

Usage (with Debian's /usr/bin/python3, which has torch):
  reference.py generate --model DIR [--adapter DIR] --prompt 1,2,3 [--steps 32]
      prints {"greedy_token_ids", "top2_gap", "logprobs"} for a greedy continuation
  reference.py check DIR...
      recomputes every case of DIR/golden.json from the weights on disk and compares it with
      golden.json and golden.safetensors (exit status 1 on any difference)
"""

import argparse
import json
import math
import os
import re
import struct
import sys

import numpy as np
import torch

# ---------------------------------------------------------------------------------------------
# safetensors: 8-byte little-endian header length, a JSON header, then the data region.

_NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I32": np.int32,
                 "I64": np.int64}
_ELEMENT_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I32": 4, "I64": 8}


def read_safetensors(path):
    """Returns ({name: float64 tensor}, metadata) with every value converted exactly."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: truncated safetensors file")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if 8 + header_len > len(blob):
        raise ValueError(f"{path}: header length {header_len} runs past the end of the file")
    header = json.loads(blob[8:8 + header_len])
    data = memoryview(blob)[8 + header_len:]
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, entry in header.items():
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        count = int(np.prod(shape)) if shape else 1
        if dtype not in _ELEMENT_SIZE or end - begin != count * _ELEMENT_SIZE[dtype]:
            raise ValueError(f"{path}: tensor {name}: bad dtype {dtype} or byte range")
        raw = data[begin:end]
        if dtype == "BF16":
            # bf16 is the upper half of a float32: shift the bits into place.
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            values = bits.view(np.float32).astype(np.float64)
        else:
            values = np.frombuffer(raw, dtype=np.dtype(_NUMPY_DTYPES[dtype]).newbyteorder("<"))
            values = values.astype(np.float64)
        tensors[name] = torch.from_numpy(values.reshape(shape).copy())
    return tensors, metadata


def f32_to_bf16_bits(values):
    """Rounds float32 values to bfloat16 (nearest even), returned as uint16 bit patterns."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def encode_tensor(values, dtype):
    """float array -> little-endian bytes of `dtype` ("F32", "F16", "BF16")."""
    values = np.asarray(values, dtype=np.float64)
    if dtype == "F32":
        return values.astype("<f4").tobytes()
    if dtype == "F16":
        return values.astype("<f2").tobytes()
    if dtype == "BF16":
        return f32_to_bf16_bits(values.astype(np.float32)).astype("<u2").tobytes()
    raise ValueError(f"unsupported dtype {dtype}")


def write_safetensors(path, tensors, metadata=None):
    """Writes [(name, dtype, shape, raw bytes)] in the given order, header padded to 8 bytes."""
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, _, _, raw in tensors:
            f.write(raw)


def load_checkpoint(model_dir):
    """All tensors of a model folder: model.safetensors or the shards its index lists."""
    index_path = os.path.join(model_dir, "model.safetensors.index.json")
    if not os.path.exists(index_path):
        return read_safetensors(os.path.join(model_dir, "model.safetensors"))[0]
    with open(index_path) as f:
        weight_map = json.load(f)["weight_map"]
    tensors = {}
    for shard in sorted(set(weight_map.values())):
        shard_tensors = read_safetensors(os.path.join(model_dir, shard))[0]
        for name, value in shard_tensors.items():
            if weight_map.get(name) == shard:
                tensors[name] = value
    missing = sorted(set(weight_map) - set(tensors))
    if missing:
        raise ValueError(f"{index_path}: tensors listed but not found: {missing}")
    return tensors


# ---------------------------------------------------------------------------------------------
# config.json, with the defaults of each transformers configuration class.

class ModelConfig:
    def __init__(self, raw):
        self.raw = raw
        self.architecture = raw["architectures"][0]
        if self.architecture not in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                                     "Qwen3ForCausalLM"):
            raise ValueError(f"architecture {self.architecture} is not supported")
        self.hidden_size = raw["hidden_size"]
        self.intermediate_size = raw["intermediate_size"]
        self.num_layers = raw["num_hidden_layers"]
        self.num_heads = raw["num_attention_heads"]
        self.num_kv_heads = raw.get("num_key_value_heads") or self.num_heads
        default_head_dim = 128 if self.architecture == "Qwen3ForCausalLM" else (
            self.hidden_size // self.num_heads)
        self.head_dim = raw.get("head_dim") or default_head_dim
        self.vocab_size = raw["vocab_size"]
        self.rms_norm_eps = raw.get("rms_norm_eps", 1e-6)
        self.rope_theta = raw.get("rope_theta", 10000.0)
        self.rope_scaling = raw.get("rope_scaling")
        self.tie_word_embeddings = raw.get("tie_word_embeddings", False)
        # Qwen2: bias on q, k and v only. Llama and Qwen3 with attention_bias: on q, k, v and o.
        attention_bias = self.architecture in ("LlamaForCausalLM", "Qwen3ForCausalLM") and raw.get(
            "attention_bias", False)
        self.qkv_bias = self.architecture == "Qwen2ForCausalLM" or attention_bias
        self.o_bias = attention_bias
        self.mlp_bias = self.architecture == "LlamaForCausalLM" and raw.get("mlp_bias", False)
        self.qk_norm = self.architecture == "Qwen3ForCausalLM"


def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return ModelConfig(json.load(f))


def rope_inverse_frequencies(config):
    """inv_freq as transformers computes it: a float32 tensor, scaled per rope_scaling."""
    dim = config.head_dim
    base = float(config.rope_theta)
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaling = config.rope_scaling or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return inv_freq.double()
    if rope_type == "linear":
        return (inv_freq / scaling["factor"]).double()
    if rope_type != "llama3":
        raise ValueError(f"rope_scaling type {rope_type} is not supported")
    factor = scaling["factor"]
    low_freq_factor = scaling["low_freq_factor"]
    high_freq_factor = scaling["high_freq_factor"]
    old_context_len = scaling["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths are divided by factor, short ones kept, the band between interpolated.
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, inv_freq_llama).double()


# ---------------------------------------------------------------------------------------------
# PEFT LoRA adapters.

MODULE_PATHS = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn",
                "o_proj": "self_attn", "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def module_key(layer, module):
    """The name transformers gives the projection: model.layers.0.self_attn.q_proj."""
    return f"model.layers.{layer}.{MODULE_PATHS[module]}.{module}"


def target_module_exists(config, key):
    """PEFT's check_target_module_exists for LoRA (no exclude_modules)."""
    targets = config["target_modules"]
    if isinstance(targets, str):
        return re.fullmatch(targets, key) is not None
    if key in targets:
        return True
    found = any(key.endswith(f".{t}") for t in targets)
    layer_indexes = config.get("layers_to_transform")
    layers_pattern = config.get("layers_pattern")
    using_indexes = layer_indexes is not None and (
        len(layer_indexes) != 0 if isinstance(layer_indexes, list) else True)
    if not (using_indexes and found):
        return found
    match = None
    if layers_pattern is None or len(layers_pattern) == 0:
        match = re.match(r".*\.[^.]*\.(\d+)\.", key)
    else:
        patterns = [layers_pattern] if isinstance(layers_pattern, str) else layers_pattern
        for pattern in patterns:
            match = re.match(rf".*\.{pattern}\.(\d+)\.", key)
            if match is not None:
                break
    if match is None:
        return False
    index = int(match.group(1))
    return index == layer_indexes if isinstance(layer_indexes, int) else index in layer_indexes


def get_pattern_key(pattern_keys, key):
    """PEFT's get_pattern_key: the first pattern matching the end of `key` (after a dot)."""
    for pattern in pattern_keys:
        if re.match(rf"(.*\.)?({pattern})$", key):
            return pattern
    return key


def module_rank_and_scale(config, key):
    """(r, scale) PEFT gives the module `key`, after rank_pattern and alpha_pattern."""
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    r = rank_pattern.get(get_pattern_key(rank_pattern.keys(), key), config["r"])
    alpha = alpha_pattern.get(get_pattern_key(alpha_pattern.keys(), key), config["lora_alpha"])
    scale = alpha / math.sqrt(r) if config.get("use_rslora", False) else alpha / r
    return r, scale


class LoraAdapter:
    """One PEFT adapter: for each targeted module key, (A (r, in), B (out, r), scale)."""

    def __init__(self, adapter_dir, model_config):
        with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
            self.config = json.load(f)
        if self.config.get("peft_type", "LORA") != "LORA":
            raise ValueError(f"{adapter_dir}: peft_type {self.config['peft_type']} is not LORA")
        for unsupported in ("use_dora", "modules_to_save", "fan_in_fan_out"):
            if self.config.get(unsupported):
                raise ValueError(f"{adapter_dir}: {unsupported} is not supported")
        if self.config.get("bias", "none") != "none":
            raise ValueError(f"{adapter_dir}: bias {self.config['bias']} is not supported")
        tensors, _ = read_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
        self.modules = {}
        for layer in range(model_config.num_layers):
            for module in MODULE_PATHS:
                key = module_key(layer, module)
                if not target_module_exists(self.config, key):
                    continue
                r, scale = module_rank_and_scale(self.config, key)
                a = tensors.pop(f"base_model.model.{key}.lora_A.weight")
                b = tensors.pop(f"base_model.model.{key}.lora_B.weight")
                if a.shape[0] != r or b.shape[1] != r:
                    raise ValueError(f"{adapter_dir}: {key}: rank {r} but A {list(a.shape)}, "
                                     f"B {list(b.shape)}")
                self.modules[key] = (a, b, scale)
        if tensors:
            raise ValueError(f"{adapter_dir}: tensors no targeted module uses: {sorted(tensors)}")


# ---------------------------------------------------------------------------------------------
# The forward pass, over one whole sequence (no KV cache: every step recomputes every position).

def rms_norm(x, weight, eps):
    """transformers' RMSNorm: x / sqrt(mean(x^2) + eps), then times the weight."""
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Model:
    """A checkpoint's weights in float64 and the forward pass; optionally one LoRA adapter."""

    def __init__(self, model_dir):
        self.config = load_config(model_dir)
        self.weights = load_checkpoint(model_dir)
        self.inv_freq = rope_inverse_frequencies(self.config)

    def linear(self, x, name, adapter):
        """x W^T (+ b) (+ scale (x A^T) B^T when the adapter targets this module)."""
        y = x @ self.weights[f"{name}.weight"].T
        if f"{name}.bias" in self.weights:
            y = y + self.weights[f"{name}.bias"]
        if adapter is not None and name in adapter.modules:
            a, b, scale = adapter.modules[name]
            y = y + scale * ((x @ a.T) @ b.T)
        return y

    def attention(self, x, layer, adapter):
        c, w = self.config, self.weights
        prefix = f"model.layers.{layer}.self_attn"
        seq = x.shape[0]
        q = self.linear(x, f"{prefix}.q_proj", adapter).view(seq, c.num_heads, c.head_dim)
        k = self.linear(x, f"{prefix}.k_proj", adapter).view(seq, c.num_kv_heads, c.head_dim)
        v = self.linear(x, f"{prefix}.v_proj", adapter).view(seq, c.num_kv_heads, c.head_dim)
        if c.qk_norm:
            q = rms_norm(q, w[f"{prefix}.q_norm.weight"], c.rms_norm_eps)
            k = rms_norm(k, w[f"{prefix}.k_norm.weight"], c.rms_norm_eps)
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # (heads, seq, dim)
        angles = torch.arange(seq, dtype=torch.float64)[:, None] * self.inv_freq[None, :]
        emb = torch.cat((angles, angles), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        group = c.num_heads // c.num_kv_heads  # query head h reads key/value head h // group
        k = k.repeat_interleave(group, dim=0)
        v = v.repeat_interleave(group, dim=0)
        scores = (q @ k.transpose(1, 2)) * (c.head_dim ** -0.5)
        causal = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)
        scores = scores.masked_fill(causal, float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v
        out = out.transpose(0, 1).reshape(seq, c.num_heads * c.head_dim)
        return self.linear(out, f"{prefix}.o_proj", adapter)

    def mlp(self, x, layer, adapter):
        prefix = f"model.layers.{layer}.mlp"
        gate = self.linear(x, f"{prefix}.gate_proj", adapter)
        up = self.linear(x, f"{prefix}.up_proj", adapter)
        return self.linear(torch.nn.functional.silu(gate) * up, f"{prefix}.down_proj", adapter)

    def forward(self, token_ids, adapter=None):
        """Logits (seq, vocab), float64, for positions 0 .. len(token_ids) - 1."""
        c, w = self.config, self.weights
        h = w["model.embed_tokens.weight"][torch.tensor(token_ids, dtype=torch.long)]
        for layer in range(c.num_layers):
            prefix = f"model.layers.{layer}"
            x = rms_norm(h, w[f"{prefix}.input_layernorm.weight"], c.rms_norm_eps)
            h = h + self.attention(x, layer, adapter)
            x = rms_norm(h, w[f"{prefix}.post_attention_layernorm.weight"], c.rms_norm_eps)
            h = h + self.mlp(x, layer, adapter)
        h = rms_norm(h, w["model.norm.weight"], c.rms_norm_eps)
        lm_head = w["model.embed_tokens.weight"] if c.tie_word_embeddings else w["lm_head.weight"]
        return h @ lm_head.T

    def greedy(self, prompt_ids, steps, adapter=None):
        """Greedy continuation: per step the logits that chose the token (step 0: the last prompt
        position), the token (lowest id on an exact tie), the top-2 logit gap and its logprob."""
        tokens = list(prompt_ids)
        out = {"greedy_token_ids": [], "top2_gap": [], "logprobs": [], "logits": []}
        for _ in range(steps):
            logits = self.forward(tokens, adapter)[-1]
            top2 = torch.topk(logits, 2).values
            token = int(torch.argmax(logits))  # first index of the maximum
            out["greedy_token_ids"].append(token)
            out["top2_gap"].append(float(top2[0] - top2[1]))
            out["logprobs"].append(float(torch.log_softmax(logits, dim=-1)[token]))
            out["logits"].append(logits)
            tokens.append(token)
        out["logits"] = torch.stack(out["logits"])
        return out


# ---------------------------------------------------------------------------------------------
# Command line.

def check_fixture(model_dir):
    """Recomputes every golden case of `model_dir`; returns a list of mismatch descriptions."""
    with open(os.path.join(model_dir, "golden.json")) as f:
        golden = json.load(f)
    stored_logits, _ = read_safetensors(os.path.join(model_dir, "golden.safetensors"))
    model = Model(model_dir)
    adapters = {}
    problems = []
    for case in golden["cases"]:
        name = case["name"]
        adapter = None
        if case["adapter"] is not None:
            if case["adapter"] not in adapters:
                adapters[case["adapter"]] = LoraAdapter(
                    os.path.join(model_dir, "adapters", case["adapter"]), model.config)
            adapter = adapters[case["adapter"]]
        # The model is causal: one pass over prompt + continuation gives every step's logits,
        # and the continuation is greedy when each step's argmax is the next token.
        prompt, tokens = case["prompt_token_ids"], case["greedy_token_ids"]
        logits = model.forward(prompt + tokens[:-1], adapter)[len(prompt) - 1:]
        if torch.argmax(logits, dim=-1).tolist() != tokens:
            problems.append(f"{model_dir} {name}: greedy tokens differ")
        top2 = torch.topk(logits, 2, dim=-1).values
        got = {"top2_gap": (top2[:, 0] - top2[:, 1]).tolist(),
               "logprobs": torch.log_softmax(logits, dim=-1).gather(
                   1, torch.tensor(tokens)[:, None])[:, 0].tolist()}
        for key in ("top2_gap", "logprobs"):
            diff = max(abs(a - b) for a, b in zip(got[key], case[key]))
            if diff > 1e-6:
                problems.append(f"{model_dir} {name}: {key} differ by {diff:.3g}")
        diff = float((logits - stored_logits[f"{name}.logits"]).abs().max())
        if diff > 1e-5:  # the stored logits are float32 roundings of float64 values
            problems.append(f"{model_dir} {name}: logits differ by {diff:.3g}")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="greedy continuation of one prompt")
    gen.add_argument("--model", required=True)
    gen.add_argument("--adapter")
    gen.add_argument("--prompt", required=True, help="comma-separated token ids")
    gen.add_argument("--steps", type=int, default=32)
    chk = sub.add_parser("check", help="recompute fixtures' golden outputs and compare")
    chk.add_argument("model_dirs", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead

    if args.command == "generate":
        model = Model(args.model)
        adapter = LoraAdapter(args.adapter, model.config) if args.adapter else None
        prompt = [int(t) for t in args.prompt.split(",")]
        out = model.greedy(prompt, args.steps, adapter)
        del out["logits"]
        print(json.dumps(out))
        return 0
    problems = []
    for model_dir in args.model_dirs:
        problems += check_fixture(model_dir)
    for p in problems:
        print(p, file=sys.stderr)
    print(f"checked {len(args.model_dirs)} fixture(s): "
          f"{'OK' if not problems else f'{len(problems)} mismatch(es)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
