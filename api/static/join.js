// The participant's join page.
//
// States (document.body.dataset.state): idle | joining | connected | refused | preempted | ended.
// Flow: POST /v1/conferences/{id}/participants with the join token (admission, maybe downgraded to
// audio; an Idempotency-Key per attempt) → the participant token, kept for the tab → RTCPeerConnection,
// non-trickle offer → POST /v1/participants/{id}/offer with the participant token → answer. A reload
// offers again as the same participant.
// Media failure or a dead node → new offer for the same participant while its lease lives,
// else (410 participant_gone) a new admission; exponential backoff with jitter in between.
// Firewalls: the admission's ice_servers (TURN, credentials for this participant) go into the peer
// connection. ICE disconnected or failed → an ICE restart on the same peer connection (new offer with
// iceRestart, same participant token); an attempt that never connected is retried through TURN only
// (iceTransportPolicy "relay"), and the page says it connects through the company firewall.
// `?ice=relay` goes through TURN from the start (support: a network known to block everything else).

import { api, ApiError, enc, sleep } from "./api.js";
import { applyI18n, fmtDateTime, fmtDuration, onLangChange, setText, setupLangSwitch, t } from "./i18n.js";

const $ = (id) => document.getElementById(id);
const body = document.body;
const conferenceId = body.dataset.conference;
const hotline = body.dataset.hotline || "";
const videoPorts = Number(body.dataset.videoPorts) || 10;
const audioPorts = Number(body.dataset.audioPorts) || 8;
const maxHeight = Number(body.dataset.maxVideoHeight) || 480;
// The join token is the last path segment of the join link (never copied into another URL).
const token = decodeURIComponent(location.pathname.replace(/\/+$/, "").split("/").pop() || "");
const params = new URLSearchParams(location.search);

const el = {
  title: $("conf-title"), window: $("window"), status: $("status"), notice: $("notice"),
  refused: $("refused"), refusedWhy: $("refused-why"), refusedRetry: $("refused-retry"),
  refusedPhone: $("refused-phone"), retry: $("retry"), ended: $("ended"), endedText: $("ended-text"),
  preempted: $("preempted"), preemptedPhone: $("preempted-phone"), rejoin: $("rejoin"),
  endedPhone: $("ended-phone"), remote: $("remote"), remoteAudio: $("remote-audio"),
  remotePlaceholder: $("remote-placeholder"), unmuteRemote: $("unmute-remote"),
  form: $("join-form"), name: $("name"), nameError: $("name-error"), preview: $("preview"),
  previewOff: $("preview-off"), camera: $("camera"), cameraField: $("camera-field"),
  microphone: $("microphone"), micLevel: $("mic-level"), deviceError: $("device-error"),
  muteMic: $("mute-mic"), muteCam: $("mute-cam"), join: $("join"), leave: $("leave"),
};

const ICE_GATHER_TIMEOUT_MS = 2500;
const DISCONNECT_GRACE_MS = 2000;
const POLL_CONNECTED_MS = 3000;
const POLL_IDLE_MS = 15000;
const MAX_BACKOFF_MS = 15000;
// An attempt not connected this long after its answer counts as failed (browsers take up to 30 s to
// declare ICE failed): the next one goes through TURN.
const CONNECT_DEADLINE_MS = 8000;
const MAX_ICE_RESTARTS = 3; // in a row without connecting; then the full reconnect loop
const RELAY_QUIET_MS = 120; // after a relay candidate, this long without another one: gathering done
const RELAY_WAIT_MS = 1500; // with host candidates, this long at most for the first relay candidate
const POLICY = ["all", "relay"]; // iceTransportPolicy: every candidate, or TURN relays only
const PATH = ["direct", "relay"]; // body.dataset.path once connected

const PLANNED_END_WARNING_MS = 10 * 60 * 1000;
// The tab's participant (id, token, kinds): a reload comes back as the same participant.
const STORED = `backupplus.participant.${conferenceId}`;

const session = {
  participantId: null,
  participantToken: null,
  admissionKey: null, // Idempotency-Key of the current join attempt: a retried admission is the same one
  requestedKind: "video",
  kind: null, // granted kind
  pc: null,
  pcGen: 0,
  runId: 0,
  attempts: 0,
  leaving: false,
  everConnected: false,
  downgraded: false,
  disconnectTimer: null,
  iceServers: [], // RTCIceServer list of the admission (TURN credentials for this participant)
  relayOnly: false, // iceTransportPolicy "relay": after an attempt over every candidate failed
  attemptConnected: false, // the current offer/answer got ICE connected
  iceRestarts: 0, // ICE restarts since the last connection
  restarting: false,
  connectTimer: null,
};
if (params.get("ice") === "relay") session.relayOnly = true;
const local = { stream: new MediaStream(), micMuted: false, camMuted: false, audioCtx: null, meterRaf: 0 };
let windowEndsAt = null;
let endedForGood = false;
let refusedTimer = null;
let pollTimer = null;
let firstFrameMarked = false;

// ---------------------------------------------------------------- state and messages

function setState(state) {
  body.dataset.state = state;
  const busy = state === "joining" || state === "connected";
  el.join.disabled = busy || state === "ended";
  el.leave.disabled = !(busy || state === "refused" || state === "preempted");
  el.name.disabled = busy || state === "ended";
  for (const r of document.querySelectorAll('input[name="kind"]')) r.disabled = busy || state === "ended";
  el.refused.hidden = state !== "refused";
  el.preempted.hidden = state !== "preempted";
  el.ended.hidden = state !== "ended";
  el.form.hidden = state === "ended";
  if (state !== "refused") clearRefusedTimer();
  schedulePoll();
}

function status(key, vars) {
  setText(el.status, key, vars);
}

function notice(key, vars) {
  if (!key) {
    setText(el.notice, null);
    el.notice.hidden = true;
    return;
  }
  setText(el.notice, key, vars);
  el.notice.hidden = false;
}

function deviceError(key, vars) {
  if (!key) {
    setText(el.deviceError, null);
    el.deviceError.hidden = true;
    return;
  }
  setText(el.deviceError, key, vars);
  el.deviceError.hidden = false;
}

function selectedKind() {
  const r = document.querySelector('input[name="kind"]:checked');
  return r && r.value === "audio" ? "audio" : "video";
}

function phoneLink(a) {
  a.textContent = hotline;
  a.href = `tel:${hotline.replace(/[^+\d]/g, "")}`;
}

// ---------------------------------------------------------------- local media

function currentTrack(kind) {
  return kind === "audio" ? local.stream.getAudioTracks()[0] : local.stream.getVideoTracks()[0];
}

function videoConstraints() {
  const c = { height: { ideal: Math.min(480, maxHeight), max: maxHeight }, frameRate: { ideal: 24, max: 30 } };
  if (el.camera.value) c.deviceId = { exact: el.camera.value };
  return c;
}

function audioConstraints() {
  const c = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  if (el.microphone.value) c.deviceId = { exact: el.microphone.value };
  return c;
}

function mediaErrorKey(err) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError") return "device_denied";
  if (name === "NotFoundError" || name === "OverconstrainedError") return "device_missing";
  return "device_failed";
}

async function getTrack(kind) {
  const constraints = kind === "audio" ? { audio: audioConstraints() } : { video: videoConstraints() };
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia(constraints);
  } catch (err) {
    if (err && err.name === "OverconstrainedError" && kind === "video") {
      // The chosen camera is gone: fall back to any camera, still at most maxHeight lines.
      stream = await navigator.mediaDevices.getUserMedia({ video: { height: { max: maxHeight } } });
    } else {
      throw err;
    }
  }
  return kind === "audio" ? stream.getAudioTracks()[0] : stream.getVideoTracks()[0];
}

async function setLocalTrack(kind, track) {
  const old = currentTrack(kind);
  if (old === track) return;
  if (old) {
    local.stream.removeTrack(old);
    old.stop();
  }
  if (track) {
    track.enabled = kind === "audio" ? !local.micMuted : !local.camMuted;
    local.stream.addTrack(track);
  }
  // Live call: swap the track on the sender without renegotiating.
  if (session.pc) {
    for (const tr of session.pc.getTransceivers()) {
      if (tr.sender && tr.receiver.track && tr.receiver.track.kind === kind && tr.direction !== "recvonly") {
        try {
          await tr.sender.replaceTrack(track || null);
        } catch { /* renegotiation would be needed: the next reconnect picks it up */ }
      }
    }
  }
  renderPreview();
  if (kind === "audio") startMicMeter();
}

let mediaChain = Promise.resolve();

/** Make the local tracks match a kind: video needs camera + mic, audio only the mic.
 * Serialised: two overlapping calls would open the devices twice. */
function ensureMedia(kind) {
  const run = mediaChain.then(() => ensureMediaNow(kind));
  mediaChain = run.catch(() => {});
  return run;
}

async function ensureMediaNow(kind) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    deviceError("device_missing");
    return;
  }
  let problem = null;
  const live = (k) => currentTrack(k) && currentTrack(k).readyState !== "ended";
  if (kind === "video" && !live("audio") && !live("video")) {
    // Both at once: one device start-up instead of two in a row.
    try {
      const both = await navigator.mediaDevices.getUserMedia({ audio: audioConstraints(), video: videoConstraints() });
      await setLocalTrack("audio", both.getAudioTracks()[0]);
      await setLocalTrack("video", both.getVideoTracks()[0]);
    } catch { /* one of them is missing or refused: try each on its own below */ }
  }
  if (!currentTrack("audio") || currentTrack("audio").readyState === "ended") {
    try {
      await setLocalTrack("audio", await getTrack("audio"));
    } catch (err) {
      problem = problem || err;
    }
  }
  if (kind === "video") {
    if (!currentTrack("video") || currentTrack("video").readyState === "ended") {
      try {
        await setLocalTrack("video", await getTrack("video"));
      } catch (err) {
        problem = problem || err;
      }
    }
  } else if (currentTrack("video")) {
    await setLocalTrack("video", null);
  }
  if (problem) deviceError(mediaErrorKey(problem), { detail: problem.name || String(problem) });
  else deviceError(null);
  listDevices(); // not awaited: enumerateDevices can be slow and nothing waits for the lists
}

async function listDevices() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  let devices = [];
  try {
    devices = await navigator.mediaDevices.enumerateDevices();
  } catch {
    return;
  }
  const fill = (select, kind, track) => {
    const current = track ? track.getSettings().deviceId : select.value;
    const list = devices.filter((d) => d.kind === kind && d.deviceId);
    select.replaceChildren();
    if (!list.length) {
      const opt = document.createElement("option");
      opt.value = "";
      opt.textContent = t("default_device");
      select.append(opt);
      return;
    }
    list.forEach((d, i) => {
      const opt = document.createElement("option");
      opt.value = d.deviceId;
      // Device labels come from the system: text only.
      opt.textContent = d.label || t("device_n", { kind: t(kind === "videoinput" ? "camera_label" : "microphone_label"), n: i + 1 });
      select.append(opt);
    });
    if (current && list.some((d) => d.deviceId === current)) select.value = current;
  };
  fill(el.camera, "videoinput", currentTrack("video"));
  fill(el.microphone, "audioinput", currentTrack("audio"));
}

function renderPreview() {
  const video = currentTrack("video");
  const showing = Boolean(video) && !local.camMuted;
  if (video) {
    if (el.preview.srcObject !== local.stream) el.preview.srcObject = local.stream;
    el.preview.play().catch(() => {});
  } else {
    el.preview.srcObject = null;
  }
  el.preview.hidden = !showing;
  el.previewOff.hidden = showing;
  el.cameraField.hidden = selectedKindForMedia() !== "video";
  el.muteCam.hidden = selectedKindForMedia() !== "video";
}

function selectedKindForMedia() {
  return session.kind || selectedKind();
}

function startMicMeter() {
  const track = currentTrack("audio");
  cancelAnimationFrame(local.meterRaf);
  if (!track || typeof AudioContext === "undefined") return;
  try {
    if (!local.audioCtx) local.audioCtx = new AudioContext();
    const ctx = local.audioCtx;
    const src = ctx.createMediaStreamSource(new MediaStream([track]));
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 512;
    src.connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    const tick = () => {
      analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const v of buf) sum += v * v;
      el.micLevel.value = track.enabled ? Math.min(1, Math.sqrt(sum / buf.length) * 4) : 0;
      local.meterRaf = requestAnimationFrame(tick);
    };
    tick();
  } catch { /* level meter is a nicety */ }
}

function renderMuteButtons() {
  el.muteMic.setAttribute("aria-pressed", String(local.micMuted));
  setText(el.muteMic, local.micMuted ? "unmute_mic" : "mute_mic");
  el.muteCam.setAttribute("aria-pressed", String(local.camMuted));
  setText(el.muteCam, local.camMuted ? "unmute_cam" : "mute_cam");
}

// ---------------------------------------------------------------- remote media

function attachRemote(ev) {
  const track = ev.track;
  if (track.kind === "video") {
    el.remote.srcObject = new MediaStream([track]);
    el.remote.hidden = false;
    el.remotePlaceholder.hidden = true;
    el.remote.play().catch(() => {});
    watchFrames();
  } else {
    el.remoteAudio.srcObject = new MediaStream([track]);
    el.remoteAudio.play().then(
      () => { el.unmuteRemote.hidden = true; },
      () => { el.unmuteRemote.hidden = false; }, // autoplay with sound needs a click
    );
  }
}

function watchFrames() {
  if (firstFrameMarked || typeof el.remote.requestVideoFrameCallback !== "function") return;
  el.remote.requestVideoFrameCallback(() => {
    if (firstFrameMarked) return;
    firstFrameMarked = true;
    performance.mark("bp-first-remote-frame");
    body.dataset.firstFrame = "1";
  });
}

function clearRemote() {
  el.remote.srcObject = null;
  el.remoteAudio.srcObject = null;
  el.remote.hidden = true;
  el.remotePlaceholder.hidden = false;
  setText(el.remotePlaceholder, "remote_placeholder");
}

// ---------------------------------------------------------------- joining and reconnecting

function closePc() {
  clearTimeout(session.disconnectTimer);
  clearTimeout(session.connectTimer);
  if (session.pc) {
    const pc = session.pc;
    session.pc = null;
    pc.ontrack = null;
    pc.onconnectionstatechange = null;
    pc.oniceconnectionstatechange = null;
    try {
      pc.close();
    } catch { /* already closed */ }
  }
}

/**
 * Non-trickle offer: resolve once the candidates the media node can use are in the local
 * description. The media node (aiortc/aioice) pairs UDP candidates only, and Chromium gathers all
 * of its UDP host candidates within a few ms but its TCP ones ~150 ms later: so "gathering complete",
 * or the first TCP candidate after UDP ones, or 60 ms without a new UDP candidate, whichever first
 * (capped). With TURN servers the relay candidates (UDP on the media node's side, whatever the
 * transport to the TURN server) come after a round trip to it: then "complete", or RELAY_QUIET_MS
 * without a new candidate after a relay one, or RELAY_WAIT_MS after the first UDP host candidate
 * without any relay one (a TURN server down must not hold up direct joins; capped). Listen before
 * setLocalDescription so that no candidate is missed.
 */
function waitIceCandidates(pc) {
  const turn = hasTurn();
  return new Promise((resolve) => {
    let udp = 0;
    let relays = 0;
    let quiet = null;
    const finish = () => {
      clearTimeout(quiet);
      clearTimeout(cap);
      pc.removeEventListener("icecandidate", onCandidate);
      pc.removeEventListener("icegatheringstatechange", onState);
      resolve();
    };
    const onCandidate = (ev) => {
      if (!ev.candidate || !ev.candidate.candidate) return finish();
      const c = ev.candidate;
      const isUdp = (c.protocol || "").toLowerCase() === "udp" || / udp /i.test(c.candidate);
      if (turn) {
        if ((c.type || "") === "relay" || / typ relay/.test(c.candidate)) relays += 1;
        if (relays > 0) {
          clearTimeout(quiet);
          quiet = setTimeout(finish, RELAY_QUIET_MS);
        } else if (isUdp && !quiet) {
          // a TURN server that does not answer must not hold up a join that can go direct
          quiet = setTimeout(finish, RELAY_WAIT_MS);
        }
        return;
      }
      if (isUdp) {
        udp += 1;
        clearTimeout(quiet);
        quiet = setTimeout(finish, 60);
      } else if (udp > 0) {
        finish();
      }
    };
    const onState = () => { if (pc.iceGatheringState === "complete") finish(); };
    const cap = setTimeout(finish, turn ? 2 * ICE_GATHER_TIMEOUT_MS : ICE_GATHER_TIMEOUT_MS);
    pc.addEventListener("icecandidate", onCandidate);
    pc.addEventListener("icegatheringstatechange", onState);
  });
}

function newAdmissionKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function remember() {
  try {
    if (session.participantId) {
      sessionStorage.setItem(STORED, JSON.stringify({
        id: session.participantId, token: session.participantToken, kind: session.kind,
        requestedKind: session.requestedKind, iceServers: session.iceServers,
      }));
    } else sessionStorage.removeItem(STORED);
  } catch { /* storage disabled: a reload joins as a new participant */ }
}

function forget() {
  session.participantId = null;
  session.participantToken = null;
  session.iceServers = []; // credentials of that participant: the next admission brings its own
  remember();
}

async function admit() {
  const name = el.name.value.trim();
  if (!session.admissionKey) session.admissionKey = newAdmissionKey();
  const p = await api("POST", `/v1/conferences/${enc(conferenceId)}/participants`, {
    token,
    headers: { "Idempotency-Key": session.admissionKey },
    body: { display_name: name, kind: session.requestedKind, downgrade: true },
  });
  performance.mark("bp-admitted");
  session.admissionKey = null;
  session.participantId = p.id;
  session.participantToken = p.participant_token;
  session.kind = p.kind === "audio" ? "audio" : "video";
  session.iceServers = Array.isArray(p.ice_servers) ? p.ice_servers : [];
  const downgraded = p.downgraded ?? (session.requestedKind === "video" && session.kind === "audio");
  session.downgraded = Boolean(downgraded);
  remember();
  if (downgraded) notice("downgraded", { n: videoPorts });
  else notice(null);
}

function hasTurn() {
  return session.iceServers.length > 0;
}

/** The peer connection's configuration: the participant's TURN servers; relay only after a failure. */
function pcConfig() {
  return {
    bundlePolicy: "max-bundle",
    iceServers: session.iceServers,
    iceTransportPolicy: POLICY[session.relayOnly && hasTurn() ? 1 : 0],
  };
}

/** A peer connection with our tracks for `kind` and a complete (non-trickle) offer. */
async function prepareOffer(kind) {
  closePc();
  const config = pcConfig();
  const pc = new RTCPeerConnection(config);
  const gen = ++session.pcGen;
  session.pc = pc;
  const audio = currentTrack("audio");
  const video = currentTrack("video");
  if (audio) pc.addTransceiver(audio, { direction: "sendrecv", streams: [local.stream] });
  else pc.addTransceiver("audio", { direction: "recvonly" });
  if (kind === "video") {
    if (video) pc.addTransceiver(video, { direction: "sendrecv", streams: [local.stream] });
    else pc.addTransceiver("video", { direction: "recvonly" });
  }
  pc.ontrack = attachRemote;
  pc.onconnectionstatechange = () => onPcState(pc, gen);
  pc.oniceconnectionstatechange = () => onIceState(pc, gen);
  if (config.iceTransportPolicy === "relay") status("st_turn");
  const gathered = waitIceCandidates(pc);
  await pc.setLocalDescription(await pc.createOffer());
  await gathered;
  performance.mark("bp-ice");
  return { pc, gen, kind, configKey: JSON.stringify(config) };
}

/** Offer → answer for the current participant; reuses `prepared` when it fits the granted kind. */
async function negotiate(runId, prepared = null) {
  await ensureMedia(session.kind);
  if (runId !== session.runId) return;
  performance.mark("bp-media");
  let offer = prepared;
  const usable = offer && offer.gen === session.pcGen && offer.kind === session.kind &&
    offer.pc.signalingState === "have-local-offer" && offer.configKey === JSON.stringify(pcConfig());
  if (!usable) offer = await prepareOffer(session.kind);
  const { pc, gen } = offer;
  if (runId !== session.runId || gen !== session.pcGen) return;
  const answer = await api("POST", `/v1/participants/${enc(session.participantId)}/offer`, {
    token: session.participantToken,
    body: { type: "offer", sdp: pc.localDescription.sdp },
  });
  if (gen !== session.pcGen) return;
  performance.mark("bp-answer");
  await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  status(session.relayOnly && hasTurn() ? "st_turn" : "st_connecting_media");
  armConnectDeadline(pc, gen);
}

/** An attempt that is not connected in time is restarted (through TURN, having failed over all). */
function armConnectDeadline(pc, gen) {
  session.attemptConnected = false;
  clearTimeout(session.connectTimer);
  session.connectTimer = setTimeout(() => {
    if (gen === session.pcGen && !session.attemptConnected) restartIce(pc, gen);
  }, CONNECT_DEADLINE_MS);
}

function onIceState(pc, gen) {
  if (gen !== session.pcGen || session.leaving) return;
  const s = pc.iceConnectionState;
  if (s === "connected" || s === "completed") {
    clearTimeout(session.disconnectTimer);
    clearTimeout(session.connectTimer);
    session.attemptConnected = true;
    session.iceRestarts = 0;
    reportPath(pc, gen);
  } else if (s === "disconnected") {
    // often back by itself within a second or two (a Wi-Fi hiccup): restart only if it is not
    clearTimeout(session.disconnectTimer);
    session.disconnectTimer = setTimeout(() => {
      if (gen === session.pcGen && ["disconnected", "failed"].includes(pc.iceConnectionState)) restartIce(pc, gen);
    }, DISCONNECT_GRACE_MS);
  } else if (s === "failed") {
    restartIce(pc, gen);
  }
}

/**
 * ICE restart on the same peer connection, as the same participant: a new offer with iceRestart
 * (new ICE credentials, the same tracks) answered by the media node. An attempt that never
 * connected over every candidate is followed by one through TURN only. Too many in a row, or an
 * answer refused (participant gone, node gone): the full reconnect loop.
 */
async function restartIce(pc, gen) {
  if (session.restarting || gen !== session.pcGen || session.leaving || endedForGood) return;
  if (body.dataset.state === "refused" || !session.participantId) return;
  if (session.iceRestarts >= MAX_ICE_RESTARTS) return reconnect();
  session.restarting = true;
  session.iceRestarts += 1;
  clearTimeout(session.connectTimer);
  clearTimeout(session.disconnectTimer);
  try {
    if (!session.attemptConnected && hasTurn() && !session.relayOnly) {
      session.relayOnly = true;
      pc.setConfiguration(pcConfig());
    }
    setState("joining");
    status(session.relayOnly && hasTurn() ? "st_turn" : "st_reconnecting_now");
    const gathered = waitIceCandidates(pc);
    await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
    await gathered;
    if (gen !== session.pcGen) return;
    const answer = await api("POST", `/v1/participants/${enc(session.participantId)}/offer`, {
      token: session.participantToken,
      body: { type: "offer", sdp: pc.localDescription.sdp },
    });
    if (gen !== session.pcGen) return;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    armConnectDeadline(pc, gen);
  } catch {
    if (gen === session.pcGen) {
      session.restarting = false;
      reconnect();
    }
  } finally {
    session.restarting = false;
  }
}

/** body.dataset.path: "relay" when the selected candidate pair goes through TURN, else "direct". */
async function reportPath(pc, gen) {
  try {
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((r) => {
      if (r.type === "transport" && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
    });
    const localCandidate = pair && stats.get(pair.localCandidateId);
    if (gen !== session.pcGen || !localCandidate) return;
    body.dataset.path = PATH[localCandidate.candidateType === "relay" ? 1 : 0];
    if (body.dataset.path === "relay" && body.dataset.state === "connected") notice("st_turn_connected");
  } catch { /* stats are a nicety */ }
}

function onPcState(pc, gen) {
  if (gen !== session.pcGen || session.leaving) return;
  const s = pc.connectionState;
  if (s === "connected") {
    clearTimeout(session.disconnectTimer);
    clearTimeout(session.connectTimer);
    session.attempts = 0;
    session.iceRestarts = 0;
    session.attemptConnected = true;
    session.everConnected = true;
    notice(session.downgraded ? "downgraded" : (body.dataset.path === "relay" ? "st_turn_connected" : null),
      { n: videoPorts });
    setState("connected");
    status(session.kind === "audio" ? "st_connected_audio" : "st_connected");
    if (session.kind === "audio") {
      el.remotePlaceholder.hidden = false;
      setText(el.remotePlaceholder, "remote_audio_only");
    }
  } else if (s === "failed" && pc.iceConnectionState !== "failed") {
    reconnect(); // DTLS failed: a new peer connection (ICE failures restart ICE: onIceState)
  } else if (s === "closed") {
    reconnect();
  }
}

function backoffMs(attempt) {
  const base = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

/** The one loop that gets us (back) in: admission if needed, then an offer; retries with backoff. */
async function connect({ immediate = true } = {}) {
  const runId = ++session.runId;
  session.leaving = false;
  let wait = immediate ? 0 : backoffMs(++session.attempts);
  for (;;) {
    if (wait > 0) {
      setState("joining");
      const until = Date.now() + wait;
      while (Date.now() < until) {
        if (runId !== session.runId) return;
        status(session.everConnected ? "st_reconnecting" : "st_retrying", {
          s: Math.ceil((until - Date.now()) / 1000), n: session.attempts,
        });
        if (session.attempts >= 6) notice("st_reconnect_long", { phone: hotline });
        await sleep(Math.min(1000, until - Date.now()));
      }
    }
    if (runId !== session.runId) return;
    setState("joining");
    if (!session.participantId && !session.everConnected) status("st_joining");
    else status(session.everConnected ? "st_reconnecting_now" : "st_retrying_now");
    try {
      let prepared = null;
      if (!session.participantId) {
        // While the broker admits us: start the camera, then prepare the offer for the kind
        // granted. The offer waits for the admission (which usually answers before the camera is
        // up): its peer connection needs the participant's TURN servers, and gathering twice
        // (without, then with them) would cost a gathering.
        const admitted = admit();
        admitted.catch(() => {}); // handled below; avoid an unhandled rejection meanwhile
        const ahead = ensureMedia(session.requestedKind)
          .then(() => admitted)
          .then(() => (runId === session.runId ? prepareOffer(session.kind || session.requestedKind) : null))
          .catch(() => null);
        await admitted;
        prepared = await ahead;
      }
      if (runId !== session.runId) return;
      await negotiate(runId, prepared);
      return; // the peer connection's state takes it from here
    } catch (err) {
      if (runId !== session.runId) return;
      const outcome = classify(err);
      if (outcome === "readmit") {
        // The lease is gone. Removed on purpose (the hotline, or our own leave): stay out.
        // Lapsed (node died: "expired") or media failed ("failed"): admit again, at once the
        // first time, then with backoff.
        const state = session.participantId ? await participantState() : null;
        if (runId !== session.runId) return;
        if (state === "preempted") return preempted();
        if (state === "left") {
          // "left" is also what a restore or the end of the window leaves behind: the conference
          // tells which, so that a restore reads "ended", not "removed by the hotline".
          await refreshConference();
          if (runId === session.runId && !endedForGood) removed();
          return;
        }
        if (runId !== session.runId) return;
        forget();
        session.kind = null;
        session.attempts += 1;
        wait = session.attempts > 1 ? backoffMs(session.attempts) : 0;
        continue;
      }
      if (outcome === "ended") return ended(err);
      if (outcome === "refused") return refused(err);
      if (outcome === "fatal") return fatal(err);
      wait = backoffMs(++session.attempts);
    }
  }
}

function classify(err) {
  if (!(err instanceof ApiError)) return "retry"; // WebRTC / media errors: try again
  const code = err.code;
  if (code === "participant_gone") return "readmit";
  if (code === "outage_ended" || code === "outage_not_active" || code === "conference_not_found") return "ended";
  if (code === "capacity_exhausted") return "refused";
  if (err.status === 410) return "ended";
  if ((err.status === 404 || err.status === 401) && session.participantId) return "readmit";
  if (err.status === 409) return "refused";
  if (err.status === 401 || err.status === 403 || err.status === 404 || err.status === 422 || err.status === 400) {
    return "fatal";
  }
  return "retry"; // 0 (network), 503 no_media_node, 5xx
}

/** Our participant's state as the broker has it (admitted, connected, left, preempted, ended), or null. */
async function participantState() {
  if (!session.participantId) return null;
  try {
    const p = await api("GET", `/v1/participants/${enc(session.participantId)}`, { token: session.participantToken });
    // A lapsed lease (the media node died, the network failed) is not a removal: join again.
    return p.state === "left" && p.state_reason === "lease_expired" ? "expired" : p.state;
  } catch (err) {
    // a token that no longer acts (the participant left) reads as left
    return err instanceof ApiError && err.status === 401 ? "left" : null;
  }
}

/** A more important meeting of the company took our place: say so, and do not retry by ourselves. */
function preempted() {
  session.runId++;
  closePc();
  forget();
  session.kind = null;
  clearRemote();
  notice(null);
  setState("preempted");
  status("st_preempted");
}

function removed() {
  session.runId++;
  closePc();
  forget();
  session.kind = null;
  clearRemote();
  notice(null);
  setState("idle");
  status("st_removed");
  renderPreview();
}

function reconnect() {
  if (session.leaving || endedForGood) return;
  if (body.dataset.state === "refused") return;
  closePc();
  connect({ immediate: false });
}

function fatal(err) {
  session.runId++;
  closePc();
  forget();
  setState("idle");
  if (err.status === 401 || err.status === 403 || err.status === 404) status("link_invalid");
  else status("error_generic", { detail: err.problem.detail || err.problem.title || err.message });
}

function clearRefusedTimer() {
  if (refusedTimer) clearInterval(refusedTimer);
  refusedTimer = null;
}

function refused(err) {
  session.runId++;
  closePc();
  forget();
  session.kind = null;
  setState("refused");
  const p = err.problem || {};
  const kind = p.kind === "audio" ? "audio" : "video";
  const capacity = Number(p.capacity);
  const inUse = Number(p.in_use);
  if (Number.isFinite(capacity) && Number.isFinite(inUse) && inUse < capacity) {
    setText(el.refusedWhy, "refused_why_reserved");
  } else if (session.requestedKind === "video") {
    // A video request falls back to audio: refused means both kinds are full.
    setText(el.refusedWhy, "refused_why_all", { video: videoPorts, audio: audioPorts });
  } else {
    setText(el.refusedWhy, "refused_why", {
      in_use: Number.isFinite(inUse) ? inUse : "?",
      capacity: Number.isFinite(capacity) ? capacity : "?",
      kind: t(kind === "audio" ? "kind_word_audio" : "kind_word_video"),
    });
  }
  status("st_refused");
  const until = Date.now() + err.retryAfter(30) * 1000;
  const tick = () => {
    const left = Math.ceil((until - Date.now()) / 1000);
    if (left <= 0) {
      clearRefusedTimer();
      if (body.dataset.state === "refused") join();
      return;
    }
    setText(el.refusedRetry, "refused_retry", { s: left });
  };
  tick();
  refusedTimer = setInterval(tick, 1000);
}

function ended(err) {
  endedForGood = true;
  session.runId++;
  closePc();
  forget();
  stopLocalMedia();
  clearRemote();
  notice(null);
  // The broker says which: the outage is over (server back) or the hotline closed this conference.
  const detail = (err && err.problem && String(err.problem.detail || "")) || "";
  const reason = (err && err.problem && err.problem.reason) || "";
  const closed = reason ? reason === "conference_closed" : /closed by the hotline/i.test(detail);
  const planned = reason === "outage_planned_end";
  const key = closed ? "ended_closed" : planned ? "ended_planned" : "ended_text";
  setText(el.endedText, key);
  setState("ended");
  status(key);
  el.window.hidden = true;
}

function stopLocalMedia() {
  cancelAnimationFrame(local.meterRaf);
  for (const track of local.stream.getTracks()) {
    track.stop();
    local.stream.removeTrack(track);
  }
  el.preview.srcObject = null;
}

async function join() {
  const state = body.dataset.state;
  if (state === "joining" || state === "connected" || endedForGood) return;
  const name = el.name.value.trim();
  if (!name) {
    setText(el.nameError, "name_missing");
    el.nameError.hidden = false;
    el.name.setAttribute("aria-invalid", "true");
    el.name.focus();
    return;
  }
  el.nameError.hidden = true;
  el.name.removeAttribute("aria-invalid");
  try {
    localStorage.setItem("backupplus.name", name);
  } catch { /* storage disabled */ }
  session.requestedKind = selectedKind();
  session.admissionKey = newAdmissionKey();
  session.attempts = 0;
  session.everConnected = false;
  performance.mark("bp-join-start");
  notice(null);
  setState("joining");
  status("st_joining");
  await connect({ immediate: true });
}

async function leave() {
  session.leaving = true;
  session.runId++;
  const id = session.participantId;
  const participantToken = session.participantToken;
  forget();
  session.kind = null;
  closePc();
  clearRemote();
  notice(null);
  setState("idle");
  status("st_left");
  renderPreview();
  if (id) {
    try {
      await api("DELETE", `/v1/participants/${enc(id)}`, { token: participantToken });
    } catch { /* the lease frees the port anyway */ }
  }
}

// ---------------------------------------------------------------- conference info and window

function renderWindow() {
  if (!windowEndsAt || endedForGood) {
    el.window.hidden = true;
    return;
  }
  const left = windowEndsAt.getTime() - Date.now();
  el.window.hidden = false;
  el.window.classList.toggle("soon", left <= PLANNED_END_WARNING_MS);
  // The contract's clock is Paris time (the hotline says "until Tuesday 12:00"): show that, with its offset.
  const vars = { when: fmtDateTime(windowEndsAt, "Europe/Paris", true), left: fmtDuration(Math.max(0, left)) };
  if (left <= 0) setText(el.window, "window_over");
  else setText(el.window, left <= PLANNED_END_WARNING_MS ? "window_soon" : "window_until", vars);
}

async function refreshConference() {
  try {
    const conf = await api("GET", `/v1/conferences/${enc(conferenceId)}`, { token });
    if (conf.title) {
      el.title.textContent = conf.title;
      document.title = t("title_with", { title: conf.title });
    }
    windowEndsAt = conf.window_ends_at ? new Date(conf.window_ends_at) : null;
    renderWindow();
    if (conf.outage_state && conf.outage_state !== "active") {
      ended(null);
      return;
    }
    // Our port was released (the hotline removed us, a more important meeting took it, the lease
    // lapsed): find out at once rather than when the media times out.
    if (body.dataset.state === "connected" && session.participantId) {
      const state = await participantState();
      if (state === "preempted") preempted();
      else if (state && state !== "admitted" && state !== "connected") reconnect();
    }
  } catch (err) {
    if (err instanceof ApiError && (err.status === 410 || err.code === "outage_ended")) ended(err);
    else if (err instanceof ApiError && (err.status === 401 || err.status === 403 || err.status === 404)) {
      if (body.dataset.state === "idle") status("link_invalid");
    }
  }
}

let pollEvery = 0;

/** Poll the conference (window, end of outage): often while in a call, rarely otherwise. */
function schedulePoll() {
  if (endedForGood) {
    clearTimeout(pollTimer);
    pollTimer = null;
    return;
  }
  const state = body.dataset.state;
  const every = state === "connected" || state === "joining" ? POLL_CONNECTED_MS : POLL_IDLE_MS;
  if (pollTimer && every === pollEvery) return; // already scheduled at that pace
  clearTimeout(pollTimer);
  pollEvery = every;
  pollTimer = setTimeout(async () => {
    pollTimer = null;
    await refreshConference();
    schedulePoll();
  }, every);
}

// ---------------------------------------------------------------- wiring

function wire() {
  el.form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    join();
  });
  el.leave.addEventListener("click", () => leave());
  el.retry.addEventListener("click", () => {
    clearRefusedTimer();
    setState("idle");
    join();
  });
  el.rejoin.addEventListener("click", () => {
    setState("idle");
    join();
  });
  el.muteMic.addEventListener("click", () => {
    local.micMuted = !local.micMuted;
    const a = currentTrack("audio");
    if (a) a.enabled = !local.micMuted;
    renderMuteButtons();
  });
  el.muteCam.addEventListener("click", () => {
    local.camMuted = !local.camMuted;
    const v = currentTrack("video");
    if (v) v.enabled = !local.camMuted;
    renderMuteButtons();
    renderPreview();
  });
  el.camera.addEventListener("change", async () => {
    try {
      await setLocalTrack("video", await getTrack("video"));
      deviceError(null);
    } catch (err) {
      deviceError(mediaErrorKey(err), { detail: err.name });
    }
  });
  el.microphone.addEventListener("change", async () => {
    try {
      await setLocalTrack("audio", await getTrack("audio"));
      deviceError(null);
    } catch (err) {
      deviceError(mediaErrorKey(err), { detail: err.name });
    }
  });
  for (const r of document.querySelectorAll('input[name="kind"]')) {
    r.addEventListener("change", () => {
      if (body.dataset.state === "idle" || body.dataset.state === "refused") ensureMedia(selectedKind()).then(renderPreview);
    });
  }
  el.unmuteRemote.addEventListener("click", () => {
    el.remoteAudio.play().then(() => { el.unmuteRemote.hidden = true; }, () => {});
    if (local.audioCtx) local.audioCtx.resume().catch(() => {});
  });
  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
    navigator.mediaDevices.addEventListener("devicechange", () => listDevices());
  }
  // Closing the tab sends no DELETE: a reload comes back as the same participant (its token is kept
  // for the tab), and a closed tab's port comes back with its lease, within seconds.
  window.addEventListener("online", () => {
    if (body.dataset.state === "joining") connect({ immediate: true });
  });
  setInterval(renderWindow, 30000);
  onLangChange(() => {
    renderWindow();
    listDevices();
  });
}

/** The participant this tab had before a reload, if any. */
function restore() {
  let stored = null;
  try {
    stored = JSON.parse(sessionStorage.getItem(STORED) || "null");
  } catch { /* storage disabled or garbled */ }
  if (!stored || !stored.id || !stored.token) return false;
  session.participantId = stored.id;
  session.participantToken = stored.token;
  session.kind = stored.kind === "audio" ? "audio" : "video";
  session.iceServers = Array.isArray(stored.iceServers) ? stored.iceServers : [];
  session.requestedKind = stored.requestedKind === "audio" ? "audio" : "video";
  const r = document.querySelector(`input[name="kind"][value="${session.requestedKind}"]`);
  if (r) r.checked = true;
  return true;
}

async function main() {
  setupLangSwitch($("lang-switch"));
  applyI18n();
  phoneLink(el.refusedPhone);
  phoneLink(el.endedPhone);
  phoneLink(el.preemptedPhone);
  el.remote.hidden = true;
  clearRemote();
  renderMuteButtons();
  wire();
  const kind = params.get("kind");
  if (kind === "audio" || kind === "video") {
    const r = document.querySelector(`input[name="kind"][value="${kind}"]`);
    if (r) r.checked = true;
  }
  let name = params.get("name");
  if (!name) {
    try {
      name = localStorage.getItem("backupplus.name");
    } catch { /* storage disabled */ }
  }
  if (name) el.name.value = name.slice(0, 80);
  setState("idle");
  status("st_loading");
  if (restore()) {
    // A reload: offer again as the same participant (or join anew if its port has gone meanwhile).
    refreshConference();
    await connect({ immediate: true });
    return;
  }
  const autojoin = params.get("autojoin") === "1";
  const info = refreshConference();
  if (autojoin) {
    // In parallel with the conference lookup: an ended outage stops the join anyway.
    await join();
    return;
  }
  await info;
  if (endedForGood) return;
  status("st_idle");
  await ensureMedia(selectedKind());
  renderPreview();
}

main();
