/* Lantern command map: plain JavaScript, no build step, nothing loaded from elsewhere.
 *
 * Flow: sign in (POST /api/v1/auth/token; the token lives in this tab's sessionStorage),
 * read the caller's role (GET /auth/me), then only for roles that may see the map
 * (admin, officer, analyst): the sites, the chosen site's map and zones, the live feed
 * (snapshot, then position / device_state / alarm / sighting / alert deltas), open
 * alerts and incidents. Incident actions are offered to admins and officers only.
 * The review queue is shown when GET /api/v1/review exists and admits the caller.
 *
 * The map is a canvas in Web-Mercator: world coordinates in [0, 1], a view centre and
 * a scale in pixels per world unit. Nothing is told by colour alone: zones carry a
 * pattern and a text label with their kind, devices a shape and a text state.
 */
"use strict";

(function () {
  const API = "/api/v1";
  const TOKEN_KEY = "lantern.map.token";
  const SITE_KEY = "lantern.map.site";
  const MAP_ROLES = ["admin", "officer", "analyst"];
  const ACT_ROLES = ["admin", "officer"];
  const TRAIL = 20;
  const EARTH = 40075016.686; // metres round the equator
  const MAX_LIST = 100;

  const TRANSITIONS = {
    acknowledge: ["open", "escalated"],
    assign: ["open", "acknowledged", "escalated", "suspended"],
    note: ["open", "acknowledged", "escalated", "suspended", "cleared"],
    clear: ["open", "acknowledged", "escalated", "suspended"],
  };

  // Zone kinds: colour, pattern and a word; the word is drawn on the map too.
  const ZONE_STYLE = {
    victim: { colour: "#b0201d", pattern: "hatch", word: "victim (keep out)" },
    school: { colour: "#b35c00", pattern: "cross", word: "school (keep out)" },
    residence: { colour: "#2e6b1f", pattern: "dots", word: "residence" },
    county: { colour: "#1d4f91", pattern: "none", word: "county (stay in)" },
    perimeter: { colour: "#5b2a86", pattern: "horizontal", word: "perimeter" },
    other: { colour: "#505050", pattern: "vertical", word: "other" },
  };

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    me: null,
    role: null,
    site: null,
    siteMap: [],
    zones: [],
    devices: new Map(),
    alerts: new Map(),
    incidents: [],
    sightings: [],
    tileUrl: null,
    tiles: new Map(),
    openapi: null,
    ws: null,
    wsSite: null,
    view: { cx: 0.5, cy: 0.5, s: 1024 },
    fitted: false,
    track: null,
    trackIndex: 0,
    trackTimer: null,
    redrawPending: false,
    incidentTimer: null,
  };

  const $ = (id) => document.getElementById(id);

  /** Build an element; children are nodes or strings (always text, never HTML). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const can = {
    map: () => MAP_ROLES.includes(state.role),
    act: () => ACT_ROLES.includes(state.role),
  };

  function fmtTime(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return d.toLocaleString(undefined, { hour12: false });
  }

  // -- API -------------------------------------------------------------------------------

  class HttpError extends Error {
    constructor(status, detail) {
      super(`${status}: ${detail}`);
      this.status = status;
      this.detail = detail;
    }
  }

  async function api(path, options = {}) {
    const headers = Object.assign({}, options.headers || {});
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    let body = options.body;
    if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.json);
    }
    const response = await fetch(API + path, { method: options.method || "GET", headers, body });
    if (response.status === 401 && state.token) {
      signOut("Your session has ended; please sign in again.");
      throw new HttpError(401, "not signed in");
    }
    if (!response.ok) {
      let detail = response.statusText;
      try {
        const data = await response.json();
        detail = typeof data.detail === "string" ? data.detail
          : (data.detail || []).map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
      } catch (_) { /* not JSON */ }
      throw new HttpError(response.status, detail);
    }
    return options.raw ? response : response.json();
  }

  /** Every item of a paginated list (at most `cap`). */
  async function all(path, cap = 5000) {
    const items = [];
    const sep = path.includes("?") ? "&" : "?";
    for (let offset = 0; offset < cap; offset += 500) {
      const page = await api(`${path}${sep}limit=500&offset=${offset}`);
      items.push(...page.items);
      if (items.length >= page.total || page.items.length === 0) break;
    }
    return items;
  }

  // -- sign in / out ---------------------------------------------------------------------

  async function signIn(event) {
    event.preventDefault();
    $("login-error").textContent = "";
    const form = new URLSearchParams({ username: $("username").value, password: $("password").value });
    const response = await fetch(`${API}/auth/token`, { method: "POST", body: form });
    if (!response.ok) {
      $("login-error").textContent = response.status === 401
        ? "Incorrect username or password." : `Sign-in failed (${response.status}).`;
      return;
    }
    const data = await response.json();
    state.token = data.access_token;
    sessionStorage.setItem(TOKEN_KEY, state.token);
    $("password").value = "";
    await start();
  }

  function signOut(message) {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    closeFeed();
    stopTrack();
    state.devices.clear();
    state.alerts.clear();
    state.incidents = [];
    state.sightings = [];
    $("workspace").hidden = true;
    $("no-map").hidden = true;
    $("review-panel").hidden = true;
    $("session").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("username").focus();
  }

  async function start() {
    try {
      state.me = await api("/auth/me");
    } catch (err) {
      signOut(err.status === 401 ? "" : `Could not read your user: ${err.message}`);
      return;
    }
    state.role = state.me.role;
    $("login").hidden = true;
    $("session").hidden = false;
    $("who").textContent = `${state.me.username} (${state.role})`;
    if (!can.map()) {
      $("no-map").hidden = false;
      $("site-select").hidden = true;
      $("feed-status").hidden = true;
      await loadReview();
      return;
    }
    $("site-select").hidden = false;
    $("feed-status").hidden = false;
    $("workspace").hidden = false;
    $("sightings-panel").hidden = false;
    try {
      state.tileUrl = (await api("/map/config")).tile_url;
    } catch (_) {
      state.tileUrl = null;
    }
    buildLegend();
    resizeCanvas();
    const sites = await all("/sites");
    const select = $("site-select");
    select.replaceChildren(...sites.map((s) => el("option", { value: s.site_id, text: `${s.name} (${s.site_id})` })));
    const wanted = sessionStorage.getItem(SITE_KEY);
    if (sites.some((s) => s.site_id === wanted)) select.value = wanted;
    if (sites.length === 0) {
      $("map-summary").textContent = "No sites yet.";
      return;
    }
    await loadSite(select.value);
    await loadReview();
  }

  // -- a site ----------------------------------------------------------------------------

  async function loadSite(siteId) {
    state.site = siteId;
    sessionStorage.setItem(SITE_KEY, siteId);
    state.fitted = false;
    state.devices.clear();
    state.alerts.clear();
    state.sightings = [];
    stopTrack();
    const [siteMap, zones] = await Promise.all([
      api(`/sites/${encodeURIComponent(siteId)}/map`).catch(() => ({ features: [] })),
      all(`/zones?site_id=${encodeURIComponent(siteId)}`),
    ]);
    state.siteMap = siteMap.features || [];
    state.zones = zones;
    openFeed();
    await loadSightings();
    redraw();
  }

  async function loadAlerts() {
    const alerts = await all("/alerts?open=true", 1000);
    for (const alert of alerts) {
      if (state.devices.has(alert.device_id)) state.alerts.set(alert.id, alert);
    }
    renderAlerts();
  }

  async function loadIncidents() {
    const items = await all("/incidents", 1000);
    state.incidents = items.filter((i) => i.device_id === null || state.devices.has(i.device_id)).slice(0, MAX_LIST);
    renderIncidents();
  }

  function scheduleIncidents() {
    clearTimeout(state.incidentTimer);
    state.incidentTimer = setTimeout(() => loadIncidents().catch(report), 300);
  }

  async function loadSightings() {
    const page = await api(`/sightings?site_id=${encodeURIComponent(state.site)}&limit=20`);
    state.sightings = page.items.map((s) => ({ ...s, candidates: null }));
    renderSightings();
  }

  /** The roles the hub admits to `GET path` (from the OpenAPI document, which
   * publishes them as x-lantern-roles); null if the hub has no such route. */
  async function routeRoles(path) {
    if (!state.openapi) {
      const response = await fetch(`${API}/openapi.json`);
      state.openapi = response.ok ? await response.json() : { paths: {} };
    }
    const op = (state.openapi.paths[API + path] || {}).get;
    return op ? op["x-lantern-roles"] || [] : null;
  }

  async function loadReview() {
    $("review-panel").hidden = true;
    const roles = await routeRoles("/review").catch(() => null);
    if (!roles || !roles.includes(state.role)) return; // no such route, or not for this role
    try {
      const page = await api("/review?limit=50");
      renderReview(page.items || []);
      $("review-panel").hidden = false;
    } catch (_) {
      $("review-panel").hidden = true;
    }
  }

  function report(err) {
    $("incident-status").textContent = `Error: ${err.message}`;
  }

  // -- the live feed ---------------------------------------------------------------------

  function openFeed() {
    closeFeed();
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ access_token: state.token, site: state.site });
    const ws = new WebSocket(`${proto}//${location.host}${API}/feed?${query}`);
    state.ws = ws;
    state.wsSite = state.site;
    setFeedStatus("connecting");
    ws.onmessage = (msg) => onFeed(JSON.parse(msg.data));
    ws.onclose = (ev) => {
      if (state.ws !== ws) return;
      state.ws = null;
      if (ev.code === 1008) {
        signOut(`The live feed refused the session (${ev.reason || "policy"}); please sign in again.`);
        return;
      }
      setFeedStatus("disconnected, retrying");
      setTimeout(() => { if (!state.ws && state.token && state.site) openFeed(); }, 2000);
    };
  }

  function closeFeed() {
    const ws = state.ws;
    state.ws = null;
    if (ws) ws.close();
    setFeedStatus("not connected");
  }

  function setFeedStatus(text) {
    $("feed-status").textContent = `feed: ${text}`;
  }

  function onFeed(msg) {
    if (msg.type === "snapshot") {
      setFeedStatus("live");
      for (const d of msg.devices) {
        const device = deviceOf(d.device_id);
        Object.assign(device, { model: d.model, status: d.status, lastSeen: d.last_seen_at });
        if (d.position) addFix(device, d.position, d.position.captured_at);
      }
      for (const alarm of msg.open_alarms) deviceOf(alarm.device_id).alarm = alarm.type;
      renderDevices();
      loadAlerts().catch(report);
      loadIncidents().catch(report);
      fitOnce();
      redraw();
      return;
    }
    const device = deviceOf(msg.device_id);
    if (msg.type === "position") {
      addFix(device, msg.data, msg.time);
      renderDevices();
      redraw();
    } else if (msg.type === "device_state") {
      device.status = msg.data.status;
      device.lastSeen = msg.time;
      renderDevices();
      redraw();
    } else if (msg.type === "alarm") {
      device.alarm = msg.data.state === "cleared" ? null : msg.data.type;
      renderDevices();
    } else if (msg.type === "sighting") {
      state.sightings.unshift({
        id: msg.data.sighting_id, device_id: msg.device_id, captured_at: msg.time,
        has_crop: msg.data.has_crop, quality: msg.data.quality,
        candidates: msg.data.candidates || [], candidate_count: (msg.data.candidates || []).length,
      });
      state.sightings.length = Math.min(state.sightings.length, MAX_LIST);
      renderSightings();
    } else if (msg.type === "alert") {
      const alert = msg.data;
      const known = state.alerts.has(alert.id);
      state.alerts.set(alert.id, alert);
      if (!known && !alert.cleared_at) announce(alert);
      renderAlerts();
      redraw();
      scheduleIncidents();
    }
  }

  function deviceOf(id) {
    let device = state.devices.get(id);
    if (!device) {
      device = { id, status: "unknown", fix: null, trail: [], batt: null, alarm: null, lastSeen: null };
      state.devices.set(id, device);
    }
    return device;
  }

  function addFix(device, fix, time) {
    if (device.fix && device.fix.time && new Date(time) < new Date(device.fix.time)) return; // late fix
    device.fix = { lat: fix.lat, lon: fix.lon, acc: fix.acc, src: fix.src, time };
    if (fix.batt !== undefined && fix.batt !== null) device.batt = fix.batt;
    device.trail.push([fix.lon, fix.lat]);
    if (device.trail.length > TRAIL) device.trail.shift();
  }

  function announce(alert) {
    $("announcer").textContent =
      `New ${alert.severity} alert: ${alert.type} on ${alert.device_id}. ${alert.detail || ""}`;
  }

  // -- panels ----------------------------------------------------------------------------

  function renderAlerts() {
    const open = [...state.alerts.values()]
      .filter((a) => !a.cleared_at)
      .sort((a, b) => new Date(b.raised_at) - new Date(a.raised_at))
      .slice(0, MAX_LIST);
    $("alerts").replaceChildren(...open.map((a) => el("li", {
      class: `sev-${a.severity}`, dataset: { alertId: a.id, type: a.type },
    },
    el("span", { class: `tag ${a.severity}`, text: a.severity.toUpperCase() }),
    el("strong", { text: a.type }), ` · ${a.device_id} · ${fmtTime(a.raised_at)}`,
    a.retrospective ? " · retrospective" : "",
    el("div", { class: "muted", text: a.detail }),
    a.incident_id ? el("div", { class: "muted", text: `Incident #${a.incident_id}` }) : null)));
    $("alerts-empty").hidden = open.length > 0;
  }

  function renderIncidents() {
    $("incidents").replaceChildren(...state.incidents.map(incidentItem));
    $("incidents-empty").hidden = state.incidents.length > 0;
  }

  function incidentItem(inc) {
    const li = el("li", {
      class: `sev-${inc.severity}${inc.status === "cleared" ? " cleared" : ""}`,
      dataset: { incidentId: inc.id },
    },
    el("span", { class: `tag ${inc.severity}`, text: inc.severity.toUpperCase() }),
    el("strong", { text: `Incident #${inc.id}` }), " · status: ",
    el("span", { class: "incident-status", text: inc.status }),
    el("div", { class: "muted", text:
      `${inc.device_id || "no device"} · opened ${fmtTime(inc.opened_at)} · acknowledge by ${fmtTime(inc.sla_due_at)}` +
      (inc.acknowledged_by ? ` · acknowledged by ${inc.acknowledged_by}` : "") +
      (inc.assigned_to ? ` · assigned to user ${inc.assigned_to}` : "") }));
    const actions = el("div", { class: "actions" });
    const label = `incident ${inc.id}`;
    const allowed = (what) => TRANSITIONS[what].includes(inc.status);
    if (can.act()) {
      actions.append(el("button", {
        type: "button", disabled: !allowed("acknowledge"), "aria-label": `Acknowledge ${label}`,
        onclick: () => act(inc.id, "acknowledge", {}),
      }, "Acknowledge"));
      const who = el("input", { type: "number", min: 1, value: state.me.id, "aria-label": `User id to assign ${label} to` });
      actions.append(who, el("button", {
        type: "button", disabled: !allowed("assign"), "aria-label": `Assign ${label}`,
        onclick: () => act(inc.id, "assign", { user_id: Number(who.value) }),
      }, "Assign"));
      const note = el("input", { type: "text", maxlength: 4000, placeholder: "note", "aria-label": `Note for ${label}` });
      actions.append(note, el("button", {
        type: "button", disabled: !allowed("note"), "aria-label": `Add note to ${label}`,
        onclick: () => act(inc.id, "note", { text: note.value }),
      }, "Note"), el("button", {
        type: "button", disabled: !allowed("clear"), "aria-label": `Clear ${label} (the note says what happened)`,
        onclick: () => act(inc.id, "clear", { note: note.value }),
      }, "Clear"));
    }
    const timeline = el("ol", { class: "timeline", hidden: true });
    actions.append(el("button", {
      type: "button", "aria-expanded": "false", "aria-label": `Timeline of ${label}`,
      onclick: async (ev) => {
        const button = ev.currentTarget;
        if (!timeline.hidden) {
          timeline.hidden = true;
          button.setAttribute("aria-expanded", "false");
          return;
        }
        const detail = await api(`/incidents/${inc.id}`).catch((err) => { report(err); return null; });
        if (!detail) return;
        timeline.replaceChildren(...detail.events.map((e) =>
          el("li", { text: `${fmtTime(e.at)} ${e.actor}: ${e.action}${e.note ? ` — ${e.note}` : ""}` })));
        timeline.hidden = false;
        button.setAttribute("aria-expanded", "true");
      },
    }, "Timeline"));
    li.append(actions, timeline);
    return li;
  }

  async function act(id, action, body) {
    $("incident-status").textContent = "";
    try {
      const updated = await api(`/incidents/${id}/${action}`, { method: "POST", json: body });
      $("incident-status").textContent = `Incident #${id}: ${action} done, now ${updated.status}.`;
    } catch (err) {
      $("incident-status").textContent = `Incident #${id}: ${action} refused — ${err.detail || err.message}`;
    }
    await loadIncidents().catch(report);
  }

  function renderDevices() {
    const devices = [...state.devices.values()].sort((a, b) => a.id.localeCompare(b.id));
    $("devices").replaceChildren(...devices.map((d) => el("tr", { dataset: { deviceId: d.id } },
      el("th", { scope: "row", text: d.id }),
      el("td", { class: `state-${d.status}`, text: d.status + (d.alarm ? ` · alarm ${d.alarm}` : "") }),
      el("td", { text: d.batt === null ? "—" : `${Math.round(d.batt)}%` }),
      el("td", { class: "fix", text: d.fix
        ? `${d.fix.lat.toFixed(5)}, ${d.fix.lon.toFixed(5)} ±${Math.round(d.fix.acc)} m at ${fmtTime(d.fix.time)}`
        : "no fix" }),
      el("td", {}, el("button", {
        type: "button", disabled: !d.fix, "aria-label": `Show ${d.id} on the map`,
        onclick: () => centreOn(d),
      }, "Show")))));
    const select = $("track-device");
    const current = select.value;
    select.replaceChildren(...devices.map((d) => el("option", { value: d.id, text: d.id })));
    if (devices.some((d) => d.id === current)) select.value = current;
    const online = devices.filter((d) => d.status === "online").length;
    $("map-summary").textContent = `${devices.length} devices, ${online} online; ${state.zones.length} zones.`;
  }

  function renderSightings() {
    $("sightings").replaceChildren(...state.sightings.map(sightingItem));
    $("sightings-empty").hidden = state.sightings.length > 0;
  }

  function sightingItem(s) {
    const li = el("li", { dataset: { sightingId: s.id } },
      el("strong", { text: `Sighting #${s.id}` }), ` · ${s.device_id} · ${fmtTime(s.captured_at)}`);
    const list = el("ol", { class: "candidates" });
    const fill = (candidates) => {
      list.replaceChildren(...candidates.slice(0, 5).map((c) => el("li", {
        text: `${c.display_name} (${c.category || c.gallery}) — score ${Number(c.score).toFixed(3)}`,
      })));
      if (!candidates.length) list.replaceChildren(el("li", { text: "no candidate above the alert threshold" }));
    };
    if (s.candidates) fill(s.candidates);
    li.append(list);
    const actions = el("div", { class: "actions" });
    if (!s.candidates && s.candidate_count > 0) {
      actions.append(el("button", {
        type: "button", "aria-label": `Show candidates of sighting ${s.id}`,
        onclick: async () => {
          const detail = await api(`/sightings/${s.id}`).catch(() => null);
          if (detail) { s.candidates = detail.candidates; fill(s.candidates); }
        },
      }, `Show ${s.candidate_count} candidates`));
    }
    if (s.has_crop && s.id) {
      const form = el("form", { class: "actions" });
      const caseInput = el("input", { type: "text", required: true, maxlength: 100, placeholder: "case id",
        "aria-label": `Case id for viewing the face crop of sighting ${s.id}` });
      form.append(caseInput, el("button", { type: "submit" }, "View face crop"));
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        try {
          const response = await api(`/sightings/${s.id}/crop?case_id=${encodeURIComponent(caseInput.value)}`, { raw: true });
          const url = URL.createObjectURL(await response.blob());
          form.replaceWith(el("img", { class: "crop", src: url, alt: `Face crop of sighting ${s.id}` }));
        } catch (err) {
          caseInput.setCustomValidity(err.detail || err.message);
          caseInput.reportValidity();
          caseInput.setCustomValidity("");
        }
      });
      actions.append(form);
    }
    li.append(actions);
    return li;
  }

  function renderReview(items) {
    const shown = ["id", "probe_ref", "candidate_ref", "hub_id", "gallery", "score", "rank", "status",
      "confirmations", "flags", "created_at"];
    $("review").replaceChildren(...items.slice(0, MAX_LIST).map((item) => el("li", {},
      ...shown.filter((k) => k in item).map((k) => {
        let v = item[k];
        if (Array.isArray(v)) v = v.length ? v.join(", ") : "none";
        else if (k === "score") v = Number(v).toFixed(3);
        else if (k.endsWith("_at")) v = fmtTime(v);
        return el("div", { text: `${k.replace(/_/g, " ")}: ${v === null ? "—" : v}` });
      }))));
    $("review-empty").hidden = items.length > 0;
  }

  // -- track playback --------------------------------------------------------------------

  function localInput(date) {
    const pad = (n) => String(n).padStart(2, "0");
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T` +
      `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  }

  async function loadTrack(event) {
    event.preventDefault();
    stopTrack();
    const device = $("track-device").value;
    const since = new Date($("track-since").value);
    const until = new Date($("track-until").value);
    if (!device || isNaN(since) || isNaN(until)) return;
    try {
      const query = new URLSearchParams({ since: since.toISOString(), until: until.toISOString() });
      const feature = await api(`/positions/${encodeURIComponent(device)}/track?${query}`);
      const geom = feature.geometry;
      const coords = !geom ? [] : geom.type === "Point" ? [geom.coordinates] : geom.coordinates;
      if (!coords.length) {
        $("track-status").textContent = `No fixes of ${device} in that window.`;
        return;
      }
      state.track = { device, coords, times: feature.properties.times, acc: feature.properties.acc };
      state.trackIndex = 0;
      $("track-slider").max = String(coords.length - 1);
      $("track-slider").value = "0";
      $("track-player").hidden = false;
      $("track-status").textContent = `${coords.length} fixes of ${device}` +
        (feature.properties.truncated ? " (truncated)." : ".");
      showTrackIndex(0);
    } catch (err) {
      $("track-status").textContent = `Track refused: ${err.detail || err.message}`;
    }
  }

  function showTrackIndex(i) {
    if (!state.track) return;
    state.trackIndex = i;
    $("track-slider").value = String(i);
    $("track-time").textContent = `${i + 1}/${state.track.coords.length} at ${fmtTime(state.track.times[i])}`;
    redraw();
  }

  function togglePlay() {
    if (state.trackTimer) {
      clearInterval(state.trackTimer);
      state.trackTimer = null;
      $("track-play").textContent = "Play";
      return;
    }
    $("track-play").textContent = "Pause";
    state.trackTimer = setInterval(() => {
      if (!state.track) return;
      const next = state.trackIndex + 1;
      if (next >= state.track.coords.length) { togglePlay(); return; }
      showTrackIndex(next);
    }, 250);
  }

  function stopTrack() {
    if (state.trackTimer) clearInterval(state.trackTimer);
    state.trackTimer = null;
    state.track = null;
    $("track-play").textContent = "Play";
    $("track-player").hidden = true;
  }

  // -- projection and view ---------------------------------------------------------------

  const canvas = $("map");
  const ctx = canvas.getContext("2d");

  function world(lon, lat) {
    const phi = Math.max(-85.0511, Math.min(85.0511, lat)) * Math.PI / 180;
    return [(lon + 180) / 360, (1 - Math.log(Math.tan(phi) + 1 / Math.cos(phi)) / Math.PI) / 2];
  }

  function screen(lon, lat) {
    const [x, y] = world(lon, lat);
    const v = state.view;
    return [(x - v.cx) * v.s + canvas.clientWidth / 2, (y - v.cy) * v.s + canvas.clientHeight / 2];
  }

  /** Pixels for `metres` at latitude `lat`. */
  function metres(m, lat) {
    return m / (EARTH * Math.cos(lat * Math.PI / 180)) * state.view.s;
  }

  function resizeCanvas() {
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(canvas.clientWidth * dpr);
    canvas.height = Math.round(canvas.clientHeight * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    redraw();
  }

  function eachPosition(geometry, fn) {
    const walk = (c) => (typeof c[0] === "number" ? fn(c[0], c[1]) : c.forEach(walk));
    if (geometry && geometry.coordinates) walk(geometry.coordinates);
  }

  function fit() {
    let minX = Infinity; let minY = Infinity; let maxX = -Infinity; let maxY = -Infinity;
    const take = (lon, lat) => {
      const [x, y] = world(lon, lat);
      minX = Math.min(minX, x); maxX = Math.max(maxX, x); minY = Math.min(minY, y); maxY = Math.max(maxY, y);
    };
    for (const f of state.siteMap) eachPosition(f.geometry, take);
    for (const z of state.zones) {
      eachPosition(z.geometry, take);
      const r = z.properties.radius_m || z.properties.buffer_m;
      if (r && z.geometry.type === "Point") {
        const [lon, lat] = z.geometry.coordinates;
        const dLat = r / 111320;
        const dLon = r / (111320 * Math.cos(lat * Math.PI / 180));
        take(lon - dLon, lat - dLat); take(lon + dLon, lat + dLat);
      }
    }
    for (const d of state.devices.values()) if (d.fix) take(d.fix.lon, d.fix.lat);
    if (!isFinite(minX)) return false;
    const w = canvas.clientWidth || 800; const h = canvas.clientHeight || 500;
    state.view.cx = (minX + maxX) / 2;
    state.view.cy = (minY + maxY) / 2;
    // A lone point (one device, no map) gets a street-level view.
    const spanX = Math.max(maxX - minX, 4e-6); const spanY = Math.max(maxY - minY, 4e-6);
    state.view.s = Math.min(w / spanX, h / spanY, 2 ** 30) * 0.85;
    redraw();
    return true;
  }

  function fitOnce() {
    if (!state.fitted) state.fitted = fit();
  }

  function zoom(factor, px, py) {
    const v = state.view;
    const w = canvas.clientWidth; const h = canvas.clientHeight;
    px = px === undefined ? w / 2 : px;
    py = py === undefined ? h / 2 : py;
    const wx = v.cx + (px - w / 2) / v.s;
    const wy = v.cy + (py - h / 2) / v.s;
    v.s = Math.max(256, Math.min(2 ** 31, v.s * factor));
    v.cx = wx - (px - w / 2) / v.s;
    v.cy = wy - (py - h / 2) / v.s;
    redraw();
  }

  function pan(dx, dy) {
    state.view.cx -= dx / state.view.s;
    state.view.cy -= dy / state.view.s;
    redraw();
  }

  function centreOn(device) {
    const [x, y] = world(device.fix.lon, device.fix.lat);
    state.view.cx = x;
    state.view.cy = y;
    redraw();
  }

  // -- drawing ---------------------------------------------------------------------------

  const patterns = {};

  function pattern(kind, colour) {
    const key = `${kind}:${colour}`;
    if (patterns[key] !== undefined) return patterns[key];
    const tile = document.createElement("canvas");
    tile.width = tile.height = 10;
    const p = tile.getContext("2d");
    p.strokeStyle = colour; p.fillStyle = colour; p.lineWidth = 1.4;
    p.beginPath();
    if (kind === "hatch" || kind === "cross") { p.moveTo(0, 10); p.lineTo(10, 0); p.moveTo(-5, 5); p.lineTo(5, -5); p.moveTo(5, 15); p.lineTo(15, 5); }
    if (kind === "cross") { p.moveTo(0, 0); p.lineTo(10, 10); p.moveTo(-5, 5); p.lineTo(5, 15); p.moveTo(5, -5); p.lineTo(15, 5); }
    if (kind === "horizontal") { p.moveTo(0, 5); p.lineTo(10, 5); }
    if (kind === "vertical") { p.moveTo(5, 0); p.lineTo(5, 10); }
    p.stroke();
    if (kind === "dots") { p.beginPath(); p.arc(5, 5, 1.6, 0, 2 * Math.PI); p.fill(); }
    patterns[key] = kind === "none" ? null : ctx.createPattern(tile, "repeat");
    return patterns[key];
  }

  function buildLegend() {
    const items = Object.entries(ZONE_STYLE).map(([, style]) => {
      const swatch = el("canvas", { width: 28, height: 16, "aria-hidden": "true" });
      const c = swatch.getContext("2d");
      c.fillStyle = `${style.colour}22`; c.fillRect(0, 0, 28, 16);
      const pat = pattern(style.pattern, style.colour);
      if (pat) { c.fillStyle = pat; c.fillRect(0, 0, 28, 16); }
      c.strokeStyle = style.colour; c.lineWidth = 3; c.strokeRect(1, 1, 26, 14);
      return el("li", {}, swatch, `Zone: ${style.word}`);
    });
    const device = (shape, text) => {
      const swatch = el("canvas", { width: 20, height: 20, "aria-hidden": "true" });
      drawMarker(swatch.getContext("2d"), 10, 10, shape);
      return el("li", {}, swatch, text);
    };
    items.push(device("online", "Device online (filled)"), device("offline", "Device offline (hollow, crossed)"),
      device("unknown", "Device state unknown (hollow)"), device("alert", "Device with an open alert (ringed)"));
    $("legend").replaceChildren(...items);
  }

  function tracePath(coords, close) {
    coords.forEach(([lon, lat], i) => {
      const [x, y] = screen(lon, lat);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    if (close) ctx.closePath();
  }

  function traceGeometry(g) {
    if (g.type === "Polygon") g.coordinates.forEach((ring) => tracePath(ring, true));
    else if (g.type === "MultiPolygon") g.coordinates.forEach((poly) => poly.forEach((ring) => tracePath(ring, true)));
    else if (g.type === "LineString") tracePath(g.coordinates, false);
    else if (g.type === "MultiLineString") g.coordinates.forEach((line) => tracePath(line, false));
  }

  function labelAt(text, x, y, colour) {
    ctx.font = "600 12px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.lineWidth = 4;
    ctx.strokeStyle = "rgba(255,255,255,0.92)";
    ctx.strokeText(text, x, y);
    ctx.fillStyle = colour || "#111";
    ctx.fillText(text, x, y);
  }

  function anchorOf(g) {
    if (g.type === "Point") return g.coordinates;
    let minLon = Infinity; let minLat = Infinity; let maxLon = -Infinity; let maxLat = -Infinity;
    const first = g.type === "Polygon" ? { type: "LineString", coordinates: g.coordinates[0] }
      : g.type === "MultiPolygon" ? { type: "LineString", coordinates: g.coordinates[0][0] } : g;
    eachPosition(first, (lon, lat) => {
      minLon = Math.min(minLon, lon); maxLon = Math.max(maxLon, lon);
      minLat = Math.min(minLat, lat); maxLat = Math.max(maxLat, lat);
    });
    if (g.type === "LineString") return g.coordinates[Math.floor(g.coordinates.length / 2)];
    return [(minLon + maxLon) / 2, (minLat + maxLat) / 2];
  }

  function drawTiles() {
    if (!state.tileUrl) return;
    const v = state.view; const w = canvas.clientWidth; const h = canvas.clientHeight;
    const z = Math.max(0, Math.min(19, Math.round(Math.log2(v.s / 256))));
    const n = 2 ** z; const size = v.s / n;
    const x0 = Math.floor((v.cx - w / 2 / v.s) * n); const x1 = Math.floor((v.cx + w / 2 / v.s) * n);
    const y0 = Math.max(0, Math.floor((v.cy - h / 2 / v.s) * n)); const y1 = Math.min(n - 1, Math.floor((v.cy + h / 2 / v.s) * n));
    if ((x1 - x0 + 1) * (y1 - y0 + 1) > 64) return;
    for (let tx = x0; tx <= x1; tx++) {
      for (let ty = y0; ty <= y1; ty++) {
        const wx = ((tx % n) + n) % n;
        const url = state.tileUrl.replace("{z}", z).replace("{x}", wx).replace("{y}", ty);
        let img = state.tiles.get(url);
        if (!img) {
          img = new Image();
          img.onload = () => redraw();
          img.src = url;
          state.tiles.set(url, img);
          if (state.tiles.size > 512) state.tiles.delete(state.tiles.keys().next().value);
        }
        if (img.complete && img.naturalWidth) {
          ctx.drawImage(img, (tx / n - v.cx) * v.s + w / 2, (ty / n - v.cy) * v.s + h / 2, size + 0.5, size + 0.5);
        }
      }
    }
  }

  function drawSiteMap() {
    for (const f of state.siteMap) {
      const g = f.geometry; const props = f.properties || {};
      const role = props.role || "";
      ctx.save();
      if (g.type === "Point" || g.type === "MultiPoint") {
        const points = g.type === "Point" ? [g.coordinates] : g.coordinates;
        for (const [lon, lat] of points) {
          const [x, y] = screen(lon, lat);
          ctx.fillStyle = "#333"; ctx.fillRect(x - 3, y - 3, 6, 6);
          if (props.name) labelAt(props.name, x, y - 10, "#333");
        }
        ctx.restore();
        continue;
      }
      ctx.beginPath();
      traceGeometry(g);
      if (role === "building") {
        ctx.fillStyle = "#d3d0c8"; ctx.fill("evenodd");
        ctx.strokeStyle = "#5e5a52"; ctx.lineWidth = 1.5; ctx.stroke();
      } else if (role === "outline" || role === "perimeter" || role === "site") {
        ctx.strokeStyle = "#2b2b2b"; ctx.lineWidth = 3; ctx.stroke();
      } else if (role === "track" || role === "path" || g.type.endsWith("LineString")) {
        ctx.setLineDash([6, 5]); ctx.strokeStyle = "#7d776b"; ctx.lineWidth = 1.5; ctx.stroke();
      } else {
        ctx.setLineDash([2, 4]); ctx.strokeStyle = "#6b665c"; ctx.lineWidth = 1; ctx.stroke();
      }
      ctx.restore();
      if (props.name && role === "building" && state.view.s > 2 ** 22) {
        const [lon, lat] = anchorOf(g);
        const [x, y] = screen(lon, lat);
        labelAt(props.name, x, y, "#3a362f");
      }
    }
  }

  function drawZones() {
    for (const z of state.zones) {
      const style = ZONE_STYLE[z.properties.kind] || ZONE_STYLE.other;
      const g = z.geometry;
      ctx.save();
      ctx.beginPath();
      let label = null; // where the name goes: above a circle, inside the top of a large area
      if (g.type === "Point") {
        const [x, y] = screen(g.coordinates[0], g.coordinates[1]);
        const r = Math.max(2, metres(z.properties.radius_m || 0, g.coordinates[1]));
        ctx.arc(x, y, r, 0, 2 * Math.PI);
        label = [x, y - r - 10];
      } else if (g.type === "LineString" && z.properties.buffer_m) {
        tracePath(g.coordinates, false);
        ctx.lineCap = "round"; ctx.lineJoin = "round";
        ctx.lineWidth = Math.max(2, 2 * metres(z.properties.buffer_m, g.coordinates[0][1]));
        ctx.strokeStyle = `${style.colour}44`;
        ctx.stroke();
        ctx.restore();
        const [lon, lat] = anchorOf(g);
        const [x, y] = screen(lon, lat);
        labelAt(`${z.properties.name} · ${style.word}`, x, y, style.colour);
        continue;
      } else {
        traceGeometry(g);
        let top = Infinity; let bottom = -Infinity; let left = Infinity; let right = -Infinity;
        eachPosition(g, (lon, lat) => {
          const [x, y] = screen(lon, lat);
          top = Math.min(top, y); bottom = Math.max(bottom, y);
          left = Math.min(left, x); right = Math.max(right, x);
        });
        if (bottom - top > 80) label = [(left + right) / 2, top + 16];
      }
      ctx.fillStyle = `${style.colour}1f`; ctx.fill("evenodd");
      const pat = pattern(style.pattern, style.colour);
      if (pat) { ctx.globalAlpha = 0.55; ctx.fillStyle = pat; ctx.fill("evenodd"); ctx.globalAlpha = 1; }
      ctx.strokeStyle = style.colour; ctx.lineWidth = 2.5;
      if (style.pattern === "none") ctx.setLineDash([10, 4]);
      ctx.stroke();
      ctx.restore();
      if (!label) {
        const [lon, lat] = anchorOf(g);
        label = screen(lon, lat);
      }
      labelAt(`${z.properties.name} · ${style.word}`, label[0], label[1], style.colour);
    }
  }

  function drawMarker(c, x, y, shape) {
    c.save();
    c.lineWidth = 2.5;
    c.beginPath();
    c.arc(x, y, 7, 0, 2 * Math.PI);
    if (shape === "online" || shape === "alert") {
      c.fillStyle = "#0b4f8a"; c.fill(); c.strokeStyle = "#fff"; c.stroke();
    } else {
      c.fillStyle = "#fff"; c.fill(); c.strokeStyle = "#333";
      if (shape === "unknown") c.setLineDash([3, 2]);
      c.stroke();
      if (shape === "offline") {
        c.beginPath(); c.moveTo(x - 4, y - 4); c.lineTo(x + 4, y + 4); c.moveTo(x + 4, y - 4); c.lineTo(x - 4, y + 4); c.stroke();
      }
    }
    if (shape === "alert") {
      c.beginPath(); c.arc(x, y, 9.5, 0, 2 * Math.PI);
      c.strokeStyle = "#b0201d"; c.lineWidth = 2.5; c.stroke();
    }
    c.restore();
  }

  function openAlertDevices() {
    const ids = new Set();
    for (const a of state.alerts.values()) if (!a.cleared_at) ids.add(a.device_id);
    return ids;
  }

  function drawDevices() {
    const alerting = openAlertDevices();
    for (const d of state.devices.values()) {
      if (!d.fix) continue;
      ctx.save();
      if (d.trail.length > 1) {
        ctx.beginPath(); tracePath(d.trail, false);
        ctx.strokeStyle = "rgba(11,79,138,0.55)"; ctx.lineWidth = 2; ctx.setLineDash([4, 3]); ctx.stroke();
        ctx.setLineDash([]);
      }
      const [x, y] = screen(d.fix.lon, d.fix.lat);
      const r = metres(d.fix.acc || 0, d.fix.lat);
      if (r > 3) {
        ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI);
        ctx.fillStyle = "rgba(11,79,138,0.12)"; ctx.fill();
        ctx.strokeStyle = "rgba(11,79,138,0.5)"; ctx.lineWidth = 1; ctx.stroke();
      }
      ctx.restore();
      const alert = alerting.has(d.id);
      drawMarker(ctx, x, y, alert ? "alert" : d.status);
      const parts = [d.id];
      if (d.batt !== null) parts.push(`${Math.round(d.batt)}%`);
      if (d.status !== "online") parts.push(d.status);
      if (alert) parts.push("ALERT");
      ctx.save();
      ctx.font = "600 12px system-ui, sans-serif";
      ctx.textAlign = "left"; ctx.textBaseline = "middle";
      ctx.lineWidth = 4; ctx.strokeStyle = "rgba(255,255,255,0.95)";
      ctx.strokeText(parts.join(" · "), x + 12, y);
      ctx.fillStyle = alert ? "#8a1010" : "#0d2a47";
      ctx.fillText(parts.join(" · "), x + 12, y);
      ctx.restore();
    }
  }

  function drawTrack() {
    const t = state.track;
    if (!t) return;
    ctx.save();
    ctx.beginPath(); tracePath(t.coords, false);
    ctx.strokeStyle = "#6a1b9a"; ctx.lineWidth = 2.5; ctx.setLineDash([8, 4]); ctx.stroke();
    ctx.setLineDash([]);
    const [lon, lat] = t.coords[state.trackIndex];
    const [x, y] = screen(lon, lat);
    const r = metres(t.acc[state.trackIndex] || 0, lat);
    ctx.beginPath(); ctx.arc(x, y, Math.max(r, 3), 0, 2 * Math.PI);
    ctx.fillStyle = "rgba(106,27,154,0.15)"; ctx.fill();
    ctx.beginPath(); ctx.rect(x - 6, y - 6, 12, 12);
    ctx.fillStyle = "#6a1b9a"; ctx.fill(); ctx.strokeStyle = "#fff"; ctx.lineWidth = 2; ctx.stroke();
    ctx.restore();
    labelAt(`${t.device} playback ${fmtTime(t.times[state.trackIndex])}`, x, y - 16, "#4a1070");
  }

  function drawScale() {
    const lat = (() => {
      const y = state.view.cy; const n = Math.PI - 2 * Math.PI * y;
      return 180 / Math.PI * Math.atan(0.5 * (Math.exp(n) - Math.exp(-n)));
    })();
    const perPx = EARTH * Math.cos(lat * Math.PI / 180) / state.view.s;
    const target = perPx * 120;
    const step = [1, 2, 5].flatMap((m) => [1, 10, 100, 1000, 10000, 100000].map((e) => m * e))
      .sort((a, b) => a - b).filter((v) => v <= target).pop() || 1;
    const px = step / perPx;
    const x = 12; const y = canvas.clientHeight - 14;
    ctx.save();
    ctx.fillStyle = "rgba(255,255,255,0.85)"; ctx.fillRect(x - 6, y - 18, px + 60, 26);
    ctx.strokeStyle = "#111"; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.moveTo(x, y - 5); ctx.lineTo(x, y); ctx.lineTo(x + px, y); ctx.lineTo(x + px, y - 5); ctx.stroke();
    ctx.fillStyle = "#111"; ctx.font = "12px system-ui, sans-serif";
    ctx.textAlign = "left"; ctx.textBaseline = "bottom";
    ctx.fillText(step >= 1000 ? `${step / 1000} km` : `${step} m`, x + px + 6, y + 2);
    ctx.restore();
  }

  function draw() {
    state.redrawPending = false;
    const w = canvas.clientWidth; const h = canvas.clientHeight;
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = "#eef0ea"; ctx.fillRect(0, 0, w, h);
    drawTiles();
    drawSiteMap();
    drawZones();
    drawTrack();
    drawDevices();
    drawScale();
  }

  function redraw() {
    if (state.redrawPending) return;
    state.redrawPending = true;
    requestAnimationFrame(draw);
  }

  // -- wiring ----------------------------------------------------------------------------

  let drag = null;
  canvas.addEventListener("pointerdown", (ev) => {
    drag = { x: ev.clientX, y: ev.clientY };
    canvas.setPointerCapture(ev.pointerId);
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    pan(ev.clientX - drag.x, ev.clientY - drag.y);
    drag = { x: ev.clientX, y: ev.clientY };
  });
  canvas.addEventListener("pointerup", () => { drag = null; });
  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const rect = canvas.getBoundingClientRect();
    zoom(ev.deltaY < 0 ? 1.25 : 0.8, ev.clientX - rect.left, ev.clientY - rect.top);
  }, { passive: false });
  canvas.addEventListener("keydown", (ev) => {
    const step = 60;
    const keys = {
      ArrowLeft: () => pan(step, 0), ArrowRight: () => pan(-step, 0),
      ArrowUp: () => pan(0, step), ArrowDown: () => pan(0, -step),
      "+": () => zoom(1.25), "=": () => zoom(1.25), "-": () => zoom(0.8), "0": () => fit(),
    };
    if (keys[ev.key]) { ev.preventDefault(); keys[ev.key](); }
  });
  $("zoom-in").addEventListener("click", () => zoom(1.25));
  $("zoom-out").addEventListener("click", () => zoom(0.8));
  $("zoom-fit").addEventListener("click", () => fit());
  $("pan-w").addEventListener("click", () => pan(80, 0));
  $("pan-e").addEventListener("click", () => pan(-80, 0));
  $("pan-n").addEventListener("click", () => pan(0, 80));
  $("pan-s").addEventListener("click", () => pan(0, -80));
  window.addEventListener("resize", resizeCanvas);

  $("login-form").addEventListener("submit", (ev) => { signIn(ev).catch((err) => { $("login-error").textContent = err.message; }); });
  $("logout").addEventListener("click", () => signOut("Signed out."));
  $("site-select").addEventListener("change", (ev) => loadSite(ev.target.value).catch(report));
  $("track-form").addEventListener("submit", loadTrack);
  $("track-play").addEventListener("click", togglePlay);
  $("track-close").addEventListener("click", () => { stopTrack(); redraw(); });
  $("track-slider").addEventListener("input", (ev) => showTrackIndex(Number(ev.target.value)));

  const now = new Date();
  $("track-until").value = localInput(now);
  $("track-since").value = localInput(new Date(now.getTime() - 3600 * 1000));

  if (state.token) start().catch((err) => signOut(`Could not start: ${err.message}`));
  else signOut("");
})();
