// Talking to the media-service: JSON with the operator token (if one is entered), and server-sent events read
// with fetch (EventSource cannot send an Authorization header).

const TOKEN_KEY = "livedub.operator.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export function authHeaders(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : { ...extra };
}

// Returns {ok, status, body}; never throws for HTTP errors (the page shows them in words).
export async function request(path, { method = "GET", body } = {}) {
  const headers = authHeaders(body === undefined ? {} : { "Content-Type": "application/json" });
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let parsed = null;
  try {
    parsed = await response.json();
  } catch {
    parsed = null;
  }
  return { ok: response.ok, status: response.status, body: parsed };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Follow an SSE endpoint: onData(object) per `data:` event; onState(text) when the connection changes.
// Reconnects after a drop; the server replays from the start, so callers key what they keep.
export function follow(url, onData, onState = () => {}) {
  let stopped = false;
  let controller = null;
  (async () => {
    while (!stopped) {
      controller = new AbortController();
      try {
        const response = await fetch(url, {
          headers: authHeaders({ Accept: "text/event-stream" }),
          signal: controller.signal,
        });
        if (!response.ok) {
          onState(`unavailable (HTTP ${response.status})`);
        } else {
          onState("live");
          await readEvents(response.body, onData);
          onState("ended");
        }
      } catch (error) {
        if (stopped) return;
        onState("disconnected");
      }
      await sleep(3000);
    }
  })();
  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}

async function readEvents(stream, onData) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) continue;
      try {
        onData(JSON.parse(data));
      } catch (error) {
        console.warn("livedub: an event that is not JSON", data);
      }
    }
  }
}
