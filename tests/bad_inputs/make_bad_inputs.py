#!/usr/bin/env python3
"""Writes the bad-file corpus: malformed files of every format the server reads, one file per
case, each a near-valid file broken in one way, and expected.json with what reading each must
give (the exact status code and words the message must hold: the file and the field).

    tests/bad_inputs/make_bad_inputs.py   # from the source root; rewrites tests/bad_inputs/

Folders (each names the file its cases stand in for):
  adapter_config/      adapter_config.json of the fixture adapter llama_mha_f32/adapters/mlp_r4_layer1
  adapter_model/       adapter_model.safetensors of the same adapter
  config/              config.json of the fixture model llama_mha_f32
  generation_config/   generation_config.json of the same model
  model_safetensors/   model.safetensors of the same model
  index/               model.safetensors.index.json (the weights renamed model-00001-of-00001.safetensors)
  tokenizer/           tokenizer.json of the same model
  serve_config/        the file given to `loraserve serve --config`
  tokenizer_config/    tokenizer_config.json of the same model (its chat template)
Cases that are large or special (FIFOs, devices, links out of the root, sparse files, a million
levels of nesting) are made at test time by tests/bad_inputs/bad_inputs.cpp.
"""

import copy
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "..", "reference", "fixtures", "llama_mha_f32")
ADAPTER = os.path.join(FIXTURE, "adapters", "mlp_r4_layer1")

INVALID = "INVALID_ARGUMENT"
NOT_FOUND = "NOT_FOUND"

cases = {}  # "folder/name" -> {"code": ..., "contains": [...]}


def add(folder, name, content, code, contains):
    path = os.path.join(HERE, folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    with open(path, "wb") as f:
        f.write(content)
    cases[f"{folder}/{name}"] = {"code": code, "contains": contains}


def dumps(obj):
    return json.dumps(obj, indent=1, ensure_ascii=False)


def nested(levels, inner="1"):
    return "[" * levels + inner + "]" * levels


# ----------------------------------------------------------------------------------------------
# adapter_config.json
base_config = json.load(open(os.path.join(ADAPTER, "adapter_config.json")))
base_text = dumps(base_config)


def config_with(**changes):
    c = copy.deepcopy(base_config)
    for k, v in changes.items():
        if v is DELETE:
            c.pop(k, None)
        else:
            c[k] = v
    return dumps(c)


DELETE = object()
F = "adapter_config.json"


def ac(name, content, contains, code=INVALID):
    add("adapter_config", name + ".json", content, code, [F] + contains)


ac("not_json", "{not json", ["not valid JSON", "line 1"])
ac("empty", "", ["not valid JSON"])
ac("array_top", "[1, 2]", ["not a JSON object"])
ac("string_top", '"LORA"', ["not a JSON object"])
ac("truncated", base_text[: len(base_text) // 2], ["not valid JSON"])
ac("trailing_garbage", base_text + "\n}xyz", ["not valid JSON"])
ac("comment", "// saved by peft\n" + base_text, ["not valid JSON"])
ac("invalid_utf8", base_text.replace('"llama_mha_f32"', '"llama\\u00e9"').encode().replace(b"\\u00e9", b"\xff\xfe"), ["not valid JSON", "UTF-8"])
ac("nan_literal", config_with(lora_alpha=0).replace('"lora_alpha": 0', '"lora_alpha": NaN'), ["not valid JSON"])
ac("alpha_overflow_literal", config_with(lora_alpha=0).replace('"lora_alpha": 0', '"lora_alpha": 1e999'), ["not valid JSON", "overflow"])
ac("deep_nesting", config_with(auto_mapping=json.loads(nested(100))), ["deeper than 64 levels", "--max-json-depth"])
ac("peft_type_missing", config_with(peft_type=DELETE), ["peft_type"])
ac("peft_type_prefix", config_with(peft_type="PREFIX_TUNING"), ["peft_type", "PREFIX_TUNING", "not supported"])
ac("peft_type_lowercase", config_with(peft_type="lora"), ["peft_type", "'lora'"])
ac("peft_type_number", config_with(peft_type=7), ["peft_type"])
ac("peft_type_long", config_with(peft_type="X" * 20000), ["peft_type", "(20000 bytes)"])
ac("r_missing", config_with(r=DELETE), ["'r'"])
ac("r_zero", config_with(r=0), ["r must be positive"])
ac("r_negative", config_with(r=-4), ["r must be positive", "-4"])
ac("r_float", config_with(r=4.5), ["r must be positive", "4.5"])
ac("r_string", config_with(r="4"), ["r must be positive", '"4"'])
ac("r_bool", config_with(r=True), ["r must be positive"])
ac("r_wraps_to_4", config_with(r=2**32 + 4), ["r must be positive", "4294967300"])
ac("r_huge_float", config_with(r=1e30), ["r must be positive"])
ac("r_above_int64", config_with(r=2**64 - 1), ["r must be positive"])
ac("r_mismatch", config_with(r=8), ["gives r = 8"])
ac("alpha_string", config_with(lora_alpha="16"), ["lora_alpha must be a finite number"])
ac("alpha_1e300", config_with(lora_alpha=1e300), ["alpha 1e+300", "beyond the float range"])
ac("alpha_minus_1e40", config_with(lora_alpha=-1e40), ["beyond the float range"])
ac("rslora_string", config_with(use_rslora="yes"), ["use_rslora"])
ac("targets_missing", config_with(target_modules=DELETE), ["target_modules is missing or empty"])
ac("targets_empty", config_with(target_modules=[]), ["target_modules is missing or empty"])
ac("targets_number", config_with(target_modules=5), ["target_modules", "must be a list"])
ac("targets_holds_number", config_with(target_modules=["up_proj", 1]), ["target_modules", "holds 1"])
ac("targets_bad_regex", config_with(target_modules="(unclosed"), ["target_modules: invalid regular expression"])
ac("targets_regex_no_match", config_with(target_modules=".*\\.c_attn"), ["matches no module"])
ac("targets_regex_backtracks", config_with(target_modules="(.*)*\\d"), ["target_modules", "match limit"])
ac("targets_regex_lm_head", config_with(target_modules=".*"), ["target_modules matches lm_head"])
ac("targets_unknown_module", config_with(target_modules=["c_attn"]), ["target module 'c_attn' does not exist"])
ac("targets_lm_head", config_with(target_modules=["up_proj", "lm_head"]), ["lm_head", "not supported"])
ac("targets_embed_tokens", config_with(target_modules=["embed_tokens"]), ["embed_tokens", "not supported"])
ac("targets_too_many", config_with(target_modules=[f"m{i}" for i in range(5000)]), ["target_modules", "5000 entries", "at most 4096"])
ac("targets_long_name", config_with(target_modules=["up_proj", "z" * 30000]), ["does not exist", "(30000 bytes)"])
ac("exclude_bad_regex", config_with(exclude_modules="[z-a]"), ["exclude_modules: invalid regular expression"])
ac("exclude_number", config_with(exclude_modules=3), ["exclude_modules"])
ac("rank_pattern_list", config_with(rank_pattern=[1]), ["rank_pattern", "must be an object"])
ac("rank_pattern_bad_regex", config_with(rank_pattern={"(": 4}), ["rank_pattern['(']: invalid regular expression"])
ac("rank_pattern_long_bad_regex", config_with(rank_pattern={"(" + "a" * 50000: 4}), ["rank_pattern[", "(50001 bytes)", "invalid regular expression"])
ac("rank_pattern_zero", config_with(rank_pattern={"up_proj": 0}), ["rank_pattern['up_proj'] must be a rank"])
ac("rank_pattern_float", config_with(rank_pattern={"up_proj": 1e10}), ["rank_pattern['up_proj'] must be a rank"])
ac("rank_pattern_int64_max", config_with(rank_pattern={"up_proj": 2**63 - 1}), ["rank_pattern['up_proj'] must be a rank"])
ac("rank_pattern_string", config_with(rank_pattern={"up_proj": "4"}), ["rank_pattern['up_proj']"])
ac("rank_pattern_mismatch", config_with(rank_pattern={"gate_proj": 8}), ["gate_proj", "gives r = 8"])
ac("alpha_pattern_bad_regex", config_with(alpha_pattern={"*x": 2}), ["alpha_pattern['*x']: invalid regular expression"])
ac("alpha_pattern_null", config_with(alpha_pattern={"up_proj": None}), ["alpha_pattern['up_proj'] must be a finite number"])
ac("alpha_pattern_1e300", config_with(alpha_pattern={"up_proj": 1e300}), ["up_proj", "beyond the float range"])
ac("layers_negative", config_with(layers_to_transform=[-1]), ["layers_to_transform", "-1"])
ac("layers_past_model", config_with(layers_to_transform=[1, 5]), ["layers_to_transform names layer 5", "2 layers"])
ac("layers_string", config_with(layers_to_transform="1"), ["layers_to_transform"])
ac("layers_int64_overflow", config_with(layers_to_transform=[2**63]), ["layers_to_transform", "9223372036854775808"])
ac("layers_pattern_number", config_with(layers_pattern=[1]), ["layers_pattern", "must be a string"])
ac("layers_pattern_bad_regex", config_with(layers_pattern="("), ["layers_pattern: invalid regular expression"])
ac("dora", config_with(use_dora=True), ["DoRA", "not supported"])
ac("modules_to_save", config_with(modules_to_save=["lm_head"]), ["modules_to_save", "not supported"])
ac("modules_to_save_huge", config_with(modules_to_save=[f"head_{i}" for i in range(3000)]), ["modules_to_save", "an array of 3000 items"])
ac("bias_all", config_with(bias="all"), ["bias", '"all"', "not supported"])
ac("lora_bias", config_with(lora_bias=True), ["lora_bias", "not supported"])
ac("layer_replication", config_with(layer_replication=[[0, 1]]), ["layer_replication"])
ac("trainable_token_indices", config_with(trainable_token_indices=[1, 2]), ["trainable_token_indices"])
ac("target_parameters", config_with(target_parameters=["mlp.experts.gate_up_proj"]), ["target_parameters"])

# ----------------------------------------------------------------------------------------------
# adapter_model.safetensors
raw = open(os.path.join(ADAPTER, "adapter_model.safetensors"), "rb").read()
hlen = struct.unpack("<Q", raw[:8])[0]
base_header = json.loads(raw[8 : 8 + hlen])
base_header.pop("__metadata__", None)
# (name, dtype, shape, bytes) in offset order
base_tensors = []
for name, e in sorted(base_header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
    b, en = e["data_offsets"]
    base_tensors.append([name, e["dtype"], list(e["shape"]), raw[8 + hlen + b : 8 + hlen + en]])
PFX = "base_model.model.model.layers.1.mlp."


def safetensors(tensors, header_edit=None, header_text=None, header_len=None, tail=b""):
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    data = b""
    for name, dtype, shape, blob in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(blob)]}
        off += len(blob)
        data += blob
    if header_edit:
        header_edit(header)
    text = header_text if header_text is not None else json.dumps(header, separators=(",", ":"))
    text = text.encode("utf-8") if isinstance(text, str) else text
    while (8 + len(text)) % 8:
        text += b" "
    n = len(text) if header_len is None else header_len
    return struct.pack("<Q", n) + text + data + tail


def tensors_with(fn):
    t = copy.deepcopy(base_tensors)
    fn(t)
    return t


def find(t, suffix):
    for entry in t:
        if entry[0].endswith(suffix):
            return entry
    raise KeyError(suffix)


G = "adapter_model.safetensors"


def am(name, content, contains, code=INVALID):
    add("adapter_model", name + ".safetensors", content, code, [G] + contains)


def edit_entry(suffix, key, value):
    def fn(h):
        for name, e in h.items():
            if name.endswith(suffix):
                if value is DELETE:
                    e.pop(key)
                else:
                    e[key] = value
    return fn


am("empty", b"", ["truncated safetensors file", "0 bytes"])
am("five_bytes", b"\x10\x00\x00\x00\x00", ["truncated", "5 bytes"])
am("header_past_end", safetensors(base_tensors, header_len=10**6), ["header length 1000000", "past the end"])
am("header_len_max", safetensors(base_tensors, header_len=2**64 - 1), ["header length 18446744073709551615", "exceeds the limit"])
am("header_len_200mb", safetensors(base_tensors, header_len=200 * 10**6), ["exceeds the limit"])
am("header_not_json", safetensors(base_tensors, header_text="{\"a\": [1, 2"), ["not valid JSON"])
am("header_array", safetensors([], header_text="[1, 2]"), ["not a JSON object"])
am("header_deep", safetensors([], header_text='{"w":{"dtype":"F32","shape":' + nested(200, "1") + ',"data_offsets":[0,4]}}'), ["deeper than 64 levels"])
am("header_invalid_utf8", safetensors([], header_text=b'{"\xff\xfe":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'), ["not valid JSON"])
am("entry_not_object", safetensors(base_tensors, lambda h: h.__setitem__(PFX + "gate_proj.lora_A.weight", [1, 2])), ["gate_proj.lora_A.weight", "expected an object"])
am("dtype_missing", safetensors(base_tensors, edit_entry("gate_proj.lora_A.weight", "dtype", DELETE)), ["gate_proj.lora_A.weight", "lacks 'dtype'"])
am("dtype_unknown", safetensors(base_tensors, edit_entry("gate_proj.lora_A.weight", "dtype", "F12")), ["gate_proj.lora_A.weight", "unknown dtype 'F12'"])
am("dtype_number", safetensors(base_tensors, edit_entry("gate_proj.lora_A.weight", "dtype", 16)), ["gate_proj.lora_A.weight", "dtype must be a string"])
am("dtype_integer_weights", safetensors(base_tensors, edit_entry("up_proj.lora_B.weight", "dtype", "I16")), ["up_proj.lora_B.weight", "has dtype 'I16'", "F32, F16 or BF16"])
am("shape_missing", safetensors(base_tensors, edit_entry("up_proj.lora_A.weight", "shape", DELETE)), ["up_proj.lora_A.weight", "lacks 'shape'"])
am("shape_negative", safetensors(base_tensors, edit_entry("up_proj.lora_A.weight", "shape", [-4, 32])), ["up_proj.lora_A.weight", "invalid dimension -4"])
am("shape_float", safetensors(base_tensors, edit_entry("up_proj.lora_A.weight", "shape", [4.0, 32])), ["up_proj.lora_A.weight", "invalid dimension 4.0"])
am("shape_above_int64", safetensors(base_tensors, edit_entry("up_proj.lora_A.weight", "shape", [2**63, 1])), ["up_proj.lora_A.weight", "invalid dimension 9223372036854775808"])
am("shape_product_overflows", safetensors(base_tensors, edit_entry("up_proj.lora_A.weight", "shape", [2**62, 4])), ["up_proj.lora_A.weight", "element count overflows"])
am("shape_bytes_overflow", safetensors(base_tensors, edit_entry("up_proj.lora_A.weight", "shape", [2**62])), ["up_proj.lora_A.weight", "byte count overflows"])
am("shape_nested", safetensors(base_tensors, edit_entry("up_proj.lora_A.weight", "shape", [[4], 32])), ["up_proj.lora_A.weight", "invalid dimension [4]"])
am("shape_not_list", safetensors(base_tensors, edit_entry("up_proj.lora_A.weight", "shape", "4x32")), ["up_proj.lora_A.weight", "shape must be a list"])
am("shape_3d", safetensors(tensors_with(lambda t: find(t, "up_proj.lora_A.weight").__setitem__(2, [4, 32, 1]))), ["model.layers.1.mlp.up_proj", "must be 2-D"])
am("shape_transposed", safetensors(tensors_with(lambda t: find(t, "up_proj.lora_A.weight").__setitem__(2, [32, 4]))), ["rank mismatch", "model.layers.1.mlp.up_proj"])
am("shape_wrong_width", safetensors(tensors_with(lambda t: (find(t, "up_proj.lora_A.weight").__setitem__(2, [4, 16]), find(t, "up_proj.lora_A.weight").__setitem__(3, find(t, "up_proj.lora_A.weight")[3][:128])))), ["model.layers.1.mlp.up_proj", "do not fit", "expected [4, 32]"])
am("rank_mismatch", safetensors(tensors_with(lambda t: (find(t, "up_proj.lora_B.weight").__setitem__(2, [96, 3]), find(t, "up_proj.lora_B.weight").__setitem__(3, find(t, "up_proj.lora_B.weight")[3][: 96 * 3 * 2])))), ["rank mismatch", "up_proj"])
am("offsets_missing", safetensors(base_tensors, edit_entry("down_proj.lora_B.weight", "data_offsets", DELETE)), ["down_proj.lora_B.weight", "lacks 'data_offsets'"])
am("offsets_backwards", safetensors(base_tensors, edit_entry("gate_proj.lora_A.weight", "data_offsets", [256, 0])), ["gate_proj.lora_A.weight", "end 0 < begin 256"])
am("offsets_outside", safetensors(base_tensors, edit_entry("down_proj.lora_B.weight", "data_offsets", [10**6, 10**6 + 256])), ["down_proj.lora_B.weight", "lie outside the 3072 data bytes"])
am("offsets_negative", safetensors(base_tensors, edit_entry("gate_proj.lora_A.weight", "data_offsets", [-256, 0])), ["gate_proj.lora_A.weight", "data_offsets must be two non-negative integers"])
am("offsets_three", safetensors(base_tensors, edit_entry("gate_proj.lora_A.weight", "data_offsets", [0, 128, 256])), ["gate_proj.lora_A.weight", "data_offsets"])
am("offsets_overlap", safetensors(base_tensors, edit_entry("gate_proj.lora_B.weight", "data_offsets", [128, 896])), ["overlap"])
am("offsets_gap", safetensors(base_tensors, tail=b"\0" * 64, header_edit=edit_entry("down_proj.lora_B.weight", "data_offsets", [2880, 3136])), ["starts at data byte 2880", "ends at 2816"])
am("offsets_length_wrong", safetensors(base_tensors, edit_entry("gate_proj.lora_A.weight", "data_offsets", [0, 200])), ["gate_proj.lora_A.weight", "200 bytes for shape [4, 32] of BF16 (expected 256)"])
am("trailing_bytes", safetensors(base_tensors, tail=b"\0" * 4096), ["the rest belongs to no tensor"])
am("metadata_list", safetensors(base_tensors, lambda h: h.__setitem__("__metadata__", ["pt"])), ["__metadata__ must be an object"])
am("metadata_number", safetensors(base_tensors, lambda h: h.__setitem__("__metadata__", {"format": 1})), ["__metadata__['format'] must be a string"])
am("missing_lora_b", safetensors(tensors_with(lambda t: t.remove(find(t, "down_proj.lora_B.weight")))), ["missing tensor base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"])
am("missing_lora_a", safetensors(tensors_with(lambda t: t.remove(find(t, "gate_proj.lora_A.weight")))), ["missing tensor base_model.model.model.layers.1.mlp.gate_proj.lora_A.weight"])
am("untargeted_module", safetensors(tensors_with(lambda t: t.append(["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight", "BF16", [4, 32], b"\0" * 256]))), ["self_attn.q_proj.lora_A.weight", "does not target"])
am("untargeted_layer", safetensors(tensors_with(lambda t: t.append(["base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", "BF16", [4, 32], b"\0" * 256]))), ["layers.0.mlp.up_proj.lora_A.weight", "does not target"])
am("stray_tensor", safetensors(tensors_with(lambda t: t.append(["optimizer.state", "F32", [1], b"\0" * 4]))), ["'optimizer.state' is not a PEFT LoRA tensor"])
am("embedding_lora", safetensors(tensors_with(lambda t: t.append(["base_model.model.model.embed_tokens.lora_embedding_A", "BF16", [4, 256], b"\0" * 2048]))), ["embed_tokens is not supported"])
am("lm_head_lora", safetensors(tensors_with(lambda t: t.append(["base_model.model.lm_head.lora_A.weight", "BF16", [4, 32], b"\0" * 256]))), ["lm_head is not supported"])
am("layer_past_model", safetensors(tensors_with(lambda t: t.append(["base_model.model.model.layers.7.mlp.up_proj.lora_A.weight", "BF16", [4, 32], b"\0" * 256]))), ["is for layer 7, but the model has 2 layers"])
am("layer_index_huge", safetensors(tensors_with(lambda t: t.append(["base_model.model.model.layers.99999999999999999999.mlp.up_proj.lora_A.weight", "BF16", [4, 32], b"\0" * 256]))), ["cannot read a layer index"])
am("two_tensors_one_module", safetensors(tensors_with(lambda t: t.append([PFX + "up_proj.lora_A.default.weight", "BF16", [4, 32], b"\0" * 256]))), ["two tensors for 'model.layers.1.mlp.up_proj' lora_A"])
am("lora_bias_tensor", safetensors(tensors_with(lambda t: t.append([PFX + "up_proj.lora_B.bias", "BF16", [96], b"\0" * 192]))), ["LoRA bias tensors are not supported"])
am("unknown_projection", safetensors(tensors_with(lambda t: t.append(["base_model.model.model.layers.1.mlp.c_fc.lora_A.weight", "BF16", [4, 32], b"\0" * 256]))), ["'mlp.c_fc'", "does not have"])
am("nan_value", safetensors(tensors_with(lambda t: find(t, "down_proj.lora_B.weight").__setitem__(3, b"\xc0\x7f" + find(t, "down_proj.lora_B.weight")[3][2:]))), ["down_proj.lora_B.weight", "non-finite"])
am("inf_value", safetensors(tensors_with(lambda t: find(t, "up_proj.lora_A.weight").__setitem__(3, find(t, "up_proj.lora_A.weight")[3][:10] + b"\x80\x7f" + find(t, "up_proj.lora_A.weight")[3][12:]))), ["up_proj.lora_A.weight", "non-finite", "element 5"])
am("long_tensor_name", safetensors(tensors_with(lambda t: t.append(["x" * 40000, "F32", [1], b"\0" * 4]))), ["is not a PEFT LoRA tensor", "(40000 bytes)"])
am("control_chars_name", safetensors(tensors_with(lambda t: t.append(["evil\n\x1b[31mname", "F32", [1], b"\0" * 4]))), ["evil\\n\\x1B[31mname"])
am("unknown_dtype_long", safetensors(base_tensors, edit_entry("gate_proj.lora_A.weight", "dtype", "Q" * 10000)), ["unknown dtype", "(10000 bytes)"])

# ----------------------------------------------------------------------------------------------
# config.json and generation_config.json
base_model_config = json.load(open(os.path.join(FIXTURE, "config.json")))


def model_config_with(**changes):
    c = copy.deepcopy(base_model_config)
    for k, v in changes.items():
        if v is DELETE:
            c.pop(k, None)
        else:
            c[k] = v
    return dumps(c)


C = "config.json"
M = "model.safetensors"


def mc(name, content, contains, code=INVALID, named=C):
    add("config", name + ".json", content, code, [named] + contains)


I32 = 2**31 - 1
mc("not_json", "{architectures", ["not valid JSON"])
mc("empty", "", ["not valid JSON"])
mc("array_top", "[]", ["not a JSON object"])
mc("deep_nesting", model_config_with(quantization_config=json.loads(nested(80))), ["deeper than 64 levels"])
mc("architectures_missing", model_config_with(architectures=DELETE), ["missing field 'architectures'"])
mc("architectures_string", model_config_with(architectures="LlamaForCausalLM"), ["missing field 'architectures'"])
mc("architecture_gpt2", model_config_with(architectures=["GPT2LMHeadModel"]), ["'GPT2LMHeadModel'", "not supported"])
mc("architecture_long", model_config_with(architectures=["A" * 10000]), ["not supported", "(10000 bytes)"])
mc("hidden_size_missing", model_config_with(hidden_size=DELETE), ["missing field 'hidden_size'"])
mc("hidden_size_zero", model_config_with(hidden_size=0), ["'hidden_size' must be a positive integer"])
mc("hidden_size_negative", model_config_with(hidden_size=-32), ["'hidden_size'", "-32"])
mc("hidden_size_2_62", model_config_with(hidden_size=2**62), ["'hidden_size'", "at most 2147483647"])
mc("hidden_size_float", model_config_with(hidden_size=32.5), ["'hidden_size'", "32.5"])
mc("hidden_size_string", model_config_with(hidden_size="32"), ["'hidden_size'"])
mc("intermediate_size_null", model_config_with(intermediate_size=None), ["missing field 'intermediate_size'"])
mc("layers_zero", model_config_with(num_hidden_layers=0), ["'num_hidden_layers'"])
mc("heads_zero", model_config_with(num_attention_heads=0), ["'num_attention_heads'"])
mc("kv_heads_not_divisor", model_config_with(num_key_value_heads=3), ["num_attention_heads (4) is not a multiple of num_key_value_heads (3)"])
mc("kv_heads_huge", model_config_with(num_key_value_heads=2**40), ["'num_key_value_heads'"])
mc("head_dim_odd", model_config_with(head_dim=7), ["head_dim (7) must be even"])
mc("hidden_not_divisible", model_config_with(hidden_size=30), ["hidden_size (30) is not a multiple"])
mc("vocab_2_31", model_config_with(vocab_size=2**31), ["'vocab_size'", "at most 2147483647"])
mc("vocab_mismatch", model_config_with(vocab_size=512), ["model.embed_tokens.weight", "expected [512, 32]"], named=M)
mc("hidden_mismatch", model_config_with(hidden_size=64, num_attention_heads=8, num_key_value_heads=8), ["expected [", "64"], named=M)
mc("positions_missing", model_config_with(max_position_embeddings=DELETE), ["missing field 'max_position_embeddings'"])
mc("positions_2_40", model_config_with(max_position_embeddings=2**40), ["'max_position_embeddings'"])
mc("eps_zero", model_config_with(rms_norm_eps=0), ["'rms_norm_eps' must be a finite positive number"])
mc("eps_negative", model_config_with(rms_norm_eps=-1e-5), ["'rms_norm_eps'"])
mc("theta_string", model_config_with(rope_theta="10000"), ["'rope_theta'"])
mc("theta_overflow_literal", model_config_with(rope_theta=1).replace('"rope_theta": 1', '"rope_theta": 1e400'), ["not valid JSON"])
mc("rope_yarn", model_config_with(rope_scaling={"rope_type": "yarn", "factor": 4.0}), ["rope_scaling type 'yarn' is not supported"])
mc("rope_llama3_incomplete", model_config_with(rope_scaling={"rope_type": "llama3", "factor": 8.0}), ["rope_scaling", "original_max_position_embeddings"])
mc("rope_factor_negative", model_config_with(rope_scaling={"type": "linear", "factor": -2.0}), ["rope_scaling", "'factor'"])
mc("rope_not_object", model_config_with(rope_scaling=[2.0]), ["rope_scaling must be an object"])
mc("rope_type_number", model_config_with(rope_scaling={"rope_type": 3}), ["rope_scaling.rope_type must be a string"])
mc("rope_freq_order", model_config_with(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0, "original_max_position_embeddings": 64}), ["high_freq_factor must exceed low_freq_factor"])
mc("hidden_act_gelu", model_config_with(hidden_act="gelu"), ["hidden_act", "gelu", "only"])
mc("tie_string", model_config_with(tie_word_embeddings="yes"), ["'tie_word_embeddings' must be true or false"])
mc("eos_equals_vocab", model_config_with(eos_token_id=256), ["'eos_token_id'", "[0, 256)", "256"])
mc("eos_wraps_to_1", model_config_with(eos_token_id=2**32 + 1), ["'eos_token_id'", "4294967297"])
mc("eos_negative", model_config_with(eos_token_id=-1), ["'eos_token_id'", "-1"])
mc("eos_list_string", model_config_with(eos_token_id=[1, "2"]), ["'eos_token_id'", '"2"'])
mc("eos_list_huge", model_config_with(eos_token_id=list(range(2000))), ["'eos_token_id' lists 2000 token ids"])
mc("bos_2_31", model_config_with(bos_token_id=2**31), ["'bos_token_id'", "2147483648"])
mc("bos_string", model_config_with(bos_token_id="0"), ["'bos_token_id'"])
mc("sliding_negative", model_config_with(use_sliding_window=True, sliding_window=-5), ["'sliding_window'"])
mc("sliding_flag_string", model_config_with(use_sliding_window="yes"), ["'use_sliding_window'"])
mc("dtype_number", model_config_with(torch_dtype=5), ["'torch_dtype' must be a string"])
mc("parameters_overflow", model_config_with(hidden_size=I32 - 1, intermediate_size=I32, num_hidden_layers=I32, num_attention_heads=1, num_key_value_heads=1, head_dim=2, vocab_size=I32), ["parameter count beyond 64 bits"])
mc("heads_times_dim", model_config_with(num_attention_heads=2**20, num_key_value_heads=2**20, head_dim=2**12), ["num_attention_heads x head_dim", "at most 2147483647"])

GC = "generation_config.json"


def gc(name, content, contains, code=INVALID):
    add("generation_config", name + ".json", content, code, [GC] + contains)


gc("not_json", '{"eos_token_id": [1,', ["not valid JSON"])
gc("empty", "", ["not valid JSON"])
gc("array_top", "[1]", ["not a JSON object"])
gc("eos_past_vocab", dumps({"eos_token_id": [1, 300]}), ["'eos_token_id'", "300"])
gc("eos_wraps", dumps({"eos_token_id": 2**32 + 2}), ["'eos_token_id'", "4294967298"])
gc("eos_string", dumps({"eos_token_id": "2"}), ["'eos_token_id'"])
gc("bos_negative", dumps({"bos_token_id": -3}), ["'bos_token_id'", "-3"])
gc("eos_list_huge", dumps({"eos_token_id": [1] * 5000}), ["lists 5000 token ids"])
gc("deep_nesting", dumps({"eos_token_id": 1, "x": json.loads(nested(70))}), ["deeper than 64 levels"])

# ----------------------------------------------------------------------------------------------
# model.safetensors (small: each stands in for the whole checkpoint) and the shard index
M = "model.safetensors"


def ms(name, content, contains, code=INVALID):
    add("model_safetensors", name + ".safetensors", content, code, [M] + contains)


ms("empty", b"", ["truncated"])
ms("header_past_end", safetensors([], header_len=4096), ["past the end"])
ms("header_not_json", safetensors([], header_text="{]"), ["not valid JSON"])
ms("missing_tensors", safetensors([["model.norm.weight", "F32", [32], b"\0" * 128]]), ["missing tensor 'model.embed_tokens.weight'"])
ms("wrong_shape", safetensors([["model.embed_tokens.weight", "F32", [16, 32], b"\0" * 2048]]), ["'model.embed_tokens.weight' has shape [16, 32], expected [256, 32]"])
ms("weights_as_int", safetensors([["model.embed_tokens.weight", "I32", [256, 32], b"\0" * 32768]]), ["'model.embed_tokens.weight' has dtype I32"])

X = "model.safetensors.index.json"


def ix(name, content, contains, code=INVALID):
    add("index", name + ".json", content, code, [X] + contains)


SHARD = "model-00001-of-00001.safetensors"
ix("not_json", '{"weight_map": {', ["not valid JSON"])
ix("no_weight_map", dumps({"metadata": {"total_size": 1}}), ["'weight_map'"])
ix("weight_map_list", dumps({"weight_map": [SHARD]}), ["'weight_map'"])
ix("shard_number", dumps({"weight_map": {"model.norm.weight": 1}}), ["weight_map['model.norm.weight'] must be a file name"])
ix("shard_parent", dumps({"weight_map": {"model.norm.weight": "../" + SHARD}}), ["plain file name"])
ix("shard_absolute", dumps({"weight_map": {"model.norm.weight": "/etc/passwd"}}), ["plain file name"])
ix("shard_dotdot", dumps({"weight_map": {"model.norm.weight": ".."}}), ["plain file name"])
ix("tensor_not_in_shard", dumps({"weight_map": {"model.norm.weight": SHARD, "model.extra.weight": SHARD}}), ["'model.extra.weight'", "does not hold it"])
ix("shard_missing", dumps({"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}), ["model-00002-of-00002.safetensors", "no such file"], code=NOT_FOUND)

# ----------------------------------------------------------------------------------------------
# tokenizer.json (a byte-level BPE over the fixture's 256 ids, broken one way at a time)
BYTES = [chr(c) for c in range(ord("!"), ord("~") + 1)] + [chr(c) for c in range(0xA1, 0xAD)] + [chr(c) for c in range(0xAE, 0x100)]
byte_to_char = {}
extra = 0
for b in range(256):
    if chr(b) in BYTES:
        byte_to_char[b] = chr(b)
    else:
        byte_to_char[b] = chr(256 + extra)
        extra += 1
byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True}
base_tok = {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": [],
    "normalizer": None,
    "pre_tokenizer": byte_level,
    "post_processor": None,
    "decoder": byte_level,
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
              "vocab": {byte_to_char[b]: b for b in range(256)}, "merges": []},
}


def tok_with(fn):
    t = copy.deepcopy(base_tok)
    fn(t)
    return json.dumps(t, ensure_ascii=False)


T = "tokenizer.json"


def tk(name, content, contains, code=INVALID):
    add("tokenizer", name + ".json", content, code, [T] + contains)


def setp(path, value):
    def fn(t):
        node = t
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return fn


tk("not_json", '{"model": {', ["not valid JSON"])
tk("empty", "", ["not valid JSON"])
tk("array_top", "[1, 2]", ["expected a JSON object at the top"])
tk("model_missing", tok_with(lambda t: t.pop("model")), ["'model' is missing"])
tk("model_unigram", tok_with(setp(["model", "type"], "Unigram")), ["model.type", "Unigram"])
tk("vocab_id_string", tok_with(setp(["model", "vocab", "A"], "65")), ['model.vocab["A"]', "token id"])
tk("vocab_id_2_31", tok_with(setp(["model", "vocab", "A"], 2**31)), ['model.vocab["A"]', "2147483648"])
tk("vocab_id_negative", tok_with(setp(["model", "vocab", "A"], -1)), ['model.vocab["A"]', "-1"])
tk("vocab_long_key", tok_with(setp(["model", "vocab", "k" * 30000], -1)), ["model.vocab[", "a string of 30000 bytes"])
tk("vocab_not_object", tok_with(setp(["model", "vocab"], [1, 2])), ["model.vocab", "expected an object"])
tk("merge_unknown_token", tok_with(setp(["model", "merges"], [["A", "\u2603"]])), ["model.merges[0]", "\u2603"])
tk("merge_not_pair", tok_with(setp(["model", "merges"], [["A", "B", "C"]])), ["model.merges[0]"])
tk("merge_no_space", tok_with(setp(["model", "merges"], ["AB"])), ["model.merges[0]", "not two tokens"])
tk("unk_not_in_vocab", tok_with(setp(["model", "unk_token"], "<unk>")), ["model.unk_token", "'<unk>'"])
tk("added_tokens_object", tok_with(setp(["added_tokens"], {"a": 1})), ["added_tokens", "expected a list"])
tk("added_token_id_string", tok_with(setp(["added_tokens"], [{"id": "x", "content": "<s>", "special": True}])), ["added_tokens[0]"])
tk("normalizer_unknown", tok_with(setp(["normalizer"], {"type": "Precompiled", "precompiled_charsmap": "AA=="})), ["normalizer.type", "Precompiled"])
tk("normalizer_deep", tok_with(setp(["normalizer"], json.loads('{"type": "Sequence", "normalizers": ' + nested(70, '{"type":"NFC"}') + "}"))), ["deeper than 64 levels"])
tk("split_bad_regex", tok_with(setp(["pre_tokenizer"], {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated", "invert": False})), ["pre_tokenizer", "pattern", "(unclosed"])
tk("split_bad_behavior", tok_with(setp(["pre_tokenizer"], {"type": "Split", "pattern": {"String": " "}, "behavior": "Sideways", "invert": False})), ["pre_tokenizer.behavior", "Sideways"])
tk("pre_tokenizer_unknown", tok_with(setp(["pre_tokenizer"], {"type": "Whitespace"})), ["pre_tokenizer.type", "Whitespace"])
tk("decoder_unknown", tok_with(setp(["decoder"], {"type": "WordPiece"})), ["decoder.type", "WordPiece"])
tk("metaspace_bad_scheme", tok_with(setp(["pre_tokenizer"], {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "sometimes"})), ["pre_tokenizer.prepend_scheme", "sometimes"])
tk("post_processor_missing_special", tok_with(setp(["post_processor"], {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [], "special_tokens": {}})), ["post_processor", "special token '<s>' is not in"])
tk("post_processor_id_2_31", tok_with(setp(["post_processor"], {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [2**31], "tokens": ["<s>"]}}})), ["post_processor", "2147483648"])
tk("post_processor_unknown", tok_with(setp(["post_processor"], {"type": "Magic"})), ["post_processor.type", "Magic"])

# ----------------------------------------------------------------------------------------------
# loraserve serve --config FILE
S = "--config"


def sc(name, content, contains, code=INVALID):
    add("serve_config", name + ".json", content, code, [S] + contains)


sc("not_json", "{max-batch-size: 4}", ["not valid JSON"])
sc("array_top", "[]", ["not a JSON object"])
sc("unknown_flag", dumps({"max-batch-sizes": 4}), ["unknown flag 'max-batch-sizes'"])
sc("unknown_flag_long", dumps({"f" * 20000: 1}), ["unknown flag", "(20000 bytes)"])
sc("flag_not_number", dumps({"max-batch-size": "many"}), ["'max-batch-size'"])
sc("flag_negative", dumps({"max-batch-size": -1}), ["'max-batch-size'"])
sc("flag_above_uint64", dumps({"max-batch-size": 2**64}), ["'max-batch-size'"])
sc("json_depth_out_of_range", dumps({"max-json-depth": 5000}), ["'max-json-depth'"])
sc("deep_nesting", dumps({"preload": json.loads(nested(100, '"a=b"'))}), ["deeper than 64 levels"])

# ----------------------------------------------------------------------------------------------
# tokenizer_config.json (the chat template and its special tokens, chat::ChatTemplate::load)
TC = "tokenizer_config.json"
TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}"


def tc(name, content, contains, code=INVALID):
    add("tokenizer_config", name + ".json", content, code, [TC] + contains)


def tc_with(**fields):
    d = {"bos_token": "<s>", "eos_token": "</s>", "chat_template": TEMPLATE}
    d.update(fields)
    return dumps(d)


tc("not_json", '{"chat_template": ', ["not valid JSON"])
tc("empty", "", ["not valid JSON"])
tc("trailing_garbage", tc_with() + " x", ["not valid JSON"])
tc("invalid_utf8", b'{"chat_template": "\xff\xfe"}', ["not valid JSON"])
tc("lone_surrogate", '{"chat_template": "\\udc80"}', ["not valid JSON"])
tc("array_top", "[1]", ["not a JSON object"])
tc("string_top", '"template"', ["not a JSON object"])
tc("deep_nesting", dumps({"chat_template": TEMPLATE, "extra": json.loads(nested(100))}), ["deeper than 64 levels"])
tc("template_number", tc_with(chat_template=7), ['"chat_template" must be a string'])
tc("template_object", tc_with(chat_template={"default": TEMPLATE}), ['"chat_template" must be a string'])
tc("template_list_no_default", tc_with(chat_template=[{"name": "tool_use", "template": "x"}]), ['none named "default"'])
tc("template_list_bad_entry", tc_with(chat_template=[{"name": 1, "template": "x"}]), ['"chat_template" must be a string or a list'])
tc("template_syntax_error", tc_with(chat_template="line 1\n{% for %}"), ["chat_template", "line 2"])
tc("template_unclosed_block", tc_with(chat_template="{% if messages %}x"), ["chat_template"])
tc("eos_token_number", tc_with(eos_token=5), ['"eos_token" must be a string'])
tc("bos_token_object_no_content", tc_with(bos_token={"lstrip": False}), ['"bos_token" must be a string'])
tc("pad_token_list", tc_with(pad_token=["<pad>"]), ['"pad_token" must be a string'])
tc("additional_special_tokens_string", tc_with(additional_special_tokens="<a>"), ['"additional_special_tokens" must be a list'])
tc("additional_special_tokens_number", tc_with(additional_special_tokens=[7]), ['"additional_special_tokens" must be a string'])

with open(os.path.join(HERE, "expected.json"), "w") as f:
    json.dump(cases, f, indent=1, sort_keys=True, ensure_ascii=False)
    f.write("\n")
print(f"{len(cases)} cases")
