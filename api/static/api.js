// Thin fetch wrapper for the broker's JSON API: Bearer auth, problem+json errors.

export class ApiError extends Error {
  constructor(status, problem, headers) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
    this.code = this.problem.code || (status === 0 ? "network_error" : `http_${status}`);
    this.headers = headers || new Headers();
  }

  /** Seconds from a Retry-After header (delta-seconds or HTTP date), else fallback. */
  retryAfter(fallback = 30) {
    const raw = this.headers.get("Retry-After");
    if (!raw) return fallback;
    const n = Number(raw);
    if (Number.isFinite(n) && n >= 0) return Math.ceil(n);
    const at = Date.parse(raw);
    return Number.isNaN(at) ? fallback : Math.max(1, Math.ceil((at - Date.now()) / 1000));
  }
}

export async function api(method, path, { token, body, headers = {}, keepalive = false, signal } = {}) {
  const h = { Accept: "application/json, application/problem+json", ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  const init = { method, headers: h, cache: "no-store", credentials: "same-origin", keepalive, signal };
  if (body !== undefined) {
    h["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, { code: "network_error", detail: String((err && err.message) || err) });
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text.slice(0, 200) };
    }
  }
  if (!res.ok) throw new ApiError(res.status, data, res.headers);
  return data;
}

export const enc = encodeURIComponent;

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
