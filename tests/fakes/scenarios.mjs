// The scripted behaviours of the fake model providers (tests/fakes/anthropic.mjs serves them in the
// Anthropic Messages format, tests/fakes/openai.mjs in the OpenAI chat completions format).
//
// A request picks its behaviour with a marker in the LAST user text block of its conversation:
//   [scenario:NAME]  or  [scenario:NAME:ARG:ARG...]
// (no marker: `text`). A run with tool calls sends several requests; the step of a request is the
// number of assistant turns after that user text block (0 for the first call of a run, 1 after the
// first tool results, ...). Since the marker lives in the request itself, concurrent tests never
// interfere.
//
// Scenarios (step 0 unless said otherwise):
//   text                      TEXT_REPLY in small deltas, end_turn
//   text-crlf                 the same with CRLF line ends, each SSE event written in two pieces split
//                             at an arbitrary byte (inside multi-byte UTF-8 too)
//   tool-fragments[:PATH]     text, then write_file {path: PATH (default index.html), content: PAGE_HTML}
//                             with its JSON input in 3-character fragments, tool_use; step 1: text
//                             `Done. The tool said: <result>` (the tool result the server sent back).
//                             Every delta comes 3 ms after the one before, at a model's pace: a relay
//                             passes each on as its own event (a burst may be merged into fewer)
//   tools                     several rounds: write_file src/a.txt; write_file src/b.txt + read_file
//                             src/a.txt (two calls in one turn); edit_file src/a.txt alpha->beta;
//                             list_files; then text `Files now: <list_files result>`
//   thinking                  a thinking block (thinking_delta, signature_delta), then THINKING_REPLY
//   pings                     TEXT_REPLY with a ping before every event (and an SSE comment line)
//   unknown-event             TEXT_REPLY with unknown event types, an unknown content block and an
//                             unknown delta type mixed in
//   error[:K]                 K (default 5) text deltas of ERROR_PARTIAL, then an `error` event
//                             (overloaded_error) and the end of the response
//   overloaded:KEY[:STATUS[:SECS[:TIMES]]]
//                             the first TIMES (default 1) requests carrying KEY get STATUS (default 529)
//                             with retry-after SECS (default 1) before any stream; later ones: RECOVERED_REPLY
//   cut[:K]                   K (default 5) deltas of CUT_PARTIAL, half an event, then the socket is destroyed
//   slow:N:MSms               N deltas `w0 `, `w1 `, ... MS ms apart (slowText(N))
//   long:N[:MS]               N deltas `t0 `, `t1 `, ... at once (longText(N)), for benchmarks; with MS,
//                             the first comes MS ms after the answer's start (a model's time to first token)
//   blocks:N                  N text blocks of one delta each (`b0 `, `b1 `, ...) at once: three events
//                             per block that no relay can merge (a long run, for the replay benchmark)
//   forever                   every step calls list_files again (tool_use), never stops
//   command[:PATH]            write_file {path: PATH (default notes.txt), content: COMMAND_FILE}, then
//                             run_command `cat PATH && pwd` in the same turn; step 1: text
//                             `Command said: <results>` (both tool results the server sent back)
//   bad-tool-input[:KIND]     a write_file call with bad input: KIND json (default: input is not valid
//                             JSON), missing (no content), path (path ../escape.txt), notool (a tool
//                             that does not exist); step 1: text `Tool error seen: <result>`
//   max-tokens                some text, stop_reason max_tokens
//   echo                      a text describing the request: ECHO_PREFIX + JSON {messages, roles,
//                             tool_results, last_user_text} (to check what history the server sends)

export const TEXT_REPLY = 'Hello from the fake model! Héllo 👋 — “quotes” and \\ backslash.\nSecond line.';
export const THINKING_TEXT = 'Let me think about this carefully… 🤔';
export const THINKING_SIGNATURE = 'EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds';
export const THINKING_REPLY = 'After thinking: the answer is 42.';
export const ERROR_PARTIAL = 'Partial answer before the upstream error. ';
export const CUT_PARTIAL = 'Partial answer before the connection cut. ';
export const RECOVERED_REPLY = 'Recovered after the provider was busy.';
export const MAX_TOKENS_REPLY = 'This answer stops at the token limit because';
export const ECHO_PREFIX = 'ECHO ';
export const COMMAND_FILE = 'written by the agent, read back by its command\n';
export const PAGE_HTML =
  '<!doctype html>\n<html lang="en">\n<head><meta charset="utf-8"><title>Fake “page”</title></head>\n' +
  '<body>\n  <h1 class="title">Héllo 👋 from the fake model</h1>\n  <p>Quotes: "double", \'single\', back\\slash, tab\there.</p>\n' +
  '  <script>console.log("</" + "script>");</script>\n</body>\n</html>\n';
export const TOOLS_FILES = { 'src/a.txt': 'beta\n', 'src/b.txt': 'second file ✓\n' };

/** Usage every call reports. */
export const USAGE = { input_tokens: 1000, cache_read_input_tokens: 200, cache_creation_input_tokens: 50 };

export const slowText = (n) => Array.from({ length: n }, (_, i) => `w${i} `).join('');
export const longText = (n) => Array.from({ length: n }, (_, i) => `t${i} `).join('');

/** Splits a string into pieces of `size` code points (never inside a surrogate pair). */
export function pieces(s, size) {
  const cps = Array.from(s);
  const out = [];
  for (let i = 0; i < cps.length; i += size) out.push(cps.slice(i, i + size).join(''));
  return out;
}

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
export function randomId(prefix, n = 24) {
  let s = '';
  for (let i = 0; i < n; i++) s += ALNUM[Math.floor(Math.random() * ALNUM.length)];
  return `${prefix}${s}`;
}

/** `[scenario:a:b:c]` in text -> { name: 'a', args: ['b', 'c'] }, or null. */
export function parseMarker(text) {
  const m = /\[scenario:([^\]\s]+)\]/.exec(text || '');
  if (!m) return null;
  const [name, ...args] = m[1].split(':');
  return { name, args };
}

const int = (v, dflt) => {
  const n = Number.parseInt(String(v ?? ''), 10);
  return Number.isFinite(n) && n >= 0 ? n : dflt;
};

const text = (s, size = 4) => ({ type: 'text', deltas: pieces(s, size) });
const toolUse = (name, input, { size = 3, raw } = {}) => ({
  type: 'tool_use',
  id: randomId('toolu_01'),
  name,
  input: raw === undefined ? input : undefined,
  fragments: pieces(raw === undefined ? JSON.stringify(input) : raw, size),
});

/**
 * A normalized view of one request, whatever its wire format:
 *   { lastUserText, step, toolResults: [{id, content, isError}] (of the last user turn), messages: n, roles: [...] }
 */

/**
 * The plan of the answer to one request:
 *   { busy?: {status, retryAfter}, blocks: [...], stop, delayMs, firstMs, pings, unknown, crlf, split,
 *     fail?: {kind: 'error'|'cut', afterDeltas} }
 * blocks: {type:'text', deltas} | {type:'tool_use', id, name, fragments} | {type:'thinking', deltas, signature}
 *       | {type:'unknown'}
 * `busyKeys` maps each overloaded key to how often it was answered busy (shared by the whole fake).
 */
export function plan(view, busyKeys) {
  const marker = parseMarker(view.lastUserText) || { name: 'text', args: [] };
  const { name, args } = marker;
  const step = view.step;
  const base = { scenario: name, step, blocks: [], stop: 'end_turn', delayMs: 0, pings: false, unknown: false, crlf: false, split: false };
  const lastResult = () => view.toolResults.map((r) => r.content).join(' | ');
  switch (name) {
    case 'text':
      return { ...base, blocks: [text(TEXT_REPLY)] };
    case 'text-crlf':
      return { ...base, blocks: [text(TEXT_REPLY, 3)], crlf: true, split: true };
    case 'pings':
      return { ...base, blocks: [text(TEXT_REPLY)], pings: true };
    case 'unknown-event':
      return { ...base, blocks: [{ type: 'unknown' }, text(TEXT_REPLY)], unknown: true };
    case 'thinking':
      return {
        ...base,
        blocks: [{ type: 'thinking', deltas: pieces(THINKING_TEXT, 5), signature: THINKING_SIGNATURE }, text(THINKING_REPLY)],
      };
    case 'tool-fragments': {
      const path = args[0] || 'index.html';
      if (step === 0) {
        return { ...base, blocks: [text(`I'll write ${path}.`), toolUse('write_file', { path, content: PAGE_HTML })], stop: 'tool_use', delayMs: 3 };
      }
      return { ...base, blocks: [text(`Done. The tool said: ${lastResult()}`)] };
    }
    case 'tools': {
      const steps = [
        () => [text('Step one.'), toolUse('write_file', { path: 'src/a.txt', content: 'alpha\n' })],
        () => [toolUse('write_file', { path: 'src/b.txt', content: TOOLS_FILES['src/b.txt'] }), toolUse('read_file', { path: 'src/a.txt' })],
        () => [text('Editing.'), toolUse('edit_file', { path: 'src/a.txt', old: 'alpha', new: 'beta' })],
        () => [toolUse('list_files', {})],
      ];
      if (step < steps.length) return { ...base, blocks: steps[step](), stop: 'tool_use' };
      return { ...base, blocks: [text(`Files now: ${lastResult()}`)] };
    }
    case 'error':
      return { ...base, blocks: [text(ERROR_PARTIAL.repeat(4), 8)], fail: { kind: 'error', afterDeltas: int(args[0], 5) } };
    case 'cut':
      return { ...base, blocks: [text(CUT_PARTIAL.repeat(4), 8)], fail: { kind: 'cut', afterDeltas: int(args[0], 5) } };
    case 'overloaded': {
      const key = args[0] || 'default';
      const times = int(args[3], 1);
      const seen = busyKeys.get(key) || 0;
      if (seen < times) {
        busyKeys.set(key, seen + 1);
        return { ...base, busy: { status: int(args[1], 529), retryAfter: int(args[2], 1) } };
      }
      return { ...base, blocks: [text(RECOVERED_REPLY)] };
    }
    case 'slow': {
      const n = int(args[0], 50);
      return { ...base, blocks: [{ type: 'text', deltas: Array.from({ length: n }, (_, i) => `w${i} `) }], delayMs: int(args[1], 20) };
    }
    case 'long': {
      const n = int(args[0], 1000);
      return { ...base, blocks: [{ type: 'text', deltas: Array.from({ length: n }, (_, i) => `t${i} `) }], firstMs: int(args[1], 0) };
    }
    case 'blocks': {
      const n = int(args[0], 100);
      return { ...base, blocks: Array.from({ length: n }, (_, i) => ({ type: 'text', deltas: [`b${i} `] })) };
    }
    case 'command': {
      const path = args[0] || 'notes.txt';
      if (step === 0) {
        return {
          ...base,
          blocks: [text(`Writing ${path}, then reading it in the sandbox.`), toolUse('write_file', { path, content: COMMAND_FILE }), toolUse('run_command', { command: `cat ${path} && pwd` })],
          stop: 'tool_use',
        };
      }
      return { ...base, blocks: [text(`Command said: ${lastResult()}`)] };
    }
    case 'forever':
      return { ...base, blocks: [text(`Looking again (${step}).`), toolUse('list_files', {})], stop: 'tool_use' };
    case 'bad-tool-input': {
      if (step > 0) return { ...base, blocks: [text(`Tool error seen: ${lastResult()}`)] };
      const kind = args[0] || 'json';
      const block =
        kind === 'missing'
          ? toolUse('write_file', { path: 'missing.txt' })
          : kind === 'path'
            ? toolUse('write_file', { path: '../escape.txt', content: 'nope' })
            : kind === 'notool'
              ? toolUse('launch_rockets', { count: 3 })
              : toolUse('write_file', null, { raw: '{"path": "broken.txt", "content": "unterminated' });
      return { ...base, blocks: [text('Trying a tool.'), block], stop: 'tool_use' };
    }
    case 'max-tokens':
      return { ...base, blocks: [text(MAX_TOKENS_REPLY)], stop: 'max_tokens' };
    case 'echo': {
      const doc = {
        messages: view.messages,
        roles: view.roles,
        tool_results: view.allToolResults,
        last_user_text: view.lastUserText,
      };
      return { ...base, blocks: [text(ECHO_PREFIX + JSON.stringify(doc), 16)] };
    }
    default:
      return { ...base, blocks: [text(`Unknown scenario ${name}; plain text instead.`)] };
  }
}

/** Output tokens a plan reports: one per delta or fragment. */
export function outputTokens(p) {
  let n = 0;
  for (const b of p.blocks) n += (b.deltas || b.fragments || []).length;
  return Math.max(n, 1);
}

/** Sleeps ms milliseconds (0: yields once). */
export const sleep = (ms) => new Promise((r) => (ms > 0 ? setTimeout(r, ms) : setImmediate(r)));
