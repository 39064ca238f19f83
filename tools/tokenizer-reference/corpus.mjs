// The tokenizer test corpus: hand-written strings for every category the tests must cover, plus
// seeded random mixes of fragments and very long words. Deterministic: the same list every run.

// mulberry32: a small seeded PRNG so the corpus never changes between runs or machines.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ENGLISH = [
  "Hello world",
  "The quick brown fox jumps over the lazy dog.",
  "It's a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
  "I'm sure you'll agree: they've done it, we'd know, and she's right.",
  "DON'T SHOUT! I'LL HEAR YOU'RE HERE, WE'VE TOLD THEM, HE'D COME.",
  "Mixed CASE words like iPhone, McDonald's, eBay and NASA's JPL.",
  "A sentence with  two spaces, three   spaces and trailing space ",
  " leading space",
  "   three leading spaces",
  "Hyphenated-words, em—dashes, en–dashes and ellipses… \"quotes\" and 'single quotes'.",
  "“Curly quotes” and ‘apostrophes’ aren't ASCII; neither are « guillemets ».",
  "Email me at someone@example.com or visit https://example.org/path?q=1&r=two#frag.",
  "Dr. Smith et al. (2019) reported p < 0.05; see Fig. 3b and Table II.",
  "The café's crème brûlée was naïve, the façade coöperative.",
  "Straße, Ærøskøbing, Łódź, İstanbul, Ångström, ΣΊΣΥΦΟΣ, σίσυφος",
  "Привет, как дела? Всё хорошо.",
  "Γειά σου Κόσμε! Καλημέρα.",
  "שלום עולם, מה שלומך?",
  "नमस्ते दुनिया, आप कैसे हैं?",
  "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่าง",
  "Xin chào thế giới, tiếng Việt có dấu.",
  "ǅemal and ǈubljana use titlecase digraphs; ﬁne ﬂour uses ligatures.",
  "Roman numerals Ⅻ and Ⅳ, superscripts x² and x³, fractions ½ ¾.",
  "Math: ∀x ∈ ℝ, ∃y : x² + y² ≤ 1 ⇒ |x| ≤ 1; ∑ᵢ aᵢ ≈ ∫ f(x) dx.",
  "Currency: $100, €20.50, £7, ¥500, ₹1,000 and ₿0.001.",
];

const CODE = [
  "def add(a, b):\n    return a + b\n",
  "int main(int argc, char** argv) {\n  std::cout << \"hi\" << std::endl;\n  return 0;\n}\n",
  "for (size_t i = 0; i < n; ++i) { sum += x[i] * w[i]; }",
  "const f = (x) => x ?? {a: [1, 2, 3]}; // arrow\n",
  "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
  "<html><body class=\"main\"><p>Hello &amp; welcome</p></body></html>",
  "{\"key\": \"value\", \"list\": [1, 2.5, -3e10, true, null]}",
  "#include <vector>\n#define MAX(a, b) ((a) > (b) ? (a) : (b))\n",
  "if x != y and not z:\n\tprint(f\"{x=} {y!r:>10}\")\n\telse:\n\t\tpass",
  "fn main() -> Result<(), Box<dyn Error>> { let v: Vec<u8> = vec![0; 16]; Ok(()) }",
  "$ git commit -m 'fix: handle \\n in paths' && ./configure --prefix=/usr/local",
  "x+=1;y-=2;z*=3;w/=4;a%=5;b<<=6;c>>=7;d&=8;e|=9;f^=10;",
  "    indented with four spaces\n        and eight\n\t\tand two tabs\n",
  "camelCaseIdentifier snake_case_identifier SCREAMING_CASE kebab-case PascalCase",
  "regex = r'^(?:[a-z0-9!#$%&*+/=?^_`{|}~-]+)@(?:[a-z0-9-]+\\.)+[a-z]{2,}$'",
  "matrix[i][j] = alpha * A[i][k] * B[k][j] + beta * C[i][j];",
  "```python\nimport numpy as np\nprint(np.zeros((3, 4)))\n```",
  "// remove before release\n/* block\n   comment */\n-- sql comment\n# shell comment",
];

const WHITESPACE = [
  "", " ", "  ", "\t", "\n", "\r\n", "\n\n\n", " \n ", "\t\t\t", "a\tb\tc", "a\n\nb\n\n\nc",
  "line1\r\nline2\r\n", "trailing newline\n", "   \t  mixed \t whitespace\t \n",
  "word\u00a0nbsp\u00a0word", "ideographic\u3000space", "thin\u2009space and\u200bzero width",
  "\ufeffBOM at start", "em\u2003space", "line\u2028separator and paragraph\u2029separator",
  "vertical\u000btab and form\u000cfeed", "next\u0085line (NEL)", "a \u00a0 b", "\u3000\u3000x",
  " ".repeat(17), "\t".repeat(9) + "x", "\n".repeat(12), " \t".repeat(20),
];

const NUMBERS = [
  "0", "7", "42", "123", "1234", "12345", "123456789", "3.14159265358979",
  "1,000,000", "1e-10", "-0.5", "+42", "0x1F 0b1010 0o777", "2024-01-31T23:59:59Z",
  "v1.2.3-rc.4", "192.168.0.1:8080", "phone +1 (555) 010-9999", "ISBN 978-3-16-148410-0",
  "٠١٢٣٤٥٦٧٨٩ Arabic-Indic digits", "१२३ Devanagari digits", "１２３ fullwidth digits",
  "𝟏𝟐𝟑 math digits", "000000000000000000000001", "9".repeat(40), "1 2 3 4 5 6 7 8 9 10",
  "pi is approximately 3.14 and e is 2.718",
];

const CJK = [
  "你好，世界！", "我爱北京天安门。", "今天天气很好，我们去公园散步吧。",
  "日本語のテキストです。ひらがなとカタカナと漢字。", "東京タワーは333メートルです。",
  "한국어 텍스트입니다. 안녕하세요!", "繁體中文與简体中文混合", "漢字かなまじり文、句読点。",
  "中文English混合text測試123", "「引用」『二重引用』【括弧】", "ｈａｌｆ　ｗｉｄｔｈ　ｋａｔａｋａｎａ ｶﾀｶﾅ",
  "𠀋𠂢𠂤 rare CJK extension B", "一二三四五六七八九十百千万亿",
];

const ARABIC = [
  "مرحبا بالعالم", "اللغة العربية جميلة جداً.", "السَّلَامُ عَلَيْكُمْ",
  "فارسی: سلام دنیا", "اردو: ہیلو دنیا", "mixed عربي and English نص",
  "الرقم ١٢٣ والرقم 456", "كِتَابٌ مُفِيدٌ",
];

const EMOJI = [
  "😀", "👍🏽", "👍🏻👍🏼👍🏽👍🏾👍🏿", "👨‍👩‍👧‍👦", "👩🏽‍💻", "🏳️‍🌈", "🏴‍☠️", "❤️‍🔥",
  "🧑🏿‍🤝‍🧑🏻", "🇺🇸🇯🇵🇩🇪", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "1️⃣ #️⃣ *️⃣", "emoji in text 🎉🎉 party 🥳!",
  "😀😃😄😁😆😅😂🤣", "🤷🏽‍♀️ shrug", "☕ ⌚ ✈️ ☀️ ☃", "👋 Hi there!",
];

const COMBINING = [
  "e\u0301", "Cafe\u0301", "a\u0300\u0301\u0302\u0303\u0304", "n\u0303o\u0308",
  "Z̷̛̖͎a̸l̵g̶o̴ ̷t̸e̵x̶t̴", "\u1100\u1161\u11a8", "A\u030a vs \u00c5 vs \u212b",
  "\u0041\u030c\u0323", "x\u20d7 vector", "o\u0338 slashed", "\u0915\u094d\u0937",
  "ñ vs n\u0303", "\u1e9b\u0323", "combining at start \u0301x",
];

const SPECIALS = [
  "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>user<|end_header_id|>",
  "<|reserved_special_token_5|>", "<s>", "</s>", "<unk>", "<|im_start|>system\nYou are helpful.<|im_end|>",
  "<|endoftext|>", "<think>reasoning</think>", "<tool_call>{}</tool_call>", "<bos>", "<eos>",
  "<start_of_turn>user\nhi<end_of_turn>", "<unused12>", "<mask>", "[multimodal]",
  "<｜begin▁of▁sentence｜>", "<｜User｜>hello<｜Assistant｜>", "<|endofprompt|>", "<0x41>",
  "<|im_sta", "<s", "< s>", "<<s>>", "<s><s></s>", "</s>\n<s>", "text<s>text", "a <s> b",
  "<|begin_of_text|><|begin_of_text|>", "<|eot_id|>\n\n", " <|im_end|> ", "<pad>", "<|fim_prefix|>",
];

const PUNCT = [
  "!!!", "???", "...", "?!", "---", "***", "~~~", "@@@", "###", "$$$", "%%%", "^^^", "&&&",
  "(((", ")))", "[[[", "]]]", "{{{", "}}}", "<<<", ">>>", "|||", "\\\\\\", "///", ":::", ";;;",
  "'''", "\"\"\"", "```", "'s", "'S", "'t", "'re", "'VE", "'m", "'ll", "'d", "'ſ", "''s",
];

// Very long words: one "word" of thousands of characters for the merge loop.
function longWords(next) {
  const letters = "abcdefghijklmnopqrstuvwxyz";
  const randomLetters = (n) =>
    Array.from({ length: n }, () => letters[Math.floor(next() * letters.length)]).join("");
  const base64 = (n) => {
    const a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    return Array.from({ length: n }, () => a[Math.floor(next() * a.length)]).join("");
  };
  return [
    "a".repeat(5000),
    "ab".repeat(2500),
    "abc".repeat(1500),
    randomLetters(3000),
    randomLetters(10000),
    "Supercalifragilisticexpialidocious".repeat(60),
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    base64(4000),
    "0123456789".repeat(300),
    "中".repeat(2000),
    "汉字".repeat(700) + "かな".repeat(500),
    "😀".repeat(500),
    "👨‍👩‍👧‍👦".repeat(100),
    "é".repeat(1000) + "e\u0301".repeat(1000),
    " ".repeat(3000) + "x",
    "\n".repeat(1000),
    "-".repeat(4000),
    "ا".repeat(2000),
    "x".repeat(1) + "y".repeat(4095),
  ];
}

const SEPARATORS = [" ", " ", " ", "", "\n", "\t", "  ", ", ", ". ", "\r\n", "\n\n", " - "];

export function buildCorpus() {
  const next = rng(20261129);
  const pools = [ENGLISH, CODE, WHITESPACE, NUMBERS, CJK, ARABIC, EMOJI, COMBINING, SPECIALS, PUNCT];
  const corpus = [];
  for (const pool of pools) corpus.push(...pool);
  corpus.push(...longWords(next));
  // Seeded mixes: 1 to 6 fragments from random categories with random separators.
  while (corpus.length < 640) {
    const parts = [];
    const count = 1 + Math.floor(next() * 6);
    for (let k = 0; k < count; ++k) {
      const pool = pools[Math.floor(next() * pools.length)];
      parts.push(pool[Math.floor(next() * pool.length)]);
      if (k + 1 < count) parts.push(SEPARATORS[Math.floor(next() * SEPARATORS.length)]);
    }
    corpus.push(parts.join(""));
  }
  return corpus;
}
