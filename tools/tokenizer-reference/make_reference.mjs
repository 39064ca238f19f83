// Writes reference token ids for loraserve's tokenizer tests, from the pinned @lenml/tokenizers
// (a JavaScript port of Hugging Face tokenizers), for every tokenizer in TOKENIZERS and those of
// derived_tokenizers.mjs, over the corpus of corpus.mjs.
//
//   node make_reference.mjs --modules DIR/node_modules --out DIR
//
// Each tokenizer is built from its tokenizer.json alone (no tokenizer_config.json), as Hugging
// Face's Tokenizer.from_file does. Output: DIR/manifest.json and DIR/<name>.jsonl, one line per
// corpus string: {"text", "ids", "ids_no_special", "decoded", "decoded_with_special"}.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { buildCorpus } from "./corpus.mjs";
import { writeDerivedTokenizers } from "./derived_tokenizers.mjs";

export const TOKENIZERS = ["llama3", "qwen3", "llama2", "gpt4o", "deepseek_v3", "gemma3"];

function parseArgs(argv) {
  const args = {};
  for (let i = 2; i < argv.length; i += 2) args[argv[i].replace(/^--/, "")] = argv[i + 1];
  if (!args.modules || !args.out) {
    console.error("usage: node make_reference.mjs --modules DIR/node_modules --out DIR");
    process.exit(2);
  }
  return args;
}

export async function loadReference(modules) {
  const require = createRequire(path.join(path.resolve(modules), "..", "package.json"));
  const lib = await import(pathToFileURL(require.resolve("@lenml/tokenizers")).href);
  return {
    version: JSON.parse(
      fs.readFileSync(path.join(modules, "@lenml", "tokenizers", "package.json"), "utf8"),
    ).version,
    tokenizerPath: (name) => require.resolve(`@lenml/tokenizer-${name}/models/tokenizer.json`),
    load(file) {
      const tokenizerJSON = JSON.parse(fs.readFileSync(file, "utf8"));
      return lib.TokenizerLoader.fromPreTrained({
        tokenizerJSON,
        tokenizerConfig: { tokenizer_class: "PreTrainedTokenizer", clean_up_tokenization_spaces: false },
      });
    },
  };
}

function decode(tokenizer, ids, skip) {
  if (ids.length === 0) return "";
  return tokenizer.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false });
}

async function main() {
  const args = parseArgs(process.argv);
  const reference = await loadReference(args.modules);
  const corpus = buildCorpus();
  fs.mkdirSync(args.out, { recursive: true });
  const manifest = { reference: `@lenml/tokenizers@${reference.version}`, tokenizers: [] };
  const all = TOKENIZERS.map((name) => ({ name, file: reference.tokenizerPath(name) }));
  all.push(...writeDerivedTokenizers(args.out, corpus, reference.tokenizerPath("llama2")));
  for (const { name, file } of all) {
    const tokenizer = reference.load(file);
    const lines = corpus.map((text) => {
      const ids = tokenizer.encode(text, { add_special_tokens: true });
      const idsNoSpecial = tokenizer.encode(text, { add_special_tokens: false });
      return JSON.stringify({
        text,
        ids,
        ids_no_special: idsNoSpecial,
        decoded: decode(tokenizer, ids, true),
        decoded_with_special: decode(tokenizer, ids, false),
      });
    });
    const cases = path.join(path.resolve(args.out), `${name}.jsonl`);
    fs.writeFileSync(cases, lines.join("\n") + "\n");
    manifest.tokenizers.push({ name, tokenizer_json: file, cases, count: lines.length });
    console.log(`${name}: ${lines.length} strings`);
  }
  fs.writeFileSync(path.join(args.out, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) await main();
