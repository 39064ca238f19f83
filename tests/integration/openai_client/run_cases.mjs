// Sends OpenAI requests to a loraserve server with the official openai npm client, all at once,
// and writes what came back, for tests/integration/openai_test.cpp to check.
//   node run_cases.mjs --modules DIR --base-url URL --cases CASES.json --out OUT.json [--api-key K]
// CASES.json: [{"kind": "completion" | "chat", "stream": bool, "params": {...request body...}}]
// OUT.json, one entry per case: {"ok": true, "text", "token_ids", "finish_reason", "usage",
// "chunks", "first_delta", "logprobs"} or {"ok": false, "status", "type", "code", "param",
// "message"}.
import fs from 'node:fs';
import path from 'node:path';

function flag(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) {
    if (fallback === undefined) throw new Error(`--${name} is required`);
    return fallback;
  }
  return process.argv[i + 1];
}

const modules = flag('modules');
const { default: OpenAI } = await import(path.join(modules, 'openai', 'index.mjs'));
const client = new OpenAI({
  baseURL: flag('base-url'),
  apiKey: flag('api-key', 'no-key'),
  maxRetries: 0,
  timeout: 120000,
});
const cases = JSON.parse(fs.readFileSync(flag('cases'), 'utf8'));

async function run(c) {
  const api = c.kind === 'chat' ? client.chat.completions : client.completions;
  if (!c.stream) {
    const r = await api.create({ ...c.params, stream: false });
    const choice = r.choices[0];
    return {
      ok: true,
      id: r.id,
      object: r.object,
      model: r.model,
      text: c.kind === 'chat' ? choice.message.content : choice.text,
      role: c.kind === 'chat' ? choice.message.role : undefined,
      token_ids: choice.token_ids,
      finish_reason: choice.finish_reason,
      logprobs: choice.logprobs,
      usage: r.usage,
      choices: r.choices.length,
    };
  }
  const stream = await api.create({ ...c.params, stream: true });
  let text = '';
  let tokenIds = [];
  let finish = null;
  let usage = null;
  let chunks = 0;
  let firstDelta = null;
  let role = null;
  const logprobs = [];
  const objects = new Set();
  for await (const chunk of stream) {
    chunks += 1;
    objects.add(chunk.object);
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      if (c.kind === 'chat') {
        if (firstDelta === null) firstDelta = choice.delta;
        if (choice.delta.role) role = choice.delta.role;
        text += choice.delta.content ?? '';
        if (choice.logprobs) logprobs.push(...choice.logprobs.content);
      } else {
        text += choice.text;
        if (choice.logprobs) logprobs.push(choice.logprobs);
      }
      if (choice.token_ids) tokenIds = tokenIds.concat(choice.token_ids);
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  return {
    ok: true,
    text,
    role,
    token_ids: tokenIds,
    finish_reason: finish,
    usage,
    chunks,
    first_delta: firstDelta,
    logprobs,
    objects: [...objects],
  };
}

const results = await Promise.all(
  cases.map((c) =>
    run(c).catch((e) => ({
      ok: false,
      status: e.status ?? null,
      type: e.type ?? null,
      code: e.code ?? null,
      param: e.param ?? null,
      message: e.message,
      class: e.constructor?.name ?? null,
    })),
  ),
);
fs.writeFileSync(flag('out'), JSON.stringify(results, null, 1));
