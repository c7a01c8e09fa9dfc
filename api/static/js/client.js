// The API under /api/v1, with the token from session storage. An error answer
// (application/problem+json) becomes an ApiError that says what was wrong and where.

const BASE = "/api/v1";
const KEY = "aisle.token";

export const token = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (value) => sessionStorage.setItem(KEY, value.trim()),
  // Forgetting (the "Forget it" button, a refused token) leaves nothing behind: the
  // tab's copy, and a cookie session (POST /session) if one was ever opened.
  clear() {
    sessionStorage.removeItem(KEY);
    fetch(`${BASE}/session`, { method: "DELETE", cache: "no-store" }).catch(() => {});
  },
  // `aisle serve` prints the dashboard's URL with #token=...: kept, then taken off the
  // address bar (a fragment never reaches a server, and now not the history either).
  fromLocation() {
    const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (!m) return;
    this.set(decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  },
};

export class ApiError extends Error {
  constructor(status, problem, path) {
    const where = problem.field ? ` (${problem.field})` : "";
    const what = problem.detail || problem.title || `HTTP ${status}`;
    super(`${what}${where}`);
    this.status = status;
    this.problem = problem;
    this.path = path;
  }
  get unauthorized() {
    return this.status === 401;
  }
}

export function headers(extra = {}) {
  const h = { ...extra };
  const t = token.get();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

export function url(path, query = {}) {
  const u = new URL(BASE + path, location.origin);
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined || v === null || v === "") continue;
    for (const one of Array.isArray(v) ? v : [v]) u.searchParams.append(k, String(one));
  }
  return u;
}

async function problemOf(response) {
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) {
    try {
      return await response.json();
    } catch {
      /* not JSON after all */
    }
  }
  const text = await response.text().catch(() => "");
  return { title: response.statusText, detail: text.slice(0, 200) || `HTTP ${response.status}` };
}

export async function api(path, { method = "GET", query, body, idempotencyKey } = {}) {
  const h = headers({ Accept: "application/json" });
  if (body !== undefined) h["Content-Type"] = "application/json";
  if (idempotencyKey) h["Idempotency-Key"] = idempotencyKey;
  let response;
  try {
    response = await fetch(url(path, query), {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(0, { title: "the API does not answer", detail: `the API does not answer (${error.message})` }, path);
  }
  if (!response.ok) throw new ApiError(response.status, await problemOf(response), path);
  if (response.status === 204) return null;
  return response.json();
}

// A key for one click: a retry of the same click publishes one event.
export function newKey() {
  return crypto.randomUUID();
}
