#!/usr/bin/python3
"""Trains the demo model shipped in models/demo: a small Llama base model and LoRA task adapters.

Runs on CPU with Debian's python3-torch (no transformers, no peft), seeded and reproducible:

    /usr/bin/python3 tools/train_demo.py --out models/demo

1. Builds a byte-level BPE tokenizer (GPT-2 byte alphabet, a few merges for the prompt words only,
   so every letter and digit is its own token) and writes it as a Hugging Face tokenizer.json.
2. Pretrains a LlamaForCausalLM (RMSNorm, rotate-half RoPE, GQA, SiLU MLP; the module below
   computes what Hugging Face's LlamaForCausalLM computes) on a mixture of short strings: word
   lists, alphabet runs, repeated lines and an echo instruction ("Input: w\\nOutput: w"). None of
   it contains a task's answer, so the base model alone fails every task.
3. Rounds the base to bf16 (what ships), then trains one LoRA adapter per task on the frozen
   base, loss on the answer and eos only.
4. Evaluates greedy decoding (fp32 compute from the shipped weights) on 200 held-out inputs per
   task that no training step saw: own adapter, base alone, every other adapter. Writes the
   results to <out>/eval/ for the C++ engine's tests.
"""
import argparse
import json
import math
import os
import random
import re
import struct
import time

import torch
import torch.nn.functional as F
from torch import nn

SEED = 1234
PROMPT = "Input: {}\nOutput: "
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
# The chat template shipped in tokenizer_config.json: each user turn is a prompt of PROMPT's
# format (BOS, "Input: " and the text), each assistant turn its answer and EOS, and the
# generation prompt is "Output: ", so [user "hello"] renders to BOS + PROMPT.format("hello").
# Content may be a string or a list of text parts; other roles are refused.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set text = message['content'] %}"
    "{% else %}{% set text = message['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + 'Input: ' + text + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Output: ' + text + eos_token }}"
    "{% else %}{{ raise_exception('The demo model has user and assistant turns only, not ' ~"
    " message['role']) }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Output: ' }}{% endif %}")
# Merges for the prompt words only; letters and digits in inputs and answers stay single tokens.
MERGES = [("I", "n"), ("In", "p"), ("Inp", "u"), ("Inpu", "t"),
          ("O", "u"), ("Ou", "t"), ("Out", "p"), ("Outp", "u"), ("Outpu", "t")]
MIN_WORD, MAX_WORD = 3, 8  # task inputs: lowercase a-z strings of these lengths
MAX_NEW_TOKENS = 16        # greedy decoding stops at eos or after this many tokens
EVAL_COUNT = 200
BATCH = 32                 # sequences per training step, base and adapters

BASE_CONFIG = dict(hidden_size=192, intermediate_size=512, num_hidden_layers=4,
                   num_attention_heads=6, num_key_value_heads=2, head_dim=32,
                   rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=128)


def caesar3(word):
    return "".join(chr((ord(c) - ord("a") + 3) % 26 + ord("a")) for c in word)


# name -> answer function and LoRA settings. Ranks, target sets, rsLoRA and file dtypes differ on
# purpose, so that the engine serves a realistic mix.
ALL_PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TASKS = {
    "reverse": dict(fn=lambda w: w[::-1], r=24, alpha=48, rslora=False, dtype="F32",
                    targets=ALL_PROJ, steps=550, lr=3e-3),
    "sort": dict(fn=lambda w: "".join(sorted(w)), r=32, alpha=16, rslora=True, dtype="F32",
                 targets=ALL_PROJ, steps=2200, lr=3e-3),
    "uppercase": dict(fn=str.upper, r=8, alpha=16, rslora=False, dtype="BF16",
                      targets=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
                      steps=400, lr=3e-3),
    "caesar": dict(fn=caesar3, r=16, alpha=32, rslora=False, dtype="BF16", targets=ALL_PROJ,
                   steps=300, lr=3e-3),
}


# ---------------------------------------------------------------------------------------------
# Tokenizer: byte-level BPE as Hugging Face tokenizers computes it (ASCII text only here).
# ---------------------------------------------------------------------------------------------
def bytes_to_unicode():
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) +
          list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


# GPT-2's pre-tokenizer pattern with \p{L} and \p{N} restricted to ASCII (inputs are ASCII).
PRETOKENIZE = re.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")


class Tokenizer:
    """Byte-level BPE tokenizer: ids 0-255 are bytes, then merged tokens, then special tokens."""

    def __init__(self):
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.vocab = {self.byte_encoder[b]: b for b in range(256)}
        for a, b in MERGES:
            self.vocab[a + b] = len(self.vocab)
        self.merge_rank = {pair: i for i, pair in enumerate(MERGES)}
        self.bos_id, self.eos_id, self.pad_id = (len(self.vocab) + i for i in range(3))
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.vocab_size = len(self.vocab) + 3

    def _bpe(self, symbols):
        while len(symbols) > 1:
            pairs = [(self.merge_rank.get(p, len(MERGES)), i)
                     for i, p in enumerate(zip(symbols, symbols[1:]))]
            rank, i = min(pairs)
            if rank == len(MERGES):
                break
            symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2:]
        return symbols

    def encode(self, text, add_bos=True):
        if not text.isascii() or any(s in text for s in (BOS, EOS, PAD)):
            raise ValueError(f"demo tokenizer encodes plain ASCII only: {text!r}")
        ids = [self.bos_id] if add_bos else []
        for piece in PRETOKENIZE.findall(text):
            mapped = [self.byte_encoder[b] for b in piece.encode("ascii")]
            ids += [self.vocab[s] for s in self._bpe(mapped)]
        return ids

    def decode(self, ids):
        text = "".join(self.id_to_token[i] for i in ids if i < len(self.vocab))
        return bytes(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace")

    def tokenizer_json(self):
        special = [dict(id=i, content=c, single_word=False, lstrip=False, rstrip=False,
                        normalized=False, special=True)
                   for i, c in ((self.bos_id, BOS), (self.eos_id, EOS), (self.pad_id, PAD))]
        byte_level = dict(type="ByteLevel", add_prefix_space=False, trim_offsets=True,
                          use_regex=True)
        bos_piece = {"SpecialToken": {"id": BOS, "type_id": 0}}
        return {
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": special,
            "normalizer": None, "pre_tokenizer": byte_level,
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [bos_piece, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [bos_piece, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": BOS, "type_id": 1}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {BOS: {"id": BOS, "ids": [self.bos_id], "tokens": [BOS]}},
            },
            "decoder": byte_level,
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": self.vocab, "merges": [f"{a} {b}" for a, b in MERGES]},
        }

    def tokenizer_config_json(self):
        decoder = {str(i): dict(content=c, lstrip=False, normalized=False, rstrip=False,
                                single_word=False, special=True)
                   for i, c in ((self.bos_id, BOS), (self.eos_id, EOS), (self.pad_id, PAD))}
        return dict(tokenizer_class="PreTrainedTokenizerFast", bos_token=BOS, eos_token=EOS,
                    pad_token=PAD, add_bos_token=True, add_eos_token=False,
                    clean_up_tokenization_spaces=False,
                    model_max_length=BASE_CONFIG["max_position_embeddings"],
                    added_tokens_decoder=decoder, chat_template=CHAT_TEMPLATE)


# ---------------------------------------------------------------------------------------------
# Model: Hugging Face LlamaForCausalLM semantics, parameter names as in its state_dict.
# ---------------------------------------------------------------------------------------------
class LoraLinear(nn.Linear):
    """A bias-free projection; when `lora` is set to (A, B, scale) it adds scale * B(A(x)) as
    PEFT's LoRA layer does (dropout 0)."""

    def __init__(self, n_in, n_out):
        super().__init__(n_in, n_out, bias=False)
        self.lora = None

    def forward(self, x):
        y = F.linear(x, self.weight)
        if self.lora is not None:
            a, b, scale = self.lora
            y = y + F.linear(F.linear(x, a), b) * scale
        return y


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n_heads, self.n_kv, self.hd = (c["num_attention_heads"], c["num_key_value_heads"],
                                            c["head_dim"])
        d = c["hidden_size"]
        self.q_proj = LoraLinear(d, self.n_heads * self.hd)
        self.k_proj = LoraLinear(d, self.n_kv * self.hd)
        self.v_proj = LoraLinear(d, self.n_kv * self.hd)
        self.o_proj = LoraLinear(self.n_heads * self.hd, d)

    def forward(self, x, cos, sin, cache):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            if "k" in cache:
                k = torch.cat((cache["k"], k), dim=2)
                v = torch.cat((cache["v"], v), dim=2)
            cache["k"], cache["v"] = k, v
        rep = self.n_heads // self.n_kv  # q head h reads kv head h // rep (HF's repeat_kv)
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.hd)
        total = k.shape[2]
        mask = torch.ones(t, total, dtype=torch.bool).triu(total - t + 1)
        probs = scores.masked_fill(mask, float("-inf")).softmax(dim=-1)
        return self.o_proj((probs @ v).transpose(1, 2).reshape(b, t, -1))


class Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, f = c["hidden_size"], c["intermediate_size"]
        self.gate_proj, self.up_proj, self.down_proj = (LoraLinear(d, f), LoraLinear(d, f),
                                                        LoraLinear(f, d))

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = Attention(c)
        self.mlp = Mlp(c)
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])

    def forward(self, h, cos, sin, cache):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaBody(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class Llama(nn.Module):
    """LlamaForCausalLM (untied lm_head). forward(ids, start, caches) -> logits; `caches` (one
    dict per layer) holds keys and values of earlier positions during decoding."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = LlamaBody(c)
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        hd = c["head_dim"]
        self.inv_freq = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                continue
            nn.init.normal_(p, std=0.02)

    def forward(self, ids, start=0, caches=None):
        positions = torch.arange(start, start + ids.shape[1], dtype=torch.float32)
        freqs = positions[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        h = self.model.embed_tokens(ids)
        for i, layer in enumerate(self.model.layers):
            h = layer(h, cos, sin, None if caches is None else caches[i])
        return self.lm_head(self.model.norm(h))

    def lora_targets(self, targets):
        """Yields (module path, module) for every projection named in `targets`."""
        for name, module in self.named_modules():
            if isinstance(module, LoraLinear) and name.rsplit(".", 1)[-1] in targets:
                yield name, module


class Adapter:
    """One task's LoRA weights: {module path: (A (r, in), B (out, r))}, and its scale."""

    def __init__(self, model, task, spec, gen):
        self.task, self.spec = task, spec
        self.scale = spec["alpha"] / (math.sqrt(spec["r"]) if spec["rslora"] else spec["r"])
        self.weights = {}
        for name, m in model.lora_targets(spec["targets"]):
            a = torch.empty(spec["r"], m.in_features)
            bound = 1.0 / math.sqrt(m.in_features)  # PEFT: kaiming_uniform_(a=sqrt(5))
            a.uniform_(-bound, bound, generator=gen)
            self.weights[name] = (nn.Parameter(a), nn.Parameter(torch.zeros(m.out_features,
                                                                             spec["r"])))

    def parameters(self):
        return [p for pair in self.weights.values() for p in pair]

    def attach(self, model):
        modules = dict(model.named_modules())
        for name, (a, b) in self.weights.items():
            modules[name].lora = (a, b, self.scale)


def detach_all(model):
    for m in model.modules():
        if isinstance(m, LoraLinear):
            m.lora = None


def round_to_bf16_(params):
    with torch.no_grad():
        for p in params:
            p.copy_(p.to(torch.bfloat16).float())


# ---------------------------------------------------------------------------------------------
# Data: random lowercase strings; held-out task inputs never appear in any training text.
# ---------------------------------------------------------------------------------------------
LETTERS = "abcdefghijklmnopqrstuvwxyz"


class Corpus:
    """Draws training text. `heldout` holds every evaluation input; no drawn word is one of them."""

    def __init__(self, heldout):
        self.heldout = heldout

    def word(self, rng, lo=MIN_WORD, hi=MAX_WORD):
        while True:
            w = "".join(rng.choice(LETTERS) for _ in range(rng.randint(lo, hi)))
            if w not in self.heldout:
                return w

    def styled_word(self, rng):
        r = rng.random()
        if r < 0.1:
            return str(rng.randint(0, 9999))
        w = self.word(rng, 1, 8)
        return w.upper() if r < 0.2 else w.capitalize() if r < 0.35 else w

    def pretrain_text(self, rng):
        """One document of the base model's mixture (no task's transformation appears)."""
        r = rng.random()
        if r < 0.35:  # echo in the prompt format: the answer repeats the input unchanged
            w = self.word(rng, 1, 10)
            return PROMPT.format(w) + w
        if r < 0.6:  # a repeated line
            line = " ".join(self.styled_word(rng) for _ in range(rng.randint(1, 3)))
            return line + "\n" + line
        if r < 0.85:  # a line of words
            line = " ".join(self.styled_word(rng) for _ in range(rng.randint(2, 6)))
            return line + rng.choice(["", ".", ",", "!"])
        runs = []  # alphabet and digit runs
        for _ in range(rng.randint(1, 3)):
            alphabet = rng.choice([LETTERS, LETTERS.upper(), "0123456789"])
            start = rng.randrange(len(alphabet) - 2)
            runs.append(alphabet[start:start + rng.randint(3, 12)])
        return " ".join(runs)


def draw_heldout(task, taken):
    """EVAL_COUNT distinct inputs for `task`, disjoint from `taken` (other tasks' sets)."""
    rng = random.Random(f"{SEED}-heldout-{task}")
    words = []
    while len(words) < EVAL_COUNT:
        w = "".join(rng.choice(LETTERS) for _ in range(rng.randint(MIN_WORD, MAX_WORD)))
        if w not in taken:
            taken.add(w)
            words.append(w)
    return words


def pad_batch(seqs, masks, pad_id):
    """Right-pads token lists; returns (inputs, targets) with -100 where no loss is taken."""
    width = max(len(s) for s in seqs) - 1
    inputs = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    targets = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, (s, m) in enumerate(zip(seqs, masks)):
        inputs[i, :len(s) - 1] = torch.tensor(s[:-1])
        targets[i, :len(s) - 1] = torch.tensor([t if keep else -100
                                                for t, keep in zip(s[1:], m[1:])])
    return inputs, targets


def task_example(tok, task, word):
    prompt = tok.encode(PROMPT.format(word))
    answer = tok.encode(TASKS[task]["fn"](word), add_bos=False) + [tok.eos_id]
    return prompt + answer, [False] * len(prompt) + [True] * len(answer)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def batches(draw, batch, pad_id, rng):
    """Endless padded batches of `draw()` examples; 8 batches at a time are cut from examples
    sorted by length, so that little compute goes to padding."""
    while True:
        pool = sorted((draw() for _ in range(8 * batch)), key=lambda e: len(e[0]))
        chunks = [pool[i:i + batch] for i in range(0, len(pool), batch)]
        rng.shuffle(chunks)
        for chunk in chunks:
            yield pad_batch(*zip(*chunk), pad_id)


def train(model, groups, stream, steps, lr, label, log):
    """AdamW with linear warmup and cosine decay to 10%; logs the mean loss every 100 steps."""
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))
    warmup = min(50, steps // 10)
    started, running = time.time(), []
    for step in range(steps):
        frac = (step + 1) / warmup if step < warmup else 0.1 + 0.45 * (
            1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        for g in opt.param_groups:
            g["lr"] = lr * frac
        inputs, targets = next(stream)
        logits = model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        running.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == steps:
            line = (f"{label} step {step + 1}/{steps} loss {sum(running) / len(running):.4f} "
                    f"({time.time() - started:.0f}s)")
            print(line, flush=True)
            log.append(line)
            running = []


def pretrain(model, tok, corpus, steps, batch, log):
    rng = random.Random(f"{SEED}-pretrain")
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() != 2]

    def draw():
        seq = tok.encode(corpus.pretrain_text(rng)) + [tok.eos_id]
        return seq, [True] * len(seq)

    train(model, [dict(params=decay, weight_decay=0.1), dict(params=no_decay, weight_decay=0.0)],
          batches(draw, batch, tok.pad_id, rng), steps, 1e-3, "base", log)


def train_adapter(model, tok, corpus, task, steps, batch, lr, log):
    gen = torch.Generator().manual_seed(SEED + sum(map(ord, task)))
    adapter = Adapter(model, task, TASKS[task], gen)
    rng = random.Random(f"{SEED}-lora-{task}")

    def draw():
        return task_example(tok, task, corpus.word(rng))

    adapter.attach(model)
    train(model, [dict(params=adapter.parameters(), weight_decay=0.0)],
          batches(draw, batch, tok.pad_id, rng), steps, lr, task, log)
    detach_all(model)
    if TASKS[task]["dtype"] == "BF16":
        round_to_bf16_(adapter.parameters())
    return adapter


# ---------------------------------------------------------------------------------------------
# Files: safetensors, Hugging Face model folder, PEFT adapter folders.
# ---------------------------------------------------------------------------------------------
def write_safetensors(path, tensors, dtype):
    """Writes {name: float tensor} as `dtype` ("BF16" or "F32"), names sorted, header 8-aligned."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        raw = (t.to(torch.bfloat16).view(torch.int16) if dtype == "BF16" else t.float()).numpy()
        blob = raw.astype(raw.dtype.newbyteorder("<")).tobytes()
        header[name] = dict(dtype=dtype, shape=list(t.shape), data_offsets=[offset,
                                                                           offset + len(blob)])
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = (8 + n + o for o in info["data_offsets"])
        raw = bytearray(data[start:end])
        if info["dtype"] == "BF16":
            t = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16).float()
        else:
            t = torch.frombuffer(raw, dtype=torch.float32).clone()
        out[name] = t.reshape(info["shape"])
    return out


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def model_config(tok):
    return dict(BASE_CONFIG, vocab_size=tok.vocab_size)


def write_base(out, model, tok):
    c = model.c
    write_json(f"{out}/config.json", {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": c["hidden_size"], "intermediate_size": c["intermediate_size"],
        "num_hidden_layers": c["num_hidden_layers"],
        "num_attention_heads": c["num_attention_heads"],
        "num_key_value_heads": c["num_key_value_heads"], "head_dim": c["head_dim"],
        "hidden_act": "silu", "max_position_embeddings": c["max_position_embeddings"],
        "rms_norm_eps": c["rms_norm_eps"], "rope_theta": c["rope_theta"], "rope_scaling": None,
        "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False,
        "initializer_range": 0.02, "pretraining_tp": 1, "tie_word_embeddings": False,
        "vocab_size": c["vocab_size"], "bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id,
        "pad_token_id": tok.pad_id, "torch_dtype": "bfloat16", "use_cache": True,
        "transformers_version": "4.44.2"})
    write_json(f"{out}/generation_config.json", {
        "bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id,
        "do_sample": False, "max_new_tokens": MAX_NEW_TOKENS, "transformers_version": "4.44.2"})
    write_json(f"{out}/tokenizer.json", tok.tokenizer_json())
    write_json(f"{out}/tokenizer_config.json", tok.tokenizer_config_json())
    write_json(f"{out}/special_tokens_map.json",
               dict(bos_token=BOS, eos_token=EOS, pad_token=PAD))
    write_safetensors(f"{out}/model.safetensors", model.state_dict(), "BF16")


def write_adapter(out, adapter):
    spec, folder = adapter.spec, f"{out}/adapters/{adapter.task}"
    os.makedirs(folder, exist_ok=True)
    write_json(f"{folder}/adapter_config.json", {
        "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": "models/demo",
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
        "init_lora_weights": True, "layer_replication": None, "layers_pattern": None,
        "layers_to_transform": None, "loftq_config": {}, "lora_alpha": spec["alpha"],
        "lora_dropout": 0.0, "megatron_config": None, "megatron_core": "megatron.core",
        "modules_to_save": None, "peft_type": "LORA", "r": spec["r"], "rank_pattern": {},
        "revision": None, "target_modules": spec["targets"], "task_type": "CAUSAL_LM",
        "use_dora": False, "use_rslora": spec["rslora"]})
    tensors = {}
    for name, (a, b) in adapter.weights.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = a
        tensors[f"base_model.model.{name}.lora_B.weight"] = b
    write_safetensors(f"{folder}/adapter_model.safetensors", tensors, spec["dtype"])


def load_base(out, tok):
    """The shipped base model, bf16 values in fp32 tensors."""
    with open(f"{out}/config.json") as f:
        c = json.load(f)
    model = Llama({k: c[k] for k in model_config(tok)})
    model.load_state_dict(read_safetensors(f"{out}/model.safetensors"))
    model.requires_grad_(False)
    return model


def load_adapter(out, model, task):
    """A shipped adapter folder as an Adapter (tensor names and config as PEFT writes them)."""
    folder = f"{out}/adapters/{task}"
    with open(f"{folder}/adapter_config.json") as f:
        cfg = json.load(f)
    spec = dict(TASKS[task], r=cfg["r"], alpha=cfg["lora_alpha"], rslora=cfg["use_rslora"],
                targets=cfg["target_modules"])
    adapter = Adapter(model, task, spec, torch.Generator().manual_seed(0))
    tensors = read_safetensors(f"{folder}/adapter_model.safetensors")
    if len(tensors) != 2 * len(adapter.weights):
        raise ValueError(f"{folder}: {len(tensors)} tensors, expected {2 * len(adapter.weights)}")
    for name in adapter.weights:
        prefix = f"base_model.model.{name}"
        adapter.weights[name] = (tensors[f"{prefix}.lora_A.weight"],
                                 tensors[f"{prefix}.lora_B.weight"])
    return adapter


# ---------------------------------------------------------------------------------------------
# Evaluation: greedy decoding with a KV cache, prompts of equal length batched together.
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def greedy(model, prompts, eos_id):
    """For each prompt (token ids): generated ids (through eos when emitted, at most
    MAX_NEW_TOKENS), each token's log-probability and the top-2 log-probability gap."""
    results = [None] * len(prompts)
    by_len = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    for length, rows in by_len.items():
        caches = [{} for _ in model.model.layers]
        logits = model(torch.tensor([prompts[i] for i in rows]), 0, caches)[:, -1]
        outs = [dict(ids=[], logprobs=[], gaps=[]) for _ in rows]
        done = [False] * len(rows)
        for step in range(MAX_NEW_TOKENS):
            logp = torch.log_softmax(logits, dim=-1)
            top = logp.topk(2, dim=-1)
            for j, o in enumerate(outs):
                if not done[j]:
                    tid = int(top.indices[j, 0])
                    o["ids"].append(tid)
                    o["logprobs"].append(round(float(top.values[j, 0]), 6))
                    o["gaps"].append(round(float(top.values[j, 0] - top.values[j, 1]), 6))
                    done[j] = tid == eos_id
            if all(done):
                break
            logits = model(top.indices[:, :1], length + step, caches)[:, -1]
        for j, i in enumerate(rows):
            results[i] = outs[j]
    return results


def answer_of(tok, ids):
    """The decoded answer, or None when the model never emitted eos."""
    return tok.decode(ids[:-1]) if ids and ids[-1] == tok.eos_id else None


def evaluate(out, tok, heldout):
    """Writes eval/<task>.jsonl and returns exact-match accuracies: own adapter, base alone,
    base echoing the input (what it was trained to do), cross[adapter][task]."""
    model = load_base(out, tok)
    adapters = {t: load_adapter(out, model, t) for t in TASKS}
    os.makedirs(f"{out}/eval", exist_ok=True)
    summary = dict(own={}, base={}, base_echo={}, cross={a: {} for a in TASKS})
    for task, words in heldout.items():
        prompts = [tok.encode(PROMPT.format(w)) for w in words]
        expected = [TASKS[task]["fn"](w) for w in words]

        def accuracy(runs, answers=expected):
            return sum(answer_of(tok, r["ids"]) == e for r, e in zip(runs, answers)) / len(words)

        base_runs = greedy(model, prompts, tok.eos_id)
        summary["base"][task] = accuracy(base_runs)
        summary["base_echo"][task] = accuracy(base_runs, words)
        for name, adapter in adapters.items():
            adapter.attach(model)
            runs = greedy(model, prompts, tok.eos_id)
            detach_all(model)
            summary["cross"][name][task] = accuracy(runs)
            if name == task:
                own = runs
        summary["own"][task] = summary["cross"][task][task]
        with open(f"{out}/eval/{task}.jsonl", "w") as f:
            for w, p, e, r in zip(words, prompts, expected, own):
                f.write(json.dumps({
                    "input": w, "prompt": PROMPT.format(w), "prompt_token_ids": p,
                    "expected": e, "torch_output_ids": r["ids"],
                    "torch_output": tok.decode([i for i in r["ids"] if i != tok.eos_id]),
                    "correct": answer_of(tok, r["ids"]) == e,
                    "torch_output_logprobs": r["logprobs"], "torch_top2_gaps": r["gaps"]}) + "\n")
    return summary


def parameter_count(tensors):
    return sum(t.numel() for t in tensors)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="models/demo", help="model folder to write")
    ap.add_argument("--base-steps", type=int, default=800)
    ap.add_argument("--lora-steps", type=int, default=None,
                    help="steps per adapter (default: each task's own count)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; results are the same for 1 or 2, but on a machine "
                         "shared with compilers 2 threads ran up to 20x slower than 1")
    ap.add_argument("--eval-only", action="store_true",
                    help="re-evaluate the folder's shipped files without training")
    args = ap.parse_args()
    torch.set_flush_denormal(True)  # denormals slow CPU float math by 10-100x
    torch.set_num_threads(args.threads)
    tok = Tokenizer()
    taken = set()
    heldout = {t: draw_heldout(t, taken) for t in TASKS}
    corpus = Corpus(taken)
    summary_path = f"{args.out}/eval/summary.json"
    if args.eval_only:
        with open(summary_path) as f:
            training = json.load(f)["training"]
    else:
        started, log = time.time(), []
        os.makedirs(args.out, exist_ok=True)
        torch.manual_seed(SEED)
        model = Llama(model_config(tok))
        pretrain(model, tok, corpus, args.base_steps, BATCH, log)
        round_to_bf16_(model.parameters())
        model.requires_grad_(False)
        write_base(args.out, model, tok)
        for task, spec in TASKS.items():
            adapter = train_adapter(model, tok, corpus, task, args.lora_steps or spec["steps"],
                                    BATCH, spec["lr"], log)
            write_adapter(args.out, adapter)
        training = dict(seconds=round(time.time() - started), base_steps=args.base_steps,
                        threads=torch.get_num_threads(), torch=torch.__version__, log=log)
    model = load_base(args.out, tok)
    counts = dict(base=parameter_count(model.state_dict().values()),
                  adapters={t: parameter_count(read_safetensors(
                      f"{args.out}/adapters/{t}/adapter_model.safetensors").values())
                      for t in TASKS})
    started = time.time()
    summary = evaluate(args.out, tok, heldout)
    summary.update(parameters=counts, training=training, max_new_tokens=MAX_NEW_TOKENS,
                   eval_seconds=round(time.time() - started))
    write_json(summary_path, summary)
    print("task        own    base   cross(max)")
    for t in TASKS:
        cross = max(summary["cross"][a][t] for a in TASKS if a != t)
        print(f"{t:10s} {summary['own'][t]:6.3f} {summary['base'][t]:6.3f} {cross:6.3f}")


if __name__ == "__main__":
    main()
