// The operator's page: the stream list (polled every second), a stream's view (players, plot, phrases, controls).

import { follow, request, setToken, token } from "./api.js";
import { Player } from "./player.js";
import { drawPlot, History } from "./plot.js";
import { Timeline } from "./timeline.js";

const POLL_MS = 1000;
const $ = (selector) => document.querySelector(selector);

const page = {
  overview: null,
  histories: new Map(), // stream id -> History
  view: null, // {id, players, stopPhrases, timeline}
  players: {},
  phrases: [],
};
window.livedub = page; // for operators' consoles and the browser tests

// ------------------------------------------------------------------------------------------------ formatting

const pct = (v) => (typeof v === "number" ? `${Math.round(v * 100)} %` : "–");
const secs = (v) => (typeof v === "number" ? `${v.toFixed(1)} s` : "–");
const num = (v) => (typeof v === "number" ? String(v) : "–");

function ago(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function stateClass(state) {
  if (state === "running") return "ok";
  if (state === "failed") return "bad";
  if (["starting", "stopping", "draining"].includes(state)) return "warn";
  return "";
}

function languages(stream) {
  const targets = (stream.target_languages || []).join(", ");
  return `${stream.source_language} → ${targets}`;
}

// Share dubbed over the last minute per target language (the first target's alone from an older worker).
function ratios(stream) {
  const perLanguage = stream.languages || {};
  const codes = stream.target_languages || [];
  const result = {};
  for (const code of codes) {
    const value = perLanguage[code] ? perLanguage[code].speech_dubbed_ratio_1m : undefined;
    result[code] = value === undefined && code === codes[0] ? stream.dubbed_ratio_1m : value;
  }
  return result;
}

function ratioText(stream) {
  const entries = Object.entries(ratios(stream));
  if (entries.length <= 1) return pct(stream.dubbed_ratio_1m);
  return entries.map(([code, value]) => `${code} ${pct(value)}`).join(" · ");
}

// Of the dubbed speech per target language: the share in the main translator's words (the LLM) and the share in a
// natural voice (the rest: Apertium's words, the fast voice, when the main ones could not be on time).
function tierText(stream) {
  const perLanguage = stream.languages || {};
  const codes = stream.target_languages || [];
  return codes
    .map((code) => {
      const tiers = (perLanguage[code] || {}).tiers || {};
      const text = `${pct(tiers.main_words)} / ${pct(tiers.usual_voice)}`;
      return codes.length > 1 ? `${code} ${text}` : text;
    })
    .join(" · ");
}

function stsCell(stream) {
  const sts = stream.sts || {};
  if (!stream.sts) return "–";
  return sts.ready ? "connected" : sts.state || "not connected";
}

// ------------------------------------------------------------------------------------------------ overview

async function poll() {
  try {
    const result = await request("/v1/operator/overview");
    if (result.status === 401) {
      showLoadError(token() ? "The operator token was refused." : "Enter the operator token (top right) to see the streams.");
    } else if (!result.ok) {
      showLoadError(`The media-service refused the overview (HTTP ${result.status}): ${detail(result)}`);
    } else {
      showLoadError("");
      page.overview = result.body;
      for (const stream of result.body.streams) {
        if (!page.histories.has(stream.stream_id)) page.histories.set(stream.stream_id, new History());
        page.histories.get(stream.stream_id).add(stream.lag_s, ratios(stream));
      }
      render();
    }
  } catch (error) {
    showLoadError("The media-service does not answer.");
  }
  setTimeout(poll, POLL_MS);
}

function detail(result) {
  return (result.body && result.body.detail) || "";
}

function showLoadError(text) {
  const banner = $("#load-error");
  banner.hidden = !text;
  banner.textContent = text;
}

function render() {
  const data = page.overview;
  $("#workers").textContent = `${data.workers.active}/${data.workers.max} workers`;
  renderSts(data.sts);
  renderPool(data.sts_endpoints || []);
  renderList(data);
  if (page.view) renderStream(data.streams.find((s) => s.stream_id === page.view.id));
}

function renderSts(sts) {
  const pill = $("#sts-status");
  const banner = $("#sts-banner");
  if (sts.ready) {
    pill.className = "pill ok";
    pill.textContent = "STS ready";
    banner.hidden = true;
    return;
  }
  const since = new Date(sts.since).toLocaleTimeString();
  const what = sts.reachable ? "STS is up but not ready (loading its models?)" : "STS is down";
  pill.className = `pill ${sts.reachable ? "warn" : "bad"}`;
  pill.textContent = sts.reachable ? "STS not ready" : "STS down";
  banner.hidden = false;
  banner.textContent = `${what} since ${since} (${ago(sts.for_s)}): streams keep their original audio.`;
}

// With several STS endpoints (STS_SERVICE_URLS): how many are healthy, each one's state in the tooltip.
function renderPool(endpoints) {
  const pill = $("#sts-status");
  pill.title = endpoints
    .map((e) => `${e.url}: ${e.state}, ${(e.streams || []).length} streams, ${e.fragments_inflight ?? "?"} in flight`)
    .join("\n");
  if (endpoints.length < 2) return;
  const healthy = endpoints.filter((e) => e.state === "healthy").length;
  pill.textContent += ` · pool ${healthy}/${endpoints.length} healthy`;
}

function renderList(data) {
  const streams = data.streams;
  $("#empty").hidden = streams.length > 0;
  $("#streams").hidden = streams.length === 0;
  $("#publish-url").textContent = data.publish_url;
  $("#publish-example").textContent = `ffmpeg -re -i input.mp4 -c copy -f flv "${data.publish_url}"`;
  const hint = $("#publish-hint");
  hint.hidden = streams.length === 0;
  hint.querySelector("code").textContent = data.publish_url;
  const body = $("#streams tbody");
  body.replaceChildren(...streams.map(streamRow));
}

function streamRow(stream) {
  const row = document.createElement("tr");
  row.className = "stream";
  row.dataset.streamId = stream.stream_id;
  row.onclick = () => (location.hash = `#/streams/${encodeURIComponent(stream.stream_id)}`);
  const cells = [
    stream.stream_id,
    null,
    languages(stream),
    secs(stream.lag_s),
    ratioText(stream),
    tierText(stream),
    num(stream.dubs_dropped),
    stsCell(stream),
    stream.problems.map((p) => p.message).join(" "),
  ];
  for (const [index, text] of cells.entries()) {
    const cell = document.createElement("td");
    if (index === 1) {
      const pill = document.createElement("span");
      pill.className = `pill ${stateClass(stream.state)}`;
      pill.textContent = stream.state;
      cell.append(pill);
      cell.className = "state";
    } else {
      cell.textContent = text;
    }
    row.append(cell);
  }
  return row;
}

// ------------------------------------------------------------------------------------------------ a stream

function openStream(id) {
  closeStream();
  $("#list-view").hidden = true;
  $("#stream-view").hidden = false;
  $("#sv-title").textContent = id;
  const timeline = new Timeline($("#timeline"), (page.overview && page.overview.languages) || {});
  timeline.clear();
  page.phrases = [];
  page.players = {};
  page.view = { id, stopPhrases: () => {}, phrasesFollowed: false, timeline, languagesShown: "" };
  $("#phrases-state").textContent = "(waiting for the worker)";
  $("#output-player .player-note").textContent = "Waiting for the stream's HLS presentation.";
  $("#input-load").disabled = true;
  $("#input-load").onclick = () => {
    $("#input-load").disabled = true;
    page.players.input = new Player($("#input-video"), hlsUrl(id), {
      audio: "original",
      note: $("#input-player .player-note"),
    }).start();
  };
  $("#control-msg").textContent = "";
  if (page.overview) renderStream(page.overview.streams.find((s) => s.stream_id === id));
}

function hlsUrl(id) {
  return `/hls/${encodeURIComponent(id)}/master.m3u8`;
}

// The phrase log is followed once the worker has made the stream's output directory; while a new worker starts,
// not before it has replaced the last run's log (else the timeline would show the last run's phrases).
function followPhrases(stream) {
  if (page.view.phrasesFollowed || !stream.logs_ready) return;
  if (stream.outputs_ended && ["starting", "running"].includes(stream.state)) return;
  page.view.phrasesFollowed = true;
  page.view.stopPhrases = follow(
    `/v1/streams/${encodeURIComponent(stream.stream_id)}/phrases`,
    (phrase) => {
      page.phrases.push(phrase);
      page.view.timeline.add(phrase);
    },
    (state) => ($("#phrases-state").textContent = state === "live" ? "" : `(${state})`),
  );
}

// The players start once the worker has written its master playlist (no 404s for hls.js to retry).
function startPlayers(stream) {
  if (page.players.output || !stream.hls_ready) return;
  page.players.output = new Player($("#output-video"), hlsUrl(stream.stream_id), {
    audio: "dub",
    audioSelect: $("#audio-select"),
    subsSelect: $("#subs-select"),
    note: $("#output-player .player-note"),
  }).start();
  $("#input-load").disabled = false;
}

// A new worker for the same stream (a restart or a republish) writes a new presentation and phrase log.
function restartOutputs() {
  page.view.stopPhrases();
  page.view.stopPhrases = () => {};
  page.view.phrasesFollowed = false;
  page.view.timeline.clear();
  page.phrases = [];
  for (const player of Object.values(page.players)) player.destroy();
  page.players = {};
  $("#input-load").disabled = true;
  $("#output-player .player-note").textContent = "The worker restarted: waiting for its HLS presentation.";
}

function closeStream() {
  if (!page.view) return;
  page.view.stopPhrases();
  for (const player of Object.values(page.players)) player.destroy();
  page.players = {};
  page.view = null;
}

function showList() {
  closeStream();
  $("#stream-view").hidden = true;
  $("#list-view").hidden = false;
}

function renderStream(stream) {
  const id = page.view.id;
  if (!stream) {
    $("#sv-state").className = "pill";
    $("#sv-state").textContent = "not published";
    $("#sv-problems").replaceChildren(problem({ code: "gone", message: "This stream is not published now." }));
    return;
  }
  if (stream.started_at && page.view.run && stream.started_at !== page.view.run) restartOutputs();
  if (stream.started_at) page.view.run = stream.started_at;
  $("#sv-state").className = `pill ${stateClass(stream.state)}`;
  $("#sv-state").textContent = stream.state;
  const next = stream.next_target_languages;
  const changes = next && next.join(",") !== (stream.target_languages || []).join(",");
  $("#sv-langs").textContent = languages(stream) + (changes ? ` (next start: ${next.join(", ")})` : "");
  $("#sv-problems").replaceChildren(...stream.problems.map(problem));
  startPlayers(stream);
  followPhrases(stream);
  renderFigures(stream);
  drawPlot($("#plot"), page.histories.get(id) || new History());
  renderControls(stream);
}

function problem(p) {
  const item = document.createElement("li");
  item.dataset.code = p.code;
  item.className = ["failed", "unsupported_codec", "gone"].includes(p.code) ? "bad" : "";
  item.textContent = p.message;
  return item;
}

function renderFigures(stream) {
  const figures = [
    ["lag", secs(stream.lag_s)],
    ["dubbed, 1 min", ratioText(stream)],
    ["dubbed, all", pct(stream.speech_dubbed_ratio)],
    ["dubs dropped", num(stream.dubs_dropped)],
    ["phrases dubbed", num(stream.dubbed)],
    ["original kept", num(stream.fallbacks)],
    ["A/V sync", typeof stream.last_av_sync_delta_ms === "number" ? `${stream.last_av_sync_delta_ms} ms` : "–"],
    ["uptime", typeof stream.uptime_s === "number" ? ago(stream.uptime_s) : "–"],
  ];
  $("#sv-figures").replaceChildren(
    ...figures.flatMap(([name, value]) => {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value;
      return [dt, dd];
    }),
  );
}

function renderControls(stream) {
  const controls = page.overview.controls;
  $("#controls-note").textContent = controls.enabled
    ? (token() ? "" : "Enter the operator token (top right) to use the controls.")
    : `Read-only: ${controls.reason}`;
  for (const id of ["#ctl-stop", "#ctl-start", "#ctl-config"]) $(id).disabled = !controls.enabled;
  const names = page.overview.languages || {};
  const codes = Object.keys(names).length ? Object.keys(names) : stream.target_languages;
  const shown = codes.join(",");
  if (page.view.languagesShown === shown) return; // keep the operator's ticks between polls
  page.view.languagesShown = shown;
  const chosen = new Set(stream.next_target_languages || stream.target_languages);
  $("#ctl-langs").replaceChildren(
    Object.assign(document.createElement("legend"), { textContent: "Target languages at the next start" }),
    ...codes
      .filter((code) => code !== stream.source_language)
      .map((code) => {
        const label = document.createElement("label");
        const box = Object.assign(document.createElement("input"), { type: "checkbox", value: code });
        box.checked = chosen.has(code);
        label.append(box, ` ${names[code] || code} (${code})`);
        return label;
      }),
  );
}

async function control(action) {
  const id = page.view.id;
  const base = `/v1/streams/${encodeURIComponent(id)}`;
  let result;
  if (action === "config") {
    const codes = [...document.querySelectorAll("#ctl-langs input:checked")].map((box) => box.value);
    result = await request(`${base}/config`, { method: "PUT", body: { target_languages: codes } });
  } else {
    result = await request(`${base}/${action}`, { method: "POST" });
  }
  const message = $("#control-msg");
  message.className = result.ok ? "ok" : "bad";
  if (result.ok) {
    message.textContent = {
      stop: "Worker stopping.",
      start: `Worker: ${result.body && result.body.reason}.`,
      config: "Languages set: they apply at the next start.",
    }[action];
  } else {
    message.textContent = `Refused (HTTP ${result.status}): ${detail(result)}`;
  }
}

// ------------------------------------------------------------------------------------------------ wiring

function route() {
  const match = location.hash.match(/^#\/streams\/(.+)$/);
  if (match) openStream(decodeURIComponent(match[1]));
  else showList();
}

function init() {
  const tokenInput = $("#token");
  tokenInput.value = token();
  tokenInput.onchange = () => {
    setToken(tokenInput.value.trim());
    if (page.view && page.overview) renderStream(page.overview.streams.find((s) => s.stream_id === page.view.id));
  };
  $("#copy-publish").onclick = async () => {
    try {
      await navigator.clipboard.writeText($("#publish-url").textContent);
      $("#copy-publish").textContent = "Copied";
    } catch {
      $("#copy-publish").textContent = "Select and copy";
    }
  };
  $("#ctl-stop").onclick = () => control("stop");
  $("#ctl-start").onclick = () => control("start");
  $("#ctl-config").onclick = () => control("config");
  window.addEventListener("hashchange", route);
  route();
  poll();
}

init();
