#!/usr/bin/python3
"""The engine's logit_bias, min_tokens, repetition / frequency / presence penalties and min_p
against an independent float64 implementation of vLLM's semantics over the reference forward.

Usage: penalties_test.py LORASERVE_BINARY

For every fixture model, with the base and with an adapter, each case runs greedily through
`loraserve generate` (f32 weights) and through the reference: per step, the reference's raw
logits are edited as vLLM's sampler edits them (logit_bias; min_tokens' masks of EOS and
stop_token_ids; repetition penalty over prompt and output tokens; frequency and presence
penalties over output tokens) and the largest wins. Tokens are compared up to the first step
whose edited top-2 gap is below EPSILON (a near tie that float32 rounding may flip, as
DESIGN.md's rule says), or to the end, where both must have stopped for the same reason.
"""

import collections
import json
import math
import os
import subprocess
import sys
import unittest

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
EPSILON = 1e-3  # DESIGN.md: near ties for float32 compute
STEPS = 24
PROMPT = [5, 6, 7, 8, 9, 10, 11, 5, 6, 7, 12, 13]
BINARY = None


def eos_ids(model_dir):
    """The EOS ids the engine uses: generation_config.json's when present, else config.json's."""
    for name in ("generation_config.json", "config.json"):
        path = os.path.join(model_dir, name)
        if os.path.exists(path):
            with open(path) as f:
                eos = json.load(f).get("eos_token_id")
            if eos is not None:
                return eos if isinstance(eos, list) else [eos]
    return []


def edited(logits, params, prompt, output, eos):
    """vLLM's order: allowed_token_ids, logit_bias, min_tokens, repetition, frequency and
    presence."""
    x = logits.clone()
    allowed = params.get("allowed_token_ids")
    if allowed:
        keep = torch.full_like(x, -math.inf)
        keep[allowed] = x[allowed]
        x = keep
    for token, bias in params.get("logit_bias", {}).items():
        x[int(token)] += bias
    if len(output) < params.get("min_tokens", 0):
        masked = set(params.get("stop_token_ids", []))
        if not params.get("ignore_eos", False):
            masked |= set(eos)
        for t in masked:
            x[t] = -math.inf
    rep = params.get("repetition_penalty", 1.0)
    if rep != 1.0:
        for t in set(prompt) | set(output):
            x[t] = x[t] / rep if x[t] > 0 else x[t] * rep
    counts = collections.Counter(output)
    for t, n in counts.items():
        x[t] -= params.get("frequency_penalty", 0.0) * n + params.get("presence_penalty", 0.0)
    return x


def reference_run(model, adapter, params, eos):
    """Greedy tokens, per-step edited top-2 gaps, the finish reason ("eos", "stop", "length")."""
    tokens, out, gaps = list(PROMPT), [], []
    stops = set(params.get("stop_token_ids", []))
    for _ in range(params["max_tokens"]):
        logits = model.forward(tokens, adapter)[-1]
        x = edited(logits, params, PROMPT, out, eos)
        top2 = torch.topk(x, 2).values
        gaps.append(float(top2[0] - top2[1]))
        token = int(torch.argmax(x))
        out.append(token)
        tokens.append(token)
        if token in eos and not params.get("ignore_eos", False):
            return out, gaps, "eos"
        if token in stops:
            return out, gaps, "stop"
    return out, gaps, "length"


def engine_run(model_dir, adapter_dir, requests):
    args = [BINARY, "generate", "--model", model_dir, "--weights-dtype", "f32",
            "--log-level", "error"]
    if adapter_dir:
        args += ["--adapter", f"task={adapter_dir}"]
    lines = []
    for params in requests:
        line = dict(params, prompt_token_ids=PROMPT)
        if adapter_dir:
            line["task"] = "task"
        lines.append(json.dumps(line))
    done = subprocess.run(args, input="\n".join(lines) + "\n", capture_output=True, text=True,
                          timeout=300, check=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def cases(model, eos):
    """Each case's parameters; the tokens to bias are taken from the plain greedy run, so that
    the biases hit tokens the model actually picks."""
    plain, _, _ = reference_run(model, None, {"max_tokens": 8}, eos)
    first, second = plain[0], plain[1]
    common = {"max_tokens": STEPS, "temperature": 0, "ignore_eos": True}
    stop_id = (max(eos) + 1) if eos else 3
    return {
        "repetition_2": dict(common, repetition_penalty=2.0),
        "repetition_0.5": dict(common, repetition_penalty=0.5),
        "frequency_presence": dict(common, frequency_penalty=1.5, presence_penalty=1.0),
        "negative_frequency": dict(common, frequency_penalty=-2.0, presence_penalty=0.5),
        "logit_bias": dict(common, logit_bias={str(first): -100.0, str(second): 3.0,
                                                str(stop_id + 3): -2.5}),
        # EOS pushed up, so the plain run ends at once; min_tokens holds it back, together with
        # a stop token id pushed up as well.
        "min_tokens": {"max_tokens": STEPS, "temperature": 0, "min_tokens": 6,
                       "logit_bias": {str(eos[0]): 30.0, str(stop_id): 25.0},
                       "stop_token_ids": [stop_id]},
        "all_together": {"max_tokens": STEPS, "temperature": 0, "min_tokens": 3,
                         "repetition_penalty": 1.2, "frequency_penalty": 0.3,
                         "presence_penalty": 0.2, "logit_bias": {str(first): -4.0}},
        # Ten tokens allowed, the plain run's first two not among them.
        "allowed": dict(common, repetition_penalty=1.5,
                        allowed_token_ids=[t for t in range(40, 256, 21)
                                           if t not in (first, second)][:10]),
        # min_p 1 keeps only the most likely token: sampling becomes the greedy pick.
        "min_p_1_sampled": dict(common, temperature=1.0, seed=7, min_p=1.0,
                                repetition_penalty=1.25),
    }


class PenaltiesMatchTheReference(unittest.TestCase):
    def check_model(self, name):
        model_dir = os.path.join(FIXTURES, name)
        model = reference.Model(model_dir)
        eos = eos_ids(model_dir)
        changed = {}
        for adapter_name in (None, "all7_r8"):
            adapter_dir = os.path.join(model_dir, "adapters", adapter_name) if adapter_name \
                else None
            adapter = reference.LoraAdapter(adapter_dir, model.config) if adapter_dir else None
            plain, _, _ = reference_run(model, adapter,
                                        {"max_tokens": STEPS, "ignore_eos": True}, eos)
            named = cases(model, eos)
            results = engine_run(model_dir, adapter_dir, list(named.values()))
            self.assertEqual(len(results), len(named))
            compared = total = 0
            for (case, params), got in zip(named.items(), results):
                where = f"{name} {adapter_name or 'base'} {case}"
                self.assertNotIn("error", got, where)
                want, gaps, finish = reference_run(model, adapter, params, eos)
                changed[case] = changed.get(case, False) or want != plain[:len(want)]
                tokens = got["token_ids"]
                n = next((i for i, g in enumerate(gaps) if g < EPSILON), len(gaps))
                self.assertEqual(tokens[:n], want[:n], f"{where}: tokens differ")
                if n == len(gaps):
                    self.assertEqual(len(tokens), len(want), where)
                    self.assertEqual(got["finish_reason"], finish, where)
                if "allowed_token_ids" in params:
                    self.assertTrue(set(tokens) <= set(params["allowed_token_ids"]), where)
                if case == "min_tokens":
                    self.assertGreaterEqual(len(want), 7, where)  # 6 held back, then the stop
                    self.assertEqual(n, len(gaps), where)
                compared += n
                total += len(want)
            # Near ties are rare: nearly every token was compared.
            self.assertGreaterEqual(compared, 0.8 * total, f"{name}: {compared}/{total}")
        # Each case changes the plain greedy continuation (of the base or the adapter), or it
        # would test nothing.
        self.assertEqual([c for c, v in changed.items() if not v], [], f"{name}: no effect")

    def test_llama_mha_f32(self):
        self.check_model("llama_mha_f32")

    def test_llama_bias_linrope_f32(self):
        self.check_model("llama_bias_linrope_f32")

    def test_qwen3_headdim_bf16(self):
        self.check_model("qwen3_headdim_bf16")

    def test_qwen2_sharded_f16(self):
        self.check_model("qwen2_sharded_f16")


if __name__ == "__main__":
    BINARY = sys.argv.pop(1)
    torch.set_num_threads(1)
    unittest.main()
