// The hotline's console: operator token (this tab only), outages with live usage against the caps,
// SLA deadlines with countdowns, declare / restore / extend, conferences and their participants.
// Everything from the API is put on the page with textContent (never innerHTML).

import { api, ApiError, enc } from "./api.js";
import { applyI18n, fmtDateTime, fmtDuration, fmtTime, onLangChange, setText, setupLangSwitch, t } from "./i18n.js";

const PARIS = "Europe/Paris";
const TOKEN_KEY = "backupplus.operator_token";
const POLL_MS = 2000;
const GONE_STATES = new Set(["left", "gone", "released", "removed", "expired", "ended", "disconnected"]);

const $ = (id) => document.getElementById(id);
const el = {
  login: $("login"), token: $("token"), loginError: $("login-error"), app: $("app"), signOut: $("sign-out"),
  conn: $("conn"), declare: $("declare"), contract: $("d-contract"), serial: $("d-serial"),
  priority: $("d-priority"), site: $("d-site"), contact: $("d-contact"), reported: $("d-reported"),
  description: $("d-description"), slaPreview: $("sla-preview"), declareError: $("declare-error"),
  declareOk: $("declare-ok"), contractsList: $("contracts-list"), serialsList: $("serials-list"),
  onlyActive: $("only-active"), outages: $("outages"), noOutages: $("no-outages"),
  outageTpl: $("outage-tpl"), confTpl: $("conf-tpl"),
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

/** A problem+json error in words. */
function problemText(err) {
  if (!(err instanceof ApiError)) return String((err && err.message) || err);
  const p = err.problem || {};
  if (err.status === 0) return t("err_network");
  if (err.code === "not_eligible") {
    const key = `reason_${p.reason}`;
    const text = t(key);
    return text === key ? t("reason_unknown", { reason: p.reason || "?" }) : text;
  }
  if (Array.isArray(p.errors) && p.errors.length) {
    const fields = p.errors
      .map((e) => `${Array.isArray(e.loc) ? e.loc.filter((x) => x !== "body").join(".") : e.loc || ""}: ${e.msg || ""}`)
      .join("; ");
    return t("err_validation", { fields });
  }
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

// ---------------------------------------------------------------- sign-in

function showLogin(errorKey) {
  stopPolling();
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
    updateSlaPreview();
    startPolling();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) showLogin("token_refused");
    else if (err instanceof ApiError && err.status === 403) showLogin("token_forbidden");
    else {
      el.login.hidden = false;
      showText(el.loginError, problemText(err), "field-error");
    }
  }
}

// ---------------------------------------------------------------- polling

function stopPolling() {
  pollRun++;
  clearTimeout(pollTimer);
  pollTimer = null;
}

function startPolling() {
  stopPolling();
  const run = pollRun;
  const loop = async () => {
    if (run !== pollRun) return;
    const started = Date.now();
    await refresh();
    if (run !== pollRun) return;
    pollTimer = setTimeout(loop, Math.max(250, POLL_MS - (Date.now() - started)));
  };
  pollTimer = setTimeout(loop, POLL_MS);
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
    restoreYes.disabled = true;
    try {
      const o = await call("POST", `/v1/outages/${enc(id)}/restore`);
      confirm.hidden = true;
      restoreBtn.hidden = false;
      show(card.msg, null);
      if (o && o.id) updateCard(card, o);
      refresh();
    } catch (err) {
      showText(card.msg, problemText(err), "field-error o-error");
    } finally {
      restoreYes.disabled = false;
    }
  });
  const extend = q(root, "o-extend");
  extend.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const iso = parisInputToIso(extend.elements.window_ends_at.value);
    if (!iso) return;
    try {
      const o = await call("POST", `/v1/outages/${enc(id)}/extend`, { body: { window_ends_at: iso } });
      show(card.msg, "extended", {}, "ok o-error");
      if (o && o.id) updateCard(card, o);
    } catch (err) {
      showText(card.msg, problemText(err), "field-error o-error");
    }
  });
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
      showText(card.msg, problemText(err), "field-error o-error");
    }
  });
  card.details.addEventListener("toggle", () => {
    if (card.details.open) loadConferences(card);
  });
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
  const active = o.state === "active";
  q(root, "o-actions").hidden = !active;
  q(root, "usage").hidden = !active;
  q(root, "o-new-conf").hidden = !active;
  const ext = q(root, "o-extend").elements.window_ends_at;
  if (o.window_ends_at && document.activeElement !== ext) {
    const proposal = toParisInput(new Date(new Date(o.window_ends_at).getTime() + 86400000));
    if (!ext.value || ext.dataset.proposed === ext.value) {
      ext.value = proposal;
      ext.dataset.proposed = proposal;
    }
  }
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
  dl.classList.toggle("soon", active && isDeadline && left >= 0 && left < 3600000);
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
  renderDeadline(q(card.root, "o-ack"), o.ack_deadline, active, true);
  renderDeadline(q(card.root, "o-restore"), o.restore_deadline, active, true);
  renderDeadline(q(card.root, "o-window"), o.window_ends_at, active, false);
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
      c = makeConf(conf.id);
      card.confs.set(conf.id, c);
      list.append(c.root);
    }
    updateConf(c, conf);
  }
}

function makeConf(id) {
  const root = el.confTpl.content.firstElementChild.cloneNode(true);
  root.dataset.conference = id;
  applyI18n(root);
  const c = { id, root, rows: new Map() };
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
  return c;
}

function updateConf(c, conf) {
  const root = c.root;
  q(root, "c-title").textContent = conf.title || conf.id;
  const parts = Array.isArray(conf.participants) ? conf.participants : [];
  const live = parts.filter((p) => !GONE_STATES.has(p.state));
  const reserve = conf.reserve || {};
  setText(q(root, "c-meta"), "conf_meta", {
    priority: conf.priority ?? "—", rv: reserve.video ?? 0, ra: reserve.audio ?? 0, n: live.length,
  });
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

function fillSerials() {
  const c = contracts.find((x) => x.number === el.contract.value.trim());
  const equipment = c && Array.isArray(c.equipment) ? c.equipment : [];
  el.serialsList.replaceChildren(
    ...equipment.map((e) => {
      const opt = document.createElement("option");
      opt.value = e.serial;
      opt.textContent = [e.brand, e.model, e.kind].filter(Boolean).join(" · ");
      return opt;
    }),
  );
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

async function declare(ev) {
  ev.preventDefault();
  show(el.declareError, null);
  show(el.declareOk, null);
  const body = {
    contract: el.contract.value.trim(),
    serial: el.serial.value.trim(),
    ticket: {
      priority: el.priority.value,
      site: el.site.value.trim(),
      contact: el.contact.value.trim(),
      description: el.description.value.trim(),
    },
  };
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
    el.declare.reset();
    el.priority.value = "medium";
    await refresh();
    const card = cards.get(o.id);
    if (card) card.root.classList.add("fresh");
  } catch (err) {
    if (!(err instanceof ApiError) || err.status === 0 || err.status >= 500) {
      // Same key on retry: the broker returns the first result if it went through.
    } else {
      declareKey = null;
    }
    showText(el.declareError, problemText(err), "field-error wide");
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
  el.priority.addEventListener("change", updateSlaPreview);
  el.reported.addEventListener("change", updateSlaPreview);
  el.onlyActive.addEventListener("change", () => refresh());
  setInterval(() => {
    for (const card of cards.values()) renderDeadlines(card);
  }, 1000);
  setInterval(() => { if (!el.reported.value) updateSlaPreview(); }, 60000);
  onLangChange(() => {
    for (const card of cards.values()) if (card.data) updateCard(card, card.data);
    updateSlaPreview();
  });
  if (token) signIn(token);
  else showLogin(null);
}

main();


