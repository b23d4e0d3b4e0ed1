// Server-sent events over fetch (EventSource cannot POST or send headers).

/**
 * Reads an SSE response body and calls onEvent({id, event, data}) for each
 * event. Resolves when the server ends the stream; rejects when the
 * connection breaks.
 * @param {ReadableStream<Uint8Array>} body
 * @param {(ev: {id: string, event: string, data: string}) => void} onEvent
 */
export async function readSse(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let id = '';
  let event = '';
  let data = [];
  const line = (l) => {
    if (l === '') {
      if (data.length) onEvent({ id, event: event || 'message', data: data.join('\n') });
      event = '';
      data = [];
      return;
    }
    if (l[0] === ':') return;
    const i = l.indexOf(':');
    const field = i < 0 ? l : l.slice(0, i);
    let value = i < 0 ? '' : l.slice(i + 1);
    if (value[0] === ' ') value = value.slice(1);
    if (field === 'data') data.push(value);
    else if (field === 'id') id = value;
    else if (field === 'event') event = value;
  };
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let start = 0;
      for (;;) {
        const nl = buf.indexOf('\n', start);
        if (nl < 0) break;
        let l = buf.slice(start, nl);
        if (l.endsWith('\r')) l = l.slice(0, -1);
        start = nl + 1;
        line(l);
      }
      buf = buf.slice(start);
    }
  } finally {
    reader.releaseLock();
  }
}
