// The server's OpenAPI document as a validator: what a route answers can be checked against the
// schema the document gives for that route and status. Ajv, JSON Schema 2020-12 (OpenAPI 3.1's
// dialect); `strict: false` lets OpenAPI's own keywords (`x-itemSchema`, ...) pass unread.

import assert from 'node:assert/strict';

import Ajv2020 from 'ajv/dist/2020.js';

import { expectJson, get } from './client.mjs';

/** A JSON pointer's escaping of one path segment. */
export const escapePointer = (s) => s.replaceAll('~', '~0').replaceAll('/', '~1');

/**
 * Reads GET /v1/openapi.json. Resolves { doc, validatorAt(pointer), answerPointer(method, path,
 * status, kind), conforms(pointer, value, what), answers(method, path, status, value) }.
 */
export async function openApiDocument() {
  const doc = expectJson(await get('/v1/openapi.json'), 200);
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  ajv.addFormat('date-time', (s) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(s) && !Number.isNaN(Date.parse(s)));
  ajv.addFormat('date', /^\d{4}-\d\d-\d\d$/);
  ajv.addFormat('email', /^[^@\s]+@[^@\s]+$/);
  ajv.addFormat('uri', (s) => URL.canParse(s));
  ajv.addFormat('binary', () => true);
  ajv.addSchema(doc, 'openapi.json');

  /** The validator of a schema given by its JSON pointer in the document. */
  const validatorAt = (pointer) => {
    const v = ajv.getSchema(`openapi.json#${pointer}`);
    assert.ok(v, `the document has a schema at ${pointer}`);
    return v;
  };
  /** The pointer of a route's answer: its JSON body's schema, or its SSE events' `data` (kind 'sse'). */
  const answerPointer = (method, path, status, kind = 'json') => {
    const response = doc.paths[path]?.[method]?.responses?.[String(status)];
    assert.ok(response, `the document lists ${method.toUpperCase()} ${path} answering ${status}`);
    const base = `/paths/${escapePointer(path)}/${method}/responses/${status}/content`;
    if (kind === 'sse') {
      assert.ok(response.content?.['text/event-stream']?.['x-itemSchema'], `${method} ${path} ${status} describes its SSE events`);
      return `${base}/text~1event-stream/x-itemSchema/properties/data/contentSchema`;
    }
    assert.ok(response.content?.['application/json']?.schema, `${method} ${path} ${status} has a JSON schema`);
    return `${base}/application~1json/schema`;
  };
  /** Asserts `value` matches the schema at `pointer`. */
  const conforms = (pointer, value, what) => {
    const v = validatorAt(pointer);
    assert.ok(v(value), `${what} does not match the document (${pointer}): ${ajv.errorsText(v.errors)}\n${JSON.stringify(value).slice(0, 600)}`);
  };
  /** Asserts a route's JSON answer matches what the document says it answers with `status`. */
  const answers = (method, path, status, value, what = `${method.toUpperCase()} ${path} ${status}`) =>
    conforms(answerPointer(method, path, status), value, what);
  return { doc, validatorAt, answerPointer, conforms, answers };
}
