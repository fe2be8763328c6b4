// The hotline's console: operator token (this tab only), outages with live usage against the caps,
// SLA deadlines with countdowns, declare / acknowledge / restore / planned end, conferences (priority,
// max, ports held) and their participants, tickets, contracts due for renewal.
// Live: server-sent events of every decision (GET /v1/events with a short-lived stream ticket, never
// the operator token in a URL); reconnects by itself from the last event it got; polls every 2 s
// when the event stream cannot be had.
// Everything from the API is put on the page with textContent (never innerHTML).

import { api, ApiError, enc } from "./api.js";
import { applyI18n, fmtDateTime, fmtDuration, fmtTime, getLang, onLangChange, setText, setupLangSwitch, t } from "./i18n.js";

const PARIS = "Europe/Paris";
const TOKEN_KEY = "backupplus.operator_token";
const POLL_MS = 2000;
const SAFETY_REFRESH_MS = 30000; // a full refresh now and then even while live
const RENEWALS_MS = 10 * 60000;
const LOG_SIZE = 5; // decisions shown per outage
const NAME_KEY = "backupplus.operator_name";
const GONE_STATES = new Set(["left", "gone", "released", "removed", "expired", "ended", "disconnected"]);

const $ = (id) => document.getElementById(id);
const el = {
  login: $("login"), token: $("token"), loginError: $("login-error"), app: $("app"), signOut: $("sign-out"),
  conn: $("conn"), declare: $("declare"), contract: $("d-contract"), serial: $("d-serial"),
  priority: $("d-priority"), site: $("d-site"), contact: $("d-contact"), reported: $("d-reported"),
  description: $("d-description"), slaPreview: $("sla-preview"), declareError: $("declare-error"),
  declareOk: $("declare-ok"), contractsList: $("contracts-list"), serialsList: $("serials-list"),
  onlyActive: $("only-active"), outages: $("outages"), noOutages: $("no-outages"),
  outageTpl: $("outage-tpl"), confTpl: $("conf-tpl"), company: $("d-company"), model: $("d-model"),
  declareMismatch: $("declare-mismatch"), live: $("live"), ticketSearch: $("ticket-search"),
  ticketQuery: $("t-query"), ticketError: $("ticket-error"), ticketResults: $("ticket-results"),
  renewalList: $("renewal-list"), noRenewals: $("no-renewals"),
};

let token = null;
try {
  token = sessionStorage.getItem(TOKEN_KEY);
} catch { /* storage disabled: ask each time */ }
let pollTimer = null;
let pollRun = 0;
let contracts = [];
let declareKey = null;
const cards = new Map(); // outage id -> card
const joinLinks = new Map(); // conference id -> join_url created in this tab
const logs = new Map(); // outage id -> its last decisions, newest first
const names = new Map(); // participant id -> display name (from the decisions and the conferences)
const confTitles = new Map(); // conference id -> title
const live = { es: null, lastId: null, failures: 0, timer: null, run: 0, safety: null };
const pendingRefresh = new Map(); // outage id -> timer (refreshes coalesced)
let renewalsTimer = null;

// ---------------------------------------------------------------- helpers

function call(method, path, opts = {}) {
  return api(method, path, { ...opts, token });
}

function show(elm, key, vars, cls) {
  if (!key) {
    setText(elm, null);
    elm.hidden = true;
    return;
  }
  setText(elm, key, vars);
  if (cls !== undefined) elm.className = cls;
  elm.hidden = false;
}

function showText(elm, text, cls) {
  setText(elm, null);
  elm.textContent = text;
  if (cls !== undefined) elm.className = cls;
  elm.hidden = !text;
}

// The labels of the fields a problem's `errors` name (by the last part of their `loc`).
const DECLARE_FIELDS = {
  contract: "contract_label", serial: "serial_label", site: "site_label", contact: "contact_label",
  description: "description_label", company: "company_label", model: "model_label", priority: "priority_label",
  reported_at: "reported_label",
};
const CONF_FIELDS = {
  "max.video": "max_video_label", "max.audio": "max_audio_label", "reserve.video": "reserve_video_label",
  "reserve.audio": "reserve_audio_label", priority: "conf_priority_label", title: "conf_title_label",
};

function fieldLoc(e) {
  return (Array.isArray(e.loc) ? e.loc : [e.loc]).map(String)
    .filter((x) => x !== "body" && x !== "query" && x !== "header" && x !== "ticket");
}

/** "Site: is required; Max video: must be at most …" from a problem's field errors. */
function fieldErrorsText(errors, labels) {
  return errors.map((e) => {
    const loc = fieldLoc(e);
    const key = labels[loc.join(".")] || labels[loc[loc.length - 1]];
    const name = key ? t(key) : loc.join(".");
    const msg = e.type === "missing" || e.type === "string_too_short" ? t("field_required") : e.msg || "";
    return `${name}: ${msg}`;
  }).join("; ");
}

/** A refusal in words: an eligibility reason, or the error code's text. */
function refusalText(code, reason, vars = {}) {
  if (code === "not_eligible") {
    const key = `reason_${reason}`;
    const text = t(key);
    return text === key ? t("reason_unknown", { reason: reason || "?" }) : text;
  }
  const key = `err_${code}`;
  const text = t(key, vars);
  return text === key ? code || "?" : text;
}

/** A problem+json error in words. */
function problemText(err, labels = DECLARE_FIELDS) {
  if (!(err instanceof ApiError)) return String((err && err.message) || err);
  const p = err.problem || {};
  if (err.status === 0) return t("err_network");
  if (err.code === "not_eligible") return refusalText("not_eligible", p.reason);
  if (Array.isArray(p.errors) && p.errors.length) return t("err_validation", { fields: fieldErrorsText(p.errors, labels) });
  const key = `err_${err.code}`;
  const text = t(key, p);
  if (text !== key) return text;
  return p.detail || p.title || `HTTP ${err.status}`;
}

function parisParts(date) {
  const parts = new Intl.DateTimeFormat("en-CA", {
    timeZone: PARIS, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
  }).formatToParts(date);
  const o = {};
  for (const p of parts) if (p.type !== "literal") o[p.type] = Number(p.value);
  return o;
}

function parisOffsetMinutes(date) {
  const p = parisParts(date);
  const asUtc = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second);
  return Math.round((asUtc - Math.floor(date.getTime() / 1000) * 1000) / 60000);
}

/** A Date as the value of an <input type=datetime-local>, in Paris wall-clock time. */
function toParisInput(date) {
  const p = parisParts(date);
  const z = (n) => String(n).padStart(2, "0");
  return `${p.year}-${z(p.month)}-${z(p.day)}T${z(p.hour)}:${z(p.minute)}`;
}

/** "2024-11-28T12:00" (Paris wall clock) -> "2024-11-28T12:00:00+01:00". */
function parisInputToIso(value) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(value || "");
  if (!m) return null;
  const [y, mo, d, h, mi] = m.slice(1).map(Number);
  const wall = Date.UTC(y, mo - 1, d, h, mi);
  let off = parisOffsetMinutes(new Date(wall));
  off = parisOffsetMinutes(new Date(wall - off * 60000));
  const sign = off >= 0 ? "+" : "-";
  const z = (n) => String(Math.abs(n)).padStart(2, "0");
  return `${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:00${sign}${z(Math.trunc(off / 60))}:${z(off % 60)}`;
}

function q(root, cls) {
  return root.querySelector(`.${cls}`);
}

/** "14:02" in Paris time. */
function hm(value) {
  const d = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(d.getTime())) return "—";
  return new Intl.DateTimeFormat(getLang() === "fr" ? "fr-FR" : "en-GB", {
    hour: "2-digit", minute: "2-digit", timeZone: PARIS,
  }).format(d);
}

/** "2026-12-01" -> "1 Dec 2026". */
function fmtDay(value) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value || "");
  if (!m) return value || "—";
  return new Intl.DateTimeFormat(getLang() === "fr" ? "fr-FR" : "en-GB", {
    day: "numeric", month: "short", year: "numeric", timeZone: "UTC",
  }).format(new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]))));
}

function operatorName() {
  try {
    return sessionStorage.getItem(NAME_KEY) || "";
  } catch {
    return "";
  }
}

function rememberName(name) {
  try {
    sessionStorage.setItem(NAME_KEY, name);
  } catch { /* this tab only, when it can */ }
  for (const card of cards.values()) {
    const input = q(card.root, "o-ack-form").elements.by;
    if (!input.value) input.value = name;
  }
}

// ---------------------------------------------------------------- sign-in

function showLogin(errorKey) {
  stopPolling();
  stopLive();
  clearTimeout(renewalsTimer);
  token = null;
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch { /* ignore */ }
  for (const card of cards.values()) card.root.remove();
  cards.clear();
  el.app.hidden = true;
  el.signOut.hidden = true;
  el.login.hidden = false;
  show(el.loginError, errorKey || null);
  el.token.value = "";
  el.token.focus();
}

async function signIn(candidate) {
  token = candidate;
  try {
    const outages = await call("GET", "/v1/outages");
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch { /* tab-only storage unavailable: keep it in memory */ }
    el.token.value = "";
    el.login.hidden = true;
    el.app.hidden = false;
    el.signOut.hidden = false;
    show(el.loginError, null);
    renderOutages(outages);
    loadContracts();
    loadRenewals();
    updateSlaPreview();
    startLive();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) showLogin("token_refused");
    else if (err instanceof ApiError && err.status === 403) showLogin("token_forbidden");
    else {
      el.login.hidden = false;
      showText(el.loginError, problemText(err), "field-error");
    }
  }
}

// ---------------------------------------------------------------- polling (the fallback)

function stopPolling() {
  pollRun++;
  clearTimeout(pollTimer);
  pollTimer = null;
}

function startPolling(every = POLL_MS) {
  stopPolling();
  const run = pollRun;
  const loop = async () => {
    if (run !== pollRun) return;
    const started = Date.now();
    await refresh();
    if (run !== pollRun) return;
    pollTimer = setTimeout(loop, Math.max(250, every - (Date.now() - started)));
  };
  pollTimer = setTimeout(loop, every);
}

async function refresh() {
  try {
    const outages = await call("GET", "/v1/outages");
    renderOutages(outages);
    setText(el.conn, "conn_ok", { time: fmtTime(new Date(), PARIS) });
    el.conn.className = "conn";
    await Promise.all([...cards.values()].filter((c) => c.details.open).map((c) => loadConferences(c)));
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      showLogin("token_refused");
      return;
    }
    setText(el.conn, "conn_error", { detail: problemText(err) });
    el.conn.className = "conn conn-error";
  }
}

/** One outage again (after a decision on it), coalesced: a burst of decisions is one request. */
function refreshOutage(id, delay = 80) {
  if (pendingRefresh.has(id)) return;
  pendingRefresh.set(id, setTimeout(async () => {
    pendingRefresh.delete(id);
    const card = cards.get(id);
    if (!card) {
      refresh();
      return;
    }
    try {
      updateCard(card, await call("GET", `/v1/outages/${enc(id)}`));
      if (card.details.open) await loadConferences(card);
      setText(el.conn, "conn_ok", { time: fmtTime(new Date(), PARIS) });
      el.conn.className = "conn";
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) showLogin("token_refused");
    }
  }, delay));
}

// ---------------------------------------------------------------- live (server-sent events)

function setLive(mode) {
  document.body.dataset.live = mode;
  setText(el.live, `live_${mode}`);
  el.live.className = `live live-${mode}`;
}

function stopLive() {
  live.run++;
  clearTimeout(live.timer);
  clearInterval(live.safety);
  live.timer = null;
  live.safety = null;
  if (live.es) live.es.close();
  live.es = null;
}

function scheduleLive(ms) {
  clearTimeout(live.timer);
  const run = live.run;
  live.timer = setTimeout(() => { if (run === live.run) startLive(); }, ms);
}

/** The stream failed (refused, or the broker went away): retry with backoff; after 3 failures in a
 * row, poll every 2 s meanwhile and try the stream again every 30 s. */
function liveFailed() {
  if (live.es) live.es.close();
  live.es = null;
  live.failures += 1;
  if (live.failures >= 3) {
    setLive("polling");
    if (!pollTimer) startPolling();
    scheduleLive(30000);
  } else {
    setLive("reconnecting");
    scheduleLive(Math.min(10000, 500 * 2 ** live.failures));
  }
}

async function startLive() {
  stopLive();
  if (!token) return;
  const run = live.run;
  if (typeof EventSource !== "function") {
    setLive("polling");
    startPolling();
    return;
  }
  if (!document.body.dataset.live || document.body.dataset.live === "off") setLive("connecting");
  let ticket;
  try {
    ticket = await call("POST", "/v1/events/tickets");
  } catch (err) {
    if (run !== live.run) return;
    if (err instanceof ApiError && err.status === 401) {
      showLogin("token_refused");
      return;
    }
    liveFailed();
    return;
  }
  if (run !== live.run) return;
  // The ticket goes in the URL (an EventSource cannot send headers): it opens this stream for a
  // minute and nothing else. Where we left off goes along, so that nothing is missed.
  const params = new URLSearchParams({ ticket: ticket.ticket });
  if (live.lastId) params.set("last_event_id", live.lastId);
  else params.set("backlog", String(LOG_SIZE));
  const es = new EventSource(`/v1/events?${params}`);
  live.es = es;
  es.addEventListener("ready", (ev) => {
    if (run !== live.run) return;
    if (ev.lastEventId) live.lastId = ev.lastEventId;
    live.failures = 0;
    setLive("sse");
    stopPolling();
    refresh();
    clearInterval(live.safety);
    live.safety = setInterval(() => { if (run === live.run) refresh(); }, SAFETY_REFRESH_MS);
  });
  es.addEventListener("audit", (ev) => {
    if (run !== live.run) return;
    if (ev.lastEventId) live.lastId = ev.lastEventId;
    try {
      onDecision(JSON.parse(ev.data));
    } catch { /* a malformed event: the next refresh shows the state anyway */ }
  });
  es.addEventListener("close", () => {
    // The broker ends streams now and then (lifetime, shutdown): reconnect with a new ticket.
    if (run !== live.run) return;
    es.close();
    live.es = null;
    setLive("reconnecting");
    scheduleLive(300);
  });
  es.addEventListener("error", () => {
    if (run !== live.run) return;
    // CONNECTING: the browser reconnects by itself (Last-Event-ID sent), unless that keeps
    // failing; CLOSED: it gave up (the ticket expired, the broker refused): we reconnect with a
    // new ticket, from the last event we got.
    if (es.readyState !== EventSource.CLOSED && live.failures < 2) {
      live.failures += 1;
      setLive("reconnecting");
    } else liveFailed();
  });
}

/** A decision on an outage, as it happens: its words in the card, and the card refreshed. */
function onDecision(e) {
  if (!e || !e.outage) return;
  if (e.participant && e.name) names.set(e.participant, e.name);
  const list = logs.get(e.outage) || [];
  if (!list.some((x) => x.id === e.id)) {
    list.unshift(e);
    list.sort((a, b) => Number(b.at) - Number(a.at));
    list.length = Math.min(list.length, LOG_SIZE);
    logs.set(e.outage, list);
  }
  const card = cards.get(e.outage);
  if (card) renderLog(card);
  refreshOutage(e.outage);
}

const REFUSALS = {
  capacity_exhausted: "ev_refused_full", rate_limited: "ev_refused_rate", outage_ended: "ev_refused_ended",
  conference_closed: "ev_refused_closed",
};

function kindWord(kind) {
  return kind === "audio" ? t("kind_audio_short") : kind === "video" ? t("kind_video_short") : kind || "";
}

/** "14:02 Claire refused: video full". */
function decisionText(e) {
  const who = e.name || names.get(e.participant) || t("someone");
  const vars = { name: who, kind: kindWord(e.kind), by: e.by || "", ticket: e.ticket || "", priority: e.priority || "",
    participants: e.participants || "0", repairs: e.repairs || "", type: e.type || "?", code: e.code || "" };
  let key = `ev_${e.type}`;
  if (e.type === "refused") {
    key = e.reason === "conference_max" ? "ev_refused_max" : REFUSALS[e.code] || "ev_refused";
  } else if (e.type === "acknowledged" && e.result === "missed") key = "ev_acknowledged_late";
  else if (e.type === "deadline_missed") key = e.deadline === "ack" ? "ev_deadline_missed_ack" : "ev_deadline_missed_restore";
  else if (e.type === "preempted") vars.name = names.get(e.participant) || t("someone");
  else if (e.type === "planned_end_set") vars.when = e.planned_end ? fmtDateTime(e.planned_end, PARIS) : "";
  else if (e.type === "restored" && !e.by) key = "ev_restored_anon";
  else if (e.type === "left" && e.state && e.state !== "left") key = "ev_left_state";
  vars.state = e.state || "";
  const text = t(key, vars);
  return `${hm(Number(e.at) || e.at_iso)} ${text === key ? t("ev_unknown", vars) : text}`;
}

function renderLog(card) {
  const list = logs.get(card.id) || [];
  const ol = q(card.root, "o-log");
  ol.replaceChildren(...list.map((e) => {
    const li = document.createElement("li");
    li.dataset.type = e.type || "";
    li.textContent = decisionText(e);
    return li;
  }));
  q(card.root, "o-log-empty").hidden = list.length > 0;
}

// ---------------------------------------------------------------- outages

function renderOutages(outages) {
  const list = Array.isArray(outages) ? outages : outages && Array.isArray(outages.items) ? outages.items : [];
  const onlyActive = el.onlyActive.checked;
  const shown = list
    .filter((o) => !onlyActive || o.state === "active")
    .sort((a, b) => {
      const act = (o) => (o.state === "active" ? 0 : 1);
      return act(a) - act(b) || String(b.reported_at || "").localeCompare(String(a.reported_at || ""));
    });
  const keep = new Set(shown.map((o) => o.id));
  for (const [id, card] of cards) {
    if (!keep.has(id)) {
      card.root.remove();
      cards.delete(id);
    }
  }
  shown.forEach((o) => {
    let card = cards.get(o.id);
    if (!card) {
      card = makeCard(o.id);
      cards.set(o.id, card);
    }
    updateCard(card, o);
  });
  // Reorder only when needed: moving a node would steal the operator's focus.
  const current = [...el.outages.children];
  const wanted = shown.map((o) => cards.get(o.id).root);
  if (current.length !== wanted.length || current.some((n, i) => n !== wanted[i])) {
    el.outages.append(...wanted);
  }
  el.noOutages.hidden = shown.length > 0;
}

async function outageAction(card, button, method, path, body, okKey) {
  if (button) button.disabled = true;
  try {
    const o = await call(method, path, body === undefined ? {} : { body });
    if (okKey) show(card.msg, okKey, {}, "ok o-error");
    else show(card.msg, null);
    if (o && o.id) updateCard(card, o);
    return o;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) showLogin("token_refused");
    else showText(card.msg, problemText(err), "field-error o-error");
    return null;
  } finally {
    if (button) button.disabled = false;
  }
}

function makeCard(id) {
  const root = el.outageTpl.content.firstElementChild.cloneNode(true);
  root.id = `outage-${id}`;
  root.dataset.outage = id;
  const title = q(root, "o-title");
  title.tabIndex = -1;
  root.setAttribute("aria-labelledby", (title.id = `outage-title-${id}`));
  applyI18n(root);
  const card = {
    id, root, data: null,
    details: q(root, "o-confs"), confs: new Map(),
    msg: q(root, "o-error"),
  };
  const ackForm = q(root, "o-ack-form");
  ackForm.elements.by.value = operatorName();
  ackForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const by = ackForm.elements.by.value.trim();
    if (!by) {
      show(card.msg, "ack_name_missing", {}, "field-error o-error");
      ackForm.elements.by.focus();
      return;
    }
    const o = await outageAction(card, ackForm.querySelector("button"), "POST", `/v1/outages/${enc(id)}/acknowledge`,
      { by });
    if (o) rememberName(by);
  });
  const restoreBtn = q(root, "o-restore-btn");
  const confirm = q(root, "o-confirm");
  restoreBtn.addEventListener("click", () => {
    confirm.hidden = false;
    restoreBtn.hidden = true;
    q(root, "o-restore-yes").focus();
  });
  q(root, "o-restore-no").addEventListener("click", () => {
    confirm.hidden = true;
    restoreBtn.hidden = false;
    restoreBtn.focus();
  });
  const restoreYes = q(root, "o-restore-yes");
  restoreYes.addEventListener("click", async () => {
    const by = operatorName();
    const o = await outageAction(card, restoreYes, "POST", `/v1/outages/${enc(id)}/restore`, by ? { by } : undefined);
    if (o) {
      confirm.hidden = true;
      restoreBtn.hidden = false;
      refresh();
    }
  });
  const plan = q(root, "o-extend");
  plan.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = plan.elements.window_ends_at;
    const iso = parisInputToIso(input.value);
    if (!iso) {
      show(card.msg, "plan_missing", {}, "field-error o-error");
      input.focus();
      return;
    }
    const o = await outageAction(card, plan.querySelector('button[type="submit"]'), "POST",
      `/v1/outages/${enc(id)}/extend`, { window_ends_at: iso }, "extended");
    if (o) input.value = "";
  });
  const clear = q(root, "o-plan-clear");
  clear.addEventListener("click", () => outageAction(card, clear, "POST", `/v1/outages/${enc(id)}/extend`,
    { window_ends_at: null }, "plan_cleared"));
  const newConf = q(root, "o-new-conf");
  newConf.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = newConf.elements;
    const body = {
      title: f.title.value.trim(),
      priority: Number(f.priority.value) || 1,
      reserve: { audio: Number(f.reserve_audio.value) || 0, video: Number(f.reserve_video.value) || 0 },
    };
    if (!body.title) {
      f.title.focus();
      return;
    }
    try {
      const conf = await call("POST", `/v1/outages/${enc(id)}/conferences`, { body });
      if (conf.join_url) joinLinks.set(conf.id, conf.join_url);
      show(card.msg, null);
      f.title.value = "";
      await loadConferences(card);
      const li = card.confs.get(conf.id);
      if (li) q(li.root, "c-copy").focus();
    } catch (err) {
      showText(card.msg, problemText(err, CONF_FIELDS), "field-error o-error");
    }
  });
  card.details.addEventListener("toggle", () => {
    if (card.details.open) loadConferences(card);
  });
  renderLog(card);
  return card;
}

function setMeter(meter, label, key, used, cap) {
  const c = Number(cap) || 0;
  const u = Number(used) || 0;
  meter.max = Math.max(c, 1);
  meter.value = Math.min(u, meter.max);
  meter.low = Math.max(c * 0.6, 0.01);
  meter.high = Math.max(c * 0.9, 0.02);
  meter.optimum = 0;
  setText(label, key, { used: u, cap: c });
  meter.setAttribute("aria-label", t(key, { used: u, cap: c }));
  meter.classList.toggle("full", c > 0 && u >= c);
}

function updateCard(card, o) {
  card.data = o;
  const root = card.root;
  root.dataset.state = o.state || "";
  setText(q(root, "o-title"), "outage_title", { contract: o.contract || "?", serial: o.serial || "?" });
  const badge = q(root, "o-state");
  setText(badge, `state_${o.state}`);
  badge.className = `badge o-state state-${o.state}`;
  const active = o.state === "active";
  q(root, "o-restore-overdue").hidden = !(active && o.restore_overdue);
  root.classList.toggle("restore-overdue", Boolean(active && o.restore_overdue));
  const ticket = o.ticket || {};
  const prio = ticket.priority ? t(`prio_${ticket.priority}`) : "";
  const line = q(root, "o-ticket");
  setText(line, null);
  line.textContent = [
    t("ticket_line", { number: ticket.number || "—", priority: prio, site: ticket.site || "—", contact: ticket.contact || "—" }),
    ticket.description ? `— ${ticket.description}` : "",
  ].join(" ").trim();
  const cap = o.capacity || {};
  const use = o.in_use || {};
  setMeter(q(root, "o-video"), q(root, "o-video-label"), "usage_video", use.video, cap.video);
  setMeter(q(root, "o-audio"), q(root, "o-audio-label"), "usage_audio", use.audio, cap.audio);
  q(root, "o-actions").hidden = !active;
  q(root, "usage").hidden = !active;
  q(root, "o-new-conf").hidden = !active;
  q(root, "o-ack-form").hidden = Boolean(o.acknowledged_at);
  q(root, "o-plan-clear").hidden = !o.window_ends_at;
  const acked = q(root, "o-acked");
  if (o.acknowledged_at) {
    setText(acked, o.ack_met === false ? "acked_late" : "acked_at", {
      when: fmtDateTime(o.acknowledged_at, PARIS), by: o.acknowledged_by || "—",
    });
    acked.hidden = false;
  } else show(acked, null);
  const ended = q(root, "o-ended");
  if (!active && o.ended_at) {
    setText(ended, o.end_reason === "planned_end" ? "ended_planned_end" : "ended_restored", {
      when: fmtDateTime(o.ended_at, PARIS),
    });
    ended.hidden = false;
  } else show(ended, null);
  q(root, "o-conf-count").textContent = String(Array.isArray(o.conferences) ? o.conferences.length : 0);
  renderDeadlines(card);
}

function renderDeadline(dl, iso, active, isDeadline) {
  const dd = dl.querySelector("dd");
  if (!iso) {
    dd.textContent = "—";
    dl.classList.remove("overdue", "soon");
    return;
  }
  const at = new Date(iso);
  const left = at.getTime() - Date.now();
  const when = fmtDateTime(at, PARIS);
  const overdue = active && isDeadline && left < 0;
  dl.classList.toggle("overdue", overdue);
  dl.classList.toggle("soon", active && left >= 0 && left < 3600000);
  if (!active) {
    setText(dd, null);
    dd.textContent = when; // over: the date alone, no countdown
  } else if (left >= 0) setText(dd, "due_in", { when, left: fmtDuration(left) });
  else if (overdue) setText(dd, "overdue_by", { when, left: fmtDuration(-left) });
  else setText(dd, "passed", { when });
}

function renderDeadlines(card) {
  const o = card.data;
  if (!o) return;
  const active = o.state === "active";
  const ack = q(card.root, "o-ack");
  if (o.acknowledged_at) {
    // Taken in charge: the deadline is over, met or not; never OVERDUE any more.
    ack.classList.remove("overdue", "soon");
    ack.classList.add("done");
    setText(ack.querySelector("dd"), o.ack_met === false ? "ack_done_late" : "ack_done", {
      when: fmtDateTime(o.ack_deadline, PARIS),
    });
  } else {
    ack.classList.remove("done");
    renderDeadline(ack, o.ack_deadline, active, true);
  }
  renderDeadline(q(card.root, "o-restore"), o.restore_deadline, active, true);
  const windowDl = q(card.root, "o-window");
  if (!o.window_ends_at) {
    windowDl.classList.remove("overdue", "soon");
    setText(windowDl.querySelector("dd"), active ? "no_planned_end" : null);
    if (!active) windowDl.querySelector("dd").textContent = "—";
  } else renderDeadline(windowDl, o.window_ends_at, active, false);
}

// ---------------------------------------------------------------- conferences and participants

async function loadConferences(card) {
  try {
    const confs = await call("GET", `/v1/outages/${enc(card.id)}/conferences`);
    renderConferences(card, Array.isArray(confs) ? confs : []);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;
    showText(card.msg, problemText(err), "field-error o-error");
  }
}

function renderConferences(card, confs) {
  const list = q(card.root, "o-conf-list");
  const keep = new Set(confs.map((c) => c.id));
  for (const [id, c] of card.confs) {
    if (!keep.has(id)) {
      c.root.remove();
      card.confs.delete(id);
    }
  }
  q(card.root, "o-conf-count").textContent = String(confs.length);
  for (const conf of confs) {
    let c = card.confs.get(conf.id);
    if (!c) {
      c = makeConf(card, conf.id);
      card.confs.set(conf.id, c);
    }
    list.append(c.root); // most important first, as the broker lists them
    updateConf(card, c, conf);
  }
}

function maxValue(input) {
  const raw = input.value.trim();
  return raw === "" ? null : Number(raw);
}

function makeConf(card, id) {
  const root = el.confTpl.content.firstElementChild.cloneNode(true);
  root.dataset.conference = id;
  applyI18n(root);
  const c = { id, root, rows: new Map(), dirty: false };
  const copy = q(root, "c-copy");
  copy.addEventListener("click", async () => {
    const input = q(root, "c-url");
    const note = q(root, "c-copied");
    try {
      await navigator.clipboard.writeText(input.value);
      setText(note, "copied");
    } catch {
      input.focus();
      input.select();
      let ok = false;
      try {
        ok = document.execCommand("copy");
      } catch { /* ignore */ }
      setText(note, ok ? "copied" : "copy_failed");
    }
  });
  const edit = q(root, "c-edit");
  const error = q(root, "c-error");
  const saved = q(root, "c-saved");
  edit.addEventListener("input", () => {
    c.dirty = true;
    setText(saved, null);
  });
  edit.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = edit.elements;
    for (const input of [f.priority, f.max_video, f.max_audio]) input.removeAttribute("aria-invalid");
    const body = { max: { video: maxValue(f.max_video), audio: maxValue(f.max_audio) } };
    if (f.priority.value.trim() !== "") body.priority = Number(f.priority.value);
    const button = edit.querySelector("button");
    button.disabled = true;
    try {
      const conf = await call("PATCH", `/v1/conferences/${enc(id)}`, { body });
      c.dirty = false;
      show(error, null);
      setText(saved, "saved");
      updateConf(card, c, conf);
      loadConferences(card); // the order may change with the priority
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        showLogin("token_refused");
        return;
      }
      showText(error, problemText(err, CONF_FIELDS), "field-error c-error");
      for (const e of (err instanceof ApiError && Array.isArray(err.problem.errors) ? err.problem.errors : [])) {
        const loc = fieldLoc(e).join(".");
        const input = { priority: f.priority, "max.video": f.max_video, "max.audio": f.max_audio }[loc];
        if (input) input.setAttribute("aria-invalid", "true");
      }
    } finally {
      button.disabled = false;
    }
  });
  return c;
}

function limit(value) {
  return value === null || value === undefined ? t("no_max") : String(value);
}

function updateConf(card, c, conf) {
  const root = c.root;
  q(root, "c-title").textContent = conf.title || conf.id;
  confTitles.set(conf.id, conf.title || conf.id);
  const parts = Array.isArray(conf.participants) ? conf.participants : [];
  const present = parts.filter((p) => !GONE_STATES.has(p.state));
  const reserve = conf.reserve || {};
  const max = conf.max || {};
  const held = conf.in_use || {};
  const cap = (card.data && card.data.capacity) || {};
  root.dataset.priority = String(conf.priority ?? "");
  setText(q(root, "c-meta"), "conf_meta", {
    priority: conf.priority ?? "—", rv: reserve.video ?? 0, ra: reserve.audio ?? 0, n: present.length,
  });
  setText(q(root, "c-ports"), "conf_ports", {
    hv: held.video ?? 0, ha: held.audio ?? 0, cv: cap.video ?? "—", ca: cap.audio ?? "—",
    mv: limit(max.video), ma: limit(max.audio),
  });
  const f = q(root, "c-edit").elements;
  const editing = c.dirty || [f.priority, f.max_video, f.max_audio].includes(document.activeElement);
  if (!editing) {
    f.priority.value = conf.priority ?? "";
    f.max_video.value = max.video ?? "";
    f.max_audio.value = max.audio ?? "";
    f.max_video.max = String(cap.video ?? "");
    f.max_audio.max = String(cap.audio ?? "");
  }
  q(root, "c-edit").hidden = !card.data || card.data.state !== "active";
  const url = conf.join_url || joinLinks.get(conf.id);
  const linkRow = q(root, "c-link");
  if (url) {
    q(root, "c-url").value = url;
    linkRow.hidden = false;
  }
  const tbody = q(root, "c-parts");
  const keep = new Set(parts.map((p) => p.id));
  for (const [id, row] of c.rows) {
    if (!keep.has(id)) {
      row.remove();
      c.rows.delete(id);
    }
  }
  for (const p of parts) {
    if (p.id && p.display_name) names.set(p.id, p.display_name);
    let row = c.rows.get(p.id);
    if (!row) {
      row = makeParticipantRow(p.id);
      c.rows.set(p.id, row);
      tbody.append(row);
    }
    const [nameTd, kindTd, stateTd, actTd] = row.children;
    nameTd.textContent = p.display_name || "—";
    setText(kindTd, null);
    kindTd.textContent = t(p.kind === "audio" ? "kind_audio_short" : "kind_video_short") +
      (p.requested_kind && p.requested_kind !== p.kind ? ` (${t("downgraded_short")})` : "");
    const stateKey = `pstate_${p.state}`;
    if (t(stateKey) !== stateKey) setText(stateTd, stateKey);
    else {
      setText(stateTd, null);
      stateTd.textContent = p.state || "";
    }
    const btn = actTd.querySelector("button");
    btn.hidden = GONE_STATES.has(p.state);
    btn.setAttribute("aria-label", t("remove_label", { name: p.display_name || p.id }));
  }
  q(root, "c-empty").hidden = parts.length > 0;
  q(root, "participants").hidden = parts.length === 0;
}

function makeParticipantRow(id) {
  const tr = document.createElement("tr");
  tr.dataset.participant = id;
  for (let i = 0; i < 4; i++) tr.append(document.createElement("td"));
  const btn = document.createElement("button");
  btn.type = "button";
  btn.className = "danger small";
  setText(btn, "remove");
  btn.addEventListener("click", async () => {
    btn.disabled = true;
    try {
      await call("DELETE", `/v1/participants/${enc(id)}`);
      tr.classList.add("removed");
      btn.hidden = true;
      refresh();
    } catch (err) {
      const card = cards.get(tr.closest(".outage")?.dataset.outage);
      if (card) showText(card.msg, problemText(err), "field-error o-error");
    } finally {
      btn.disabled = false;
    }
  });
  tr.lastElementChild.append(btn);
  return tr;
}

// ---------------------------------------------------------------- declare

async function loadContracts() {
  try {
    const list = await call("GET", "/v1/contracts");
    contracts = Array.isArray(list) ? list : [];
    el.contractsList.replaceChildren(
      ...contracts.map((c) => {
        const opt = document.createElement("option");
        opt.value = c.number;
        opt.textContent = c.client && c.client.company ? `${c.number} — ${c.client.company}` : c.number;
        return opt;
      }),
    );
    fillSerials();
  } catch { /* the datalist is a convenience */ }
}

function currentContract() {
  return contracts.find((x) => x.number === el.contract.value.trim());
}

/** The serials of the contract typed, and what the broker will take for company and model. */
function fillSerials() {
  const c = currentContract();
  const equipment = c && Array.isArray(c.equipment) ? c.equipment : [];
  el.serialsList.replaceChildren(
    ...equipment.map((e) => {
      const opt = document.createElement("option");
      opt.value = e.serial;
      opt.textContent = [e.brand, e.model, e.kind].filter(Boolean).join(" · ");
      return opt;
    }),
  );
  el.company.placeholder = c && c.client && c.client.company ? c.client.company : "";
  const item = equipment.find((e) => e.serial === el.serial.value.trim());
  el.model.placeholder = item ? [item.brand, item.model].filter(Boolean).join(" ") : "";
}

async function updateSlaPreview() {
  if (!token) return;
  const reported = el.reported.value ? parisInputToIso(el.reported.value) : new Date().toISOString();
  try {
    const sla = await call(
      "GET",
      `/v1/sla?reported_at=${enc(reported)}&priority=${enc(el.priority.value)}`,
    );
    setText(el.slaPreview, "sla_preview", {
      taken: fmtDateTime(sla.taken_at, PARIS),
      ack: fmtDateTime(sla.ack_deadline, PARIS),
      restore: fmtDateTime(sla.restore_deadline, PARIS),
    });
  } catch {
    setText(el.slaPreview, null);
  }
}

/** What clause 3-3 asks of every call and the form lacks: named, and the first one focused. */
function missingIntake() {
  const required = [
    [el.contract, "contract_label"], [el.serial, "serial_label"], [el.site, "site_label"],
    [el.contact, "contact_label"], [el.description, "description_label"],
  ];
  const missing = required.filter(([input]) => !input.value.trim());
  for (const [input] of required) input.removeAttribute("aria-invalid");
  for (const [input] of missing) input.setAttribute("aria-invalid", "true");
  if (missing.length) missing[0][0].focus();
  return missing.map(([, key]) => t(key));
}

function mismatchText(mismatch) {
  const parts = [];
  if (mismatch.company) {
    parts.push(t("mismatch_company", { given: mismatch.company.given, known: mismatch.company.contract }));
  }
  if (mismatch.model) parts.push(t("mismatch_model", { given: mismatch.model.given, known: mismatch.model.equipment }));
  return parts.join(" ");
}

async function declare(ev) {
  ev.preventDefault();
  show(el.declareError, null);
  show(el.declareOk, null);
  show(el.declareMismatch, null);
  const missing = missingIntake();
  if (missing.length) {
    show(el.declareError, "missing_fields", { fields: missing.join(", ") }, "field-error wide");
    return;
  }
  const ticket = {
    priority: el.priority.value,
    site: el.site.value.trim(),
    contact: el.contact.value.trim(),
    description: el.description.value.trim(),
  };
  if (el.company.value.trim()) ticket.company = el.company.value.trim();
  if (el.model.value.trim()) ticket.model = el.model.value.trim();
  const body = { contract: el.contract.value.trim(), serial: el.serial.value.trim(), ticket };
  if (el.reported.value) body.reported_at = parisInputToIso(el.reported.value);
  if (!declareKey) declareKey = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
  const submit = el.declare.querySelector('button[type="submit"]');
  submit.disabled = true;
  try {
    const o = await call("POST", "/v1/outages", { body, headers: { "Idempotency-Key": declareKey } });
    declareKey = null;
    show(el.declareOk, "declared", {
      contract: o.contract, serial: o.serial, ticket: (o.ticket && o.ticket.number) || "—",
    }, "ok wide");
    if (o.ticket && o.ticket.mismatch) showText(el.declareMismatch, mismatchText(o.ticket.mismatch), "warn wide");
    el.declare.reset();
    el.priority.value = "urgent";
    fillSerials();
    await refresh();
    const card = cards.get(o.id);
    if (card) card.root.classList.add("fresh");
  } catch (err) {
    if (!(err instanceof ApiError) || err.status === 0 || err.status >= 500) {
      // Same key on retry: the broker returns the first result if it went through.
    } else {
      declareKey = null;
    }
    let text = problemText(err);
    if (err instanceof ApiError && err.problem.ticket_number) {
      text = t("refused_ticket", { ticket: err.problem.ticket_number, why: text });
    }
    showText(el.declareError, text, "field-error wide");
    if (err instanceof ApiError && err.code === "outage_already_active" && err.problem.outage_id) {
      const card = cards.get(err.problem.outage_id);
      if (card) {
        card.root.scrollIntoView({ block: "nearest" });
      }
    }
    if (err instanceof ApiError && err.status === 401) showLogin("token_refused");
  } finally {
    submit.disabled = false;
  }
}

// ---------------------------------------------------------------- tickets and renewals

function ticketItem(tk) {
  const li = document.createElement("li");
  li.className = "ticket";
  li.dataset.ticket = tk.number;
  li.dataset.outcome = tk.outcome || "";
  const head = document.createElement("p");
  const number = document.createElement("strong");
  number.textContent = tk.number;
  head.append(number, ` · ${t("ticket_received", { when: tk.received_at ? fmtDateTime(tk.received_at, PARIS) : "—" })}`,
    ` · ${tk.contract || "—"} / ${tk.serial || "—"}`);
  const outcome = document.createElement("p");
  outcome.className = `t-outcome t-${tk.outcome}`;
  if (tk.outcome === "outage") outcome.textContent = t("ticket_outage", { outage: tk.outage_id || "—" });
  else if (tk.outcome === "refused") outcome.textContent = t("ticket_refused", { why: refusalText(tk.code, tk.reason, tk) });
  else outcome.textContent = t("ticket_pending");
  const what = document.createElement("p");
  what.className = "help";
  what.textContent = [tk.site, tk.contact, tk.description].filter(Boolean).join(" · ");
  li.append(head, outcome, what);
  return li;
}

async function searchTickets(ev) {
  ev.preventDefault();
  const text = el.ticketQuery.value.trim();
  show(el.ticketError, null);
  el.ticketResults.replaceChildren();
  if (!text) return;
  try {
    let found = [];
    try {
      found = [await call("GET", `/v1/tickets/${enc(text)}`)];
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 404) throw err;
      found = await call("GET", `/v1/tickets?contract=${enc(text)}`); // newest first
    }
    if (!found.length) show(el.ticketError, "no_ticket", { query: text }, "help");
    el.ticketResults.replaceChildren(...found.map(ticketItem));
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) showLogin("token_refused");
    else showText(el.ticketError, problemText(err), "field-error");
  }
}

async function loadRenewals() {
  clearTimeout(renewalsTimer);
  renewalsTimer = setTimeout(loadRenewals, RENEWALS_MS);
  try {
    const due = await call("GET", "/v1/contracts?renewal_due=true");
    el.renewalList.replaceChildren(...due.map((c) => {
      const li = document.createElement("li");
      li.dataset.contract = c.number;
      const strong = document.createElement("strong");
      strong.textContent = c.number;
      const company = c.client && c.client.company ? ` — ${c.client.company}` : "";
      li.append(strong, company, ": ", t("renewal_line", { end: fmtDay(c.end_date), from: fmtDay(c.renewal_notice_from) }));
      if (c.suspended_from) li.append(" ", t("renewal_suspended", { from: fmtDay(c.suspended_from) }));
      return li;
    }));
    el.noRenewals.hidden = due.length > 0;
  } catch { /* shown again at the next turn */ }
}

// ---------------------------------------------------------------- wiring

function main() {
  setupLangSwitch($("lang-switch"));
  applyI18n();
  el.login.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const candidate = el.token.value.trim();
    if (candidate) signIn(candidate);
  });
  el.signOut.addEventListener("click", () => showLogin(null));
  el.declare.addEventListener("submit", declare);
  el.declare.addEventListener("input", () => { declareKey = null; });
  el.contract.addEventListener("change", fillSerials);
  el.contract.addEventListener("input", fillSerials);
  el.serial.addEventListener("input", fillSerials);
  el.priority.addEventListener("change", updateSlaPreview);
  el.reported.addEventListener("change", updateSlaPreview);
  el.onlyActive.addEventListener("change", () => refresh());
  el.ticketSearch.addEventListener("submit", searchTickets);
  setInterval(() => {
    for (const card of cards.values()) renderDeadlines(card);
  }, 1000);
  setInterval(() => { if (!el.reported.value) updateSlaPreview(); }, 60000);
  onLangChange(() => {
    for (const card of cards.values()) {
      if (card.data) updateCard(card, card.data);
      renderLog(card);
    }
    updateSlaPreview();
    if (token) loadRenewals();
  });
  setLive("off");
  if (token) signIn(token);
  else showLogin(null);
}

main();
