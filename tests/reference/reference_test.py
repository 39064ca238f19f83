#!/usr/bin/python3
"""Self-tests of the PyTorch reference (run by ctest as reference_python when /usr/bin/python3
has torch): PEFT's matching rules on known inputs, the safetensors codec, RoPE scaling, a
loop-by-loop second forward pass, LoRA against merged weights, and the committed golden files
against a fresh computation from the committed weights.

  /usr/bin/python3 tests/reference/reference_test.py
"""

import math
import os
import sys
import tempfile
import unittest

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference  # noqa: E402

FIXTURES = os.path.join(HERE, "fixtures")
FIXTURE_NAMES = sorted(d for d in os.listdir(FIXTURES)
                       if os.path.exists(os.path.join(FIXTURES, d, "golden.json")))


class PeftMatchingTest(unittest.TestCase):
    def test_list_targets_match_the_last_name_component(self):
        config = {"target_modules": ["q_proj", "down_proj"]}
        self.assertTrue(reference.target_module_exists(config, "model.layers.0.self_attn.q_proj"))
        self.assertTrue(reference.target_module_exists(config, "model.layers.1.mlp.down_proj"))
        self.assertFalse(reference.target_module_exists(config, "model.layers.0.self_attn.k_proj"))
        # "proj" is not the name of a module: matching is on whole components.
        self.assertFalse(reference.target_module_exists({"target_modules": ["proj"]},
                                                        "model.layers.0.self_attn.q_proj"))

    def test_regex_targets_must_match_the_whole_key(self):
        config = {"target_modules": r".*\.(q_proj|v_proj)|.*\.layers\.1\.mlp\.down_proj"}
        self.assertTrue(reference.target_module_exists(config, "model.layers.0.self_attn.v_proj"))
        self.assertTrue(reference.target_module_exists(config, "model.layers.1.mlp.down_proj"))
        self.assertFalse(reference.target_module_exists(config, "model.layers.0.mlp.down_proj"))
        self.assertFalse(reference.target_module_exists({"target_modules": r"layers\.1\..*"},
                                                        "model.layers.1.mlp.down_proj"))

    def test_layers_to_transform(self):
        config = {"target_modules": ["gate_proj"], "layers_to_transform": [1],
                  "layers_pattern": "layers"}
        self.assertFalse(reference.target_module_exists(config, "model.layers.0.mlp.gate_proj"))
        self.assertTrue(reference.target_module_exists(config, "model.layers.1.mlp.gate_proj"))
        config = {"target_modules": ["gate_proj"], "layers_to_transform": 0}
        self.assertTrue(reference.target_module_exists(config, "model.layers.0.mlp.gate_proj"))
        self.assertFalse(reference.target_module_exists(config, "model.layers.1.mlp.gate_proj"))
        config = {"target_modules": ["gate_proj"], "layers_to_transform": [0],
                  "layers_pattern": "blocks"}  # no ".blocks.<i>." in the key: nothing matches
        self.assertFalse(reference.target_module_exists(config, "model.layers.0.mlp.gate_proj"))

    def test_pattern_keys_match_the_end_after_a_dot(self):
        keys = ["q_proj", "layers.1.self_attn.v_proj"]
        self.assertEqual(reference.get_pattern_key(keys, "model.layers.0.self_attn.q_proj"),
                         "q_proj")
        self.assertEqual(reference.get_pattern_key(keys, "model.layers.1.self_attn.v_proj"),
                         "layers.1.self_attn.v_proj")
        key = "model.layers.0.self_attn.v_proj"
        self.assertEqual(reference.get_pattern_key(keys, key), key)  # no pattern: the key itself
        # "_proj" must not match "q_proj": the pattern starts after a dot or at the start.
        self.assertEqual(reference.get_pattern_key(["_proj"], "model.layers.0.self_attn.q_proj"),
                         "model.layers.0.self_attn.q_proj")

    def test_rank_and_scale(self):
        config = {"r": 8, "lora_alpha": 16, "rank_pattern": {"q_proj": 16},
                  "alpha_pattern": {"v_proj": 32}}
        self.assertEqual(reference.module_rank_and_scale(config, "model.layers.0.self_attn.q_proj"),
                         (16, 1.0))
        self.assertEqual(reference.module_rank_and_scale(config, "model.layers.0.self_attn.v_proj"),
                         (8, 4.0))
        self.assertEqual(reference.module_rank_and_scale(config, "model.layers.0.self_attn.k_proj"),
                         (8, 2.0))
        rslora = {"r": 16, "lora_alpha": 8, "use_rslora": True}
        self.assertEqual(reference.module_rank_and_scale(rslora, "model.layers.0.self_attn.q_proj"),
                         (16, 2.0))


class SafetensorsTest(unittest.TestCase):
    def test_round_trip_is_exact_in_every_dtype(self):
        values = np.array([[1.0, -2.5, 0.1], [3.0e-3, 65504.0, -0.0]])
        bf16_of_0_1 = np.array([0x3DCD0000], dtype=np.uint32).view(np.float32)[0].item()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "t.safetensors")
            reference.write_safetensors(path, [
                (name, name, values.shape, reference.encode_tensor(values, name))
                for name in ("F32", "F16", "BF16")])
            tensors, _ = reference.read_safetensors(path)
        self.assertEqual(tensors["F32"].tolist(), values.astype(np.float32).tolist())
        self.assertEqual(tensors["F16"].tolist(), values.astype(np.float16).tolist())
        bf16 = tensors["BF16"]
        self.assertEqual(bf16[0, 0].item(), 1.0)
        self.assertEqual(bf16[0, 1].item(), -2.5)
        # 0.1f is 0x3DCCCCCD: rounds up to 0x3DCD.
        self.assertEqual(np.float32(bf16[0, 2].item()).view(np.uint32) >> 16, 0x3DCD)
        self.assertEqual(bf16[0, 2].item(), bf16_of_0_1)

    def test_bf16_rounds_to_nearest_even(self):
        halfway_down = np.array([np.uint32(0x3F808000)], dtype=np.uint32).view(np.float32)
        halfway_up = np.array([np.uint32(0x3F818000)], dtype=np.uint32).view(np.float32)
        self.assertEqual(reference.f32_to_bf16_bits(halfway_down)[0], 0x3F80)
        self.assertEqual(reference.f32_to_bf16_bits(halfway_up)[0], 0x3F82)


class RopeTest(unittest.TestCase):
    def config(self, scaling):
        return reference.ModelConfig({
            "architectures": ["LlamaForCausalLM"], "hidden_size": 48, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 8,
            "rope_theta": 10000.0, "rope_scaling": scaling})

    def test_llama3_keeps_high_divides_low_and_interpolates_between(self):
        plain = reference.rope_inverse_frequencies(self.config(None))
        scaled = reference.rope_inverse_frequencies(self.config(
            {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
             "high_freq_factor": 4.0, "original_max_position_embeddings": 64}))
        wavelen = 2 * math.pi / plain
        for i in range(len(plain)):
            if wavelen[i] < 16:
                self.assertEqual(scaled[i], plain[i])
            elif wavelen[i] > 64:
                self.assertAlmostEqual(scaled[i].item(), plain[i].item() / 8, delta=1e-9)
            else:
                smooth = (64 / wavelen[i] - 1) / 3
                expect = (1 - smooth) * plain[i] / 8 + smooth * plain[i]
                self.assertAlmostEqual(scaled[i].item(), expect.item(), delta=1e-7)
        self.assertEqual(sum(1 for w in wavelen if 16 <= w <= 64), 1)  # the middle band is used

    def test_linear_divides_every_frequency(self):
        plain = reference.rope_inverse_frequencies(self.config(None))
        scaled = reference.rope_inverse_frequencies(self.config({"type": "linear", "factor": 2.0}))
        self.assertTrue(torch.allclose(scaled, plain / 2, rtol=1e-7, atol=0))


def loop_forward(model, token_ids):
    """A second forward pass written position by position and head by head, to catch reshape,
    head-grouping and rotation mistakes in the vectorised one."""
    c, w = model.config, model.weights

    def norm(x, weight):
        return weight * x / math.sqrt(float((x * x).mean()) + c.rms_norm_eps)

    def lin(x, name):
        y = w[name + ".weight"] @ x
        return y + w[name + ".bias"] if name + ".bias" in w else y

    def rotate(x, pos):
        half = c.head_dim // 2
        out = x.clone()
        for i in range(half):
            angle = pos * model.inv_freq[i].item()
            a, b = x[i].item(), x[i + half].item()
            out[i] = a * math.cos(angle) - b * math.sin(angle)
            out[i + half] = b * math.cos(angle) + a * math.sin(angle)
        return out

    group = c.num_heads // c.num_kv_heads
    keys = [[] for _ in range(c.num_layers)]
    values = [[] for _ in range(c.num_layers)]
    logits = []
    for pos, token in enumerate(token_ids):
        h = w["model.embed_tokens.weight"][token].clone()
        for layer in range(c.num_layers):
            p = f"model.layers.{layer}."
            x = norm(h, w[p + "input_layernorm.weight"])
            q = lin(x, p + "self_attn.q_proj")
            k = lin(x, p + "self_attn.k_proj")
            v = lin(x, p + "self_attn.v_proj")
            heads_k, heads_v = [], []
            for g in range(c.num_kv_heads):
                kh = k[g * c.head_dim:(g + 1) * c.head_dim]
                if c.qk_norm:
                    kh = norm(kh, w[p + "self_attn.k_norm.weight"])
                heads_k.append(rotate(kh, pos))
                heads_v.append(v[g * c.head_dim:(g + 1) * c.head_dim])
            keys[layer].append(heads_k)
            values[layer].append(heads_v)
            out = []
            for head in range(c.num_heads):
                qh = q[head * c.head_dim:(head + 1) * c.head_dim]
                if c.qk_norm:
                    qh = norm(qh, w[p + "self_attn.q_norm.weight"])
                qh = rotate(qh, pos)
                kv = head // group
                scores = [float(qh @ keys[layer][t][kv]) / math.sqrt(c.head_dim)
                          for t in range(pos + 1)]
                top = max(scores)
                weights = [math.exp(s - top) for s in scores]
                total = sum(weights)
                out.append(sum(values[layer][t][kv] * (weights[t] / total)
                               for t in range(pos + 1)))
            h = h + lin(torch.cat(out), p + "self_attn.o_proj")
            x = norm(h, w[p + "post_attention_layernorm.weight"])
            gate = lin(x, p + "mlp.gate_proj")
            act = gate / (1 + torch.exp(-gate)) * lin(x, p + "mlp.up_proj")
            h = h + lin(act, p + "mlp.down_proj")
        h = norm(h, w["model.norm.weight"])
        head = w["model.embed_tokens.weight"] if c.tie_word_embeddings else w["lm_head.weight"]
        logits.append(head @ h)
    return torch.stack(logits)


class ForwardTest(unittest.TestCase):
    def test_vectorised_forward_equals_the_loop_forward_on_every_fixture(self):
        self.assertGreaterEqual(len(FIXTURE_NAMES), 5)
        for name in FIXTURE_NAMES:
            model = reference.Model(os.path.join(FIXTURES, name))
            tokens = [5, 77, 3, 200, 41, 9]
            diff = (model.forward(tokens) - loop_forward(model, tokens)).abs().max().item()
            self.assertLess(diff, 1e-10, name)

    def test_lora_equals_merged_weights(self):
        for name in FIXTURE_NAMES:
            model_dir = os.path.join(FIXTURES, name)
            model = reference.Model(model_dir)
            tokens = [11, 12, 13, 200, 7]
            for adapter_name in sorted(os.listdir(os.path.join(model_dir, "adapters"))):
                adapter = reference.LoraAdapter(
                    os.path.join(model_dir, "adapters", adapter_name), model.config)
                with_lora = model.forward(tokens, adapter)
                merged = reference.Model(model_dir)
                for key, (a, b, scale) in adapter.modules.items():
                    merged.weights[key + ".weight"] = (merged.weights[key + ".weight"] +
                                                       scale * (b @ a))
                diff = (with_lora - merged.forward(tokens)).abs().max().item()
                self.assertLess(diff, 1e-9, f"{name}/{adapter_name}")
                effect = (with_lora - model.forward(tokens)).abs().max().item()
                self.assertGreater(effect, 0.1, f"{name}/{adapter_name} changes nothing")

    def test_adapters_target_what_their_configs_say(self):
        model = reference.Model(os.path.join(FIXTURES, FIXTURE_NAMES[0]))
        adapters = os.path.join(FIXTURES, FIXTURE_NAMES[0], "adapters")

        def load(name):
            return reference.LoraAdapter(os.path.join(adapters, name), model.config).modules

        self.assertEqual(len(load("all7_r8")), 14)
        self.assertEqual(sorted(load("mlp_r4_layer1")),
                         ["model.layers.1.mlp.down_proj", "model.layers.1.mlp.gate_proj",
                          "model.layers.1.mlp.up_proj"])
        regex = load("regex_patterns")
        self.assertEqual(sorted(regex), [
            "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
            "model.layers.1.mlp.down_proj", "model.layers.1.self_attn.q_proj",
            "model.layers.1.self_attn.v_proj"])
        ranks = {k: (a.shape[0], scale) for k, (a, _, scale) in regex.items()}
        self.assertEqual(ranks["model.layers.0.self_attn.q_proj"], (16, 1.0))
        self.assertEqual(ranks["model.layers.0.self_attn.v_proj"], (8, 4.0))
        self.assertEqual(ranks["model.layers.1.self_attn.v_proj"], (4, 8.0))
        self.assertEqual(ranks["model.layers.1.mlp.down_proj"], (8, 2.0))
        rslora = load("attn_r16_rslora")
        self.assertEqual(rslora["model.layers.0.self_attn.q_proj"][2], 8 / 4)
        self.assertEqual(rslora["model.layers.0.self_attn.o_proj"][0].shape[0], 4)
        self.assertEqual(rslora["model.layers.0.self_attn.o_proj"][2], 8 / 2)


class GoldenTest(unittest.TestCase):
    def test_committed_goldens_match_a_fresh_computation(self):
        problems = []
        for name in FIXTURE_NAMES:
            problems += reference.check_fixture(os.path.join(FIXTURES, name))
        self.assertEqual(problems, [])


if __name__ == "__main__":
    torch.set_num_threads(1)
    unittest.main()
