// The live stream: server-sent events read with fetch, so the request carries the
// Authorization header (EventSource cannot send one), and resumed after a drop with
// Last-Event-ID so nothing between the drop and the reconnection is missed.

const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 15000;

// Split a text/event-stream body into messages {event, data, id}.
export async function* messages(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const abort = () => reader.cancel().catch(() => {});
  signal?.addEventListener("abort", abort, { once: true });
  let buffer = "";
  let message = { event: "message", data: [], id: null };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (message.data.length) {
            yield { event: message.event, data: message.data.join("\n"), id: message.id };
          }
          message = { event: "message", data: [], id: message.id };
          continue;
        }
        if (line.startsWith(":")) continue; // a comment: the server's keep-alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value_ = colon < 0 ? "" : line.slice(colon + 1);
        if (value_.startsWith(" ")) value_ = value_.slice(1);
        if (field === "event") message.event = value_;
        else if (field === "data") message.data.push(value_);
        else if (field === "id") message.id = value_;
      }
    }
  } finally {
    signal?.removeEventListener("abort", abort);
  }
}

// Follow `url` until `signal` aborts: onMessage for each message, onState("live" |
// "reconnecting" | "refused", detail) as the connection changes. A 401 or 403 is not
// retried: the token is wrong, and the user must say so.
export async function follow(url, { headers, onMessage, onState, signal }) {
  let lastId = null;
  let wait = RETRY_MIN_MS;
  while (!signal.aborted) {
    try {
      const h = { ...headers(), Accept: "text/event-stream" };
      if (lastId !== null) h["Last-Event-ID"] = lastId;
      const response = await fetch(url, { headers: h, signal, cache: "no-store" });
      if (response.status === 401 || response.status === 403) {
        onState("refused", response);
        return;
      }
      if (!response.ok || !response.body) throw new Error(`the live stream answered ${response.status}`);
      onState("live");
      wait = RETRY_MIN_MS;
      for await (const m of messages(response.body, signal)) {
        if (m.id !== null) lastId = m.id;
        onMessage(m);
      }
      throw new Error("the live stream ended");
    } catch (error) {
      if (signal.aborted) return;
      onState("reconnecting", error);
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(wait * 2, RETRY_MAX_MS);
    }
  }
}
