// Encode throughput of @lenml/tokenizers on a text file, for tokenizer_bench's side-by-side run.
//
//   node bench.mjs --modules DIR/node_modules --tokenizer FILE --text FILE [--repeats N]
//
// Each repeat builds a fresh tokenizer (not timed) and times encode(text) with special tokens.
// Prints one JSON line: {"seconds": [...], "cpu_seconds": [...] (process CPU time, GC included),
// "bytes": n, "ids": count, "fnv1a": hash of the ids}.
import fs from "node:fs";
import { loadReference } from "./make_reference.mjs";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
if (!args.modules || !args.tokenizer || !args.text) {
  console.error("usage: node bench.mjs --modules DIR --tokenizer FILE --text FILE [--repeats N]");
  process.exit(2);
}
const reference = await loadReference(args.modules);
const text = fs.readFileSync(args.text, "utf8");
const seconds = [];
const cpuSeconds = [];
let ids = [];
for (let r = 0; r < Number(args.repeats ?? 3); ++r) {
  const tokenizer = reference.load(args.tokenizer);
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  ids = tokenizer.encode(text, { add_special_tokens: true });
  seconds.push(Number(process.hrtime.bigint() - t0) / 1e9);
  const cpu = process.cpuUsage(cpu0);
  cpuSeconds.push((cpu.user + cpu.system) / 1e6);
}
let hash = 2166136261;
for (const id of ids) hash = Math.imul(hash ^ id, 16777619) >>> 0;
console.log(JSON.stringify({ seconds, cpu_seconds: cpuSeconds, bytes: Buffer.byteLength(text, "utf8"), ids: ids.length, fnv1a: hash }));
