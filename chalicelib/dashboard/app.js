// Punctual's dashboard: plain DOM, no framework. Every value reaches the page as text
// (textContent, setAttribute), never as markup.
"use strict";

(() => {
  const TOKEN_KEY = "punctual.token";
  // Webhook deliveries publish no WebSocket event: the counts, lists and chart are read again
  // this often, and soon after any event.
  const POLL_MS = 5000;
  const EVENT_REFRESH_MS = 500;
  const PING_MS = 4 * 60 * 1000; // the WebSocket closes after 10 idle minutes
  const LIST_LIMIT = 20;
  const WATCHED_KEPT = 200;
  const RECENT_KEPT = 20;
  const CONFIRM_MS = 10000; // longer than POLL_MS: a second click can come after a redraw
  const PRIORITIES = { 1: "LOW", 2: "NORMAL", 3: "HIGH", 4: "CRITICAL" };
  // The API's root: "/" locally, "/{stage}/" on API Gateway (the page is {root}dashboard).
  const ROOT = new URL(".", location.href);
  const WS_URL = document.documentElement.dataset.wsUrl || "";

  const $ = (id) => document.getElementById(id);
  let token = null;
  let socket = null;
  let timers = {};
  let refreshing = null;
  let refreshAgain = false;
  const agents = new Map(); // id -> {agent, schedule}
  let agentTotal = 0; // GET /api/agents's count: the page shows its first 100
  const runs = new Map(); // agentId -> {status, progress, message, error}
  const watched = new Set(); // message ids seen pending or replayed here, until they finish
  const recent = new Map(); // message id -> its GET /messages/{id}, newest last
  const confirming = new Map(); // message id -> until when its Cancel asks to be confirmed (ms)
  let lastPending = null; // the pending list last shown

  class Refused extends Error {}

  // -- DOM ------------------------------------------------------------------------------------

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  // A table cell; `label` is shown before the value in the phone layout.
  const td = (label, ...children) => el("td", { "data-label": label }, ...children);
  // A table row that is a note, not data: "No agents.", "Not available: …".
  const noteRow = (columns, text) => el("tr", {}, el("td", { colspan: columns, class: "muted", text }));
  const when = (iso) => el("time", { datetime: iso || undefined, title: iso || undefined, text: shortTime(iso) });

  function shortTime(iso) {
    if (!iso) return "—";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    const sameDay = date.toDateString() === new Date().toDateString();
    return sameDay ? date.toLocaleTimeString() : date.toLocaleString();
  }

  function notice(text, isError = false) {
    const node = $("notice");
    node.textContent = text || "";
    node.hidden = !text;
    node.classList.toggle("error", isError);
  }

  function setBadge(id, text, tone) {
    const node = $(id);
    node.textContent = text;
    node.dataset.tone = tone;
  }

  // -- API --------------------------------------------------------------------------------------

  async function api(method, path, body) {
    const headers = { Authorization: `Bearer ${token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(new URL(path, ROOT), {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) {
      signOut("Token refused: the API answered 401 (missing or invalid token). Enter the API token again.");
      throw new Refused("token refused");
    }
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const said = data && (data.detail || data.error);
      const error = new Error(said ? `${response.status}: ${said}` : `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  // An endpoint this deployment may not serve yet: null when it is not there.
  async function optional(method, path) {
    try {
      return await api(method, path);
    } catch (error) {
      if ([403, 404, 405].includes(error.status)) return null;
      throw error;
    }
  }

  const idPath = (...parts) => parts.map(encodeURIComponent).join("/");

  // -- sign in and out ------------------------------------------------------------------------

  async function signIn(candidate) {
    token = candidate;
    try {
      await api("GET", "api/agents/schedule/status");
    } catch (error) {
      if (!(error instanceof Refused)) loginError(`Cannot reach the API: ${error.message}`);
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $("login").hidden = true;
    $("board").hidden = false;
    $("sign-out").hidden = false;
    loginError("");
    connect();
    timers.poll = setInterval(refresh, POLL_MS);
    await refresh();
  }

  function signOut(reason) {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    Object.values(timers).forEach((t) => { clearInterval(t); clearTimeout(t); });
    timers = {};
    if (socket) { const s = socket; socket = null; s.close(); }
    setBadge("live-state", "live: off", "off");
    $("board").hidden = true;
    $("sign-out").hidden = true;
    $("login").hidden = false;
    loginError(reason || "");
  }

  function loginError(text) {
    $("login-error").textContent = text;
    $("login-error").hidden = !text;
  }

  // -- live events ----------------------------------------------------------------------------

  // A one-time connect ticket keeps the token out of URLs (and so out of access logs); a stack
  // without POST /api/ws-ticket takes the token itself.
  async function credential() {
    const issued = await optional("POST", "api/ws-ticket").catch(() => null);
    const ticket = issued && issued.data && issued.data.ticket;
    return ticket ? `ticket=${encodeURIComponent(ticket)}` : `token=${encodeURIComponent(token)}`;
  }

  async function connect(attempt = 0) {
    if (!WS_URL) { setBadge("live-state", "live: not configured", "off"); return; }
    const query = await credential();
    if (!token) return; // signed out meanwhile
    let ws;
    try {
      ws = new WebSocket(`${WS_URL}?${query}`);
    } catch (error) { // a data-ws-url that is not a WebSocket URL
      setBadge("live-state", "live: bad WebSocket URL", "bad");
      return;
    }
    ws.subscribed = new Set(); // agents asked for
    ws.confirmed = new Set(); // agents whose events now come
    socket = ws;
    setBadge("live-state", "live: connecting", "wait");
    ws.onopen = () => {
      attempt = 0;
      setBadge("live-state", "live", "ok");
      send(ws, { action: "subscribe-scheduler-updates" });
      subscribeAgents();
      timers.ping = setInterval(() => send(ws, { action: "ping" }), PING_MS);
    };
    ws.onmessage = (frame) => {
      try { onEvent(JSON.parse(frame.data)); } catch (error) { console.error(error); }
    };
    ws.onclose = () => {
      if (socket !== ws) return; // signed out, or replaced
      clearInterval(timers.ping);
      const delay = Math.min(30000, 1000 * 2 ** attempt);
      setBadge("live-state", "live: reconnecting", "wait");
      timers.reconnect = setTimeout(() => connect(attempt + 1), delay);
    };
  }

  function send(ws, frame) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
  }

  function subscribeAgents() {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    for (const id of agents.keys()) {
      if (!socket.subscribed.has(id)) {
        socket.subscribed.add(id);
        send(socket, { action: "subscribe-agent-updates", agentId: id });
      }
    }
  }

  function onEvent({ event, data }) {
    const agentId = data && data.agentId;
    const run = agentId ? runs.get(agentId) || { status: "running", progress: 0 } : null;
    switch (event) {
      case "scheduler:status": renderScheduler(data.stats); break;
      case "agent:started": runs.set(agentId, { status: "running", progress: 0 }); break;
      case "agent:progress":
        runs.set(agentId, { ...run, status: "running", progress: Number(data.progress) || 0,
          message: data.message, step: data.currentStep, steps: data.totalSteps });
        break;
      case "agent:completed": runs.set(agentId, { ...run, status: "completed", progress: 100 }); break;
      case "agent:failed": runs.set(agentId, { ...run, status: "failed", error: data.error }); break;
      case "agent:paused": case "agent:resumed": break;
      case "subscribed":
        if (agentId && socket) { socket.confirmed.add(agentId); renderAgents(); }
        return;
      case "error": notice(`Live events: ${data && data.error}`, true); return;
      default: return;
    }
    renderRuns();
    if (agentId) loadAgent(agentId).catch(report);
    clearTimeout(timers.soon);
    timers.soon = setTimeout(refresh, EVENT_REFRESH_MS);
  }

  // -- loading --------------------------------------------------------------------------------

  function report(error) {
    if (!(error instanceof Refused)) notice(`Could not load: ${error.message}`, true);
  }

  // One refresh at a time; one asked for meanwhile runs when it ends.
  function refresh() {
    if (!token) return Promise.resolve();
    if (refreshing) { refreshAgain = true; return refreshing; }
    refreshing = Promise.all([loadCounts(), loadScheduler(), loadAgents(), loadPending(), loadFailed()])
      .then(() => notice(""), report)
      .finally(() => {
        refreshing = null;
        if (refreshAgain) { refreshAgain = false; refresh(); }
      });
    return refreshing;
  }

  async function loadCounts() {
    const stats = await optional("GET", "stats");
    if (stats) {
      renderCounts(stats.messages);
      renderChart(stats.minutes);
      renderAgentRuns(stats.agentRuns);
      return;
    }
    const pending = await api("GET", "messages?limit=1");
    renderCounts({ pending: pending.count }, true);
    renderChart(null);
  }

  async function loadScheduler() {
    renderScheduler((await api("GET", "api/agents/schedule/status")).data);
  }

  async function loadAgents() {
    const listed = await api("GET", "api/agents?limit=100");
    const ids = new Set(listed.data.map((a) => a.id));
    for (const id of agents.keys()) if (!ids.has(id)) agents.delete(id);
    const fresh = [];
    for (const agent of listed.data) {
      const known = agents.get(agent.id);
      agents.set(agent.id, { ...known, agent });
      if (!known) fresh.push(loadAgent(agent.id));
      if (agent.status === "RUNNING" && !runs.has(agent.id)) fresh.push(loadRun(agent.id));
    }
    await Promise.all(fresh);
    agentTotal = listed.count;
    renderAgents();
    subscribeAgents();
  }

  // One agent's record and schedule (its priority and job id are only in the schedule).
  async function loadAgent(id) {
    const [agent, schedule] = await Promise.all([
      api("GET", `api/agents/${idPath(id)}`), api("GET", `api/agents/${idPath(id)}/schedule`),
    ]);
    agents.set(id, { agent: agent.data, schedule: schedule.data });
    renderAgents();
  }

  async function loadRun(agentId) {
    const latest = (await api("GET", `api/agents/${idPath(agentId)}/runs?limit=1`)).data[0];
    if (!latest || runs.has(agentId)) return;
    const progress = latest.progress || {};
    runs.set(agentId, { status: latest.status, progress: Number(progress.progress) || 0, message: progress.message });
    renderRuns();
  }

  async function loadPending() {
    const page = await api("GET", `messages?limit=${LIST_LIMIT}`);
    const pending = new Set(page.scheduledJobs.map((job) => job.messageId));
    pending.forEach((id) => watched.add(id));
    while (watched.size > WATCHED_KEPT) watched.delete(watched.values().next().value);
    // A watched message that left the pending list has finished (or was cancelled): show how.
    const finished = [...watched].filter((id) => !pending.has(id));
    await Promise.all(finished.map(loadFinished));
    renderPending(page);
    renderRecent();
  }

  async function loadFinished(id) {
    try {
      const message = await api("GET", `messages/${idPath(id)}`);
      if (!["delivered", "failed"].includes(message.status)) return; // off the first page only
      recent.delete(id);
      recent.set(id, message);
      while (recent.size > RECENT_KEPT) recent.delete(recent.keys().next().value);
    } catch (error) {
      if (error.status !== 404) throw error; // 404: cancelled or expired
    }
    watched.delete(id);
  }

  async function loadFailed() {
    const page = await optional("GET", `messages?status=failed&limit=${LIST_LIMIT}`);
    renderFailed(page && Array.isArray(page.failedMessages) ? page : null);
  }

  // -- actions --------------------------------------------------------------------------------

  // Runs an action from a button: the button is disabled meanwhile, and the outcome is told.
  async function act(button, what, action) {
    button.disabled = true;
    try {
      await action();
      notice(`${what}: done`);
    } catch (error) {
      if (!(error instanceof Refused)) notice(`${what}: ${error.message}`, true);
    } finally {
      button.disabled = false;
      refresh();
    }
  }

  function agentButtons(id, entry) {
    const jobId = entry.schedule && entry.schedule.taskDetails && entry.schedule.taskDetails.jobId;
    const paused = entry.agent.status === "PAUSED";
    const buttons = el("div", { class: "actions" });
    if (jobId && (paused || entry.agent.scheduleEnabled)) {
      const verb = paused ? "resume" : "pause";
      const button = el("button", { type: "button", "data-action": verb, text: paused ? "Resume" : "Pause" });
      button.addEventListener("click", () => act(button, `${verb} ${id}`, async () => {
        await api("PATCH", `api/agents/${idPath(id, "schedule", jobId, verb)}`);
        await loadAgent(id);
      }));
      buttons.append(button);
    }
    const run = el("button", { type: "button", "data-action": "run", text: "Run now" });
    run.addEventListener("click", () => act(run, `run ${id}`, () => api("POST", `api/agents/${idPath(id)}/run`)));
    buttons.append(run);
    return buttons;
  }

  // Cancelling forgets the message: the first click asks, a second within CONFIRM_MS cancels. Which
  // messages are asking is kept here, so a refresh that redraws the list keeps the question.
  function cancelButton(id) {
    const asking = (confirming.get(id) || 0) > Date.now();
    const button = el("button", { type: "button", class: "danger", "data-action": "cancel",
      "data-armed": asking, text: asking ? "Confirm cancel" : "Cancel" });
    button.addEventListener("click", () => {
      if ((confirming.get(id) || 0) > Date.now()) {
        confirming.delete(id);
        act(button, `cancel ${id}`, () => api("DELETE", `messages/${idPath(id)}`));
        return;
      }
      confirming.set(id, Date.now() + CONFIRM_MS);
      button.dataset.armed = "";
      button.textContent = "Confirm cancel";
      setTimeout(() => { confirming.delete(id); if (lastPending) renderPending(lastPending); }, CONFIRM_MS);
    });
    return button;
  }

  function replayButton(id) {
    const button = el("button", { type: "button", "data-action": "replay", text: "Replay" });
    button.addEventListener("click", () => act(button, `replay ${id}`, async () => {
      await api("POST", `messages/${idPath(id)}/replay`);
      watched.add(id);
      recent.delete(id);
    }));
    return button;
  }

  // -- rendering ------------------------------------------------------------------------------

  function tile(key, label, value) {
    return el("div", { class: "tile", id: `count-${key}` },
      el("span", { class: "value", text: value === undefined || value === null ? "—" : value }),
      el("span", { class: "label", text: label }));
  }

  function renderCounts(counts, partial = false) {
    const names = [["pending", "pending"], ["overdue", "overdue"], ["scheduled", "scheduled"], ["queued", "queued"],
      ["delivering", "delivering"], ["delivered", "delivered"], ["failed", "failed"]];
    const tiles = names.map(([key, label]) => tile(key, label, counts[key]));
    const note = "Other counts not available: this API serves no GET /stats.";
    if (partial) tiles.push(el("p", { class: "muted", text: note }));
    $("counts").replaceChildren(...tiles);
  }

  function renderScheduler(stats) {
    if (!stats) return;
    setBadge("scheduler-state", stats.isRunning ? "scheduler: running" : "scheduler: stopped",
      stats.isRunning ? "ok" : "bad");
    $("scheduler").replaceChildren(
      tile("running", "running", `${stats.runningAgentsCount} / ${stats.maxConcurrentAgents}`),
      tile("waiting", "waiting for a slot", stats.queuedTasksCount),
      tile("schedules", "schedules", stats.scheduledTasksCount),
      tile("paused", "paused", stats.pausedJobsCount));
  }

  function renderAgentRuns(outcomes) {
    const shown = Object.entries(outcomes || {}).map(([outcome, count]) => `${outcome} ${count}`);
    $("agent-runs").textContent = shown.length ? `Agent runs by outcome: ${shown.join(", ")}` : "";
  }

  function renderAgents() {
    const rows = [...agents.entries()].map(([id, entry]) => {
      const a = entry.agent;
      const details = entry.schedule && entry.schedule.taskDetails;
      const live = socket && socket.confirmed.has(id);
      return el("tr", { "data-agent-id": id, "data-live": live, title: live ? "live: its events arrive" : undefined },
        td("Agent", el("strong", { text: a.name || id }), el("div", { class: "muted", text: id })),
        td("Status", el("span", { class: "status", "data-status": a.status, text: a.status })),
        td("Priority", details ? PRIORITIES[details.priority] || String(details.priority) : "—"),
        td("Next run", when(a.nextRunAt)),
        td("Last run", when(a.lastRunAt)),
        td("", agentButtons(id, entry)));
    });
    if (!rows.length) rows.push(noteRow(6, "No agents."));
    if (agentTotal > agents.size) {
      rows.push(noteRow(6, `The first ${agents.size} of ${agentTotal} agents.`));
    }
    $("agents").tBodies[0].replaceChildren(...rows);
  }

  function renderRuns() {
    const items = [...runs.entries()].map(([agentId, run]) => {
      const name = (agents.get(agentId) && agents.get(agentId).agent.name) || agentId;
      const percent = Math.max(0, Math.min(100, Math.round(run.progress || 0)));
      const step = run.step ? ` (step ${run.step}${run.steps ? ` of ${run.steps}` : ""})` : "";
      const said = run.status === "failed" ? run.error : run.message;
      return el("li", { "data-agent-id": agentId, "data-status": run.status },
        el("div", { class: "run-head" }, el("strong", { text: name }),
          el("span", { class: "status", "data-status": run.status, text: run.status })),
        el("progress", { max: 100, value: percent, "aria-label": `${name} progress` }),
        el("span", { class: "percent", text: `${percent} %` }),
        el("div", { class: "muted", text: `${said || ""}${step}` }));
    });
    if (!items.length) items.push(el("li", { class: "muted", text: "No runs since this page opened." }));
    $("runs").replaceChildren(...items);
  }

  function renderPending(page) {
    lastPending = page;
    const rows = page.scheduledJobs.map((job) => el("tr", { "data-message-id": job.messageId },
      td("Message", el("span", { class: "id", text: job.messageId })),
      td("Due", when(job.nextRun)),
      td("", cancelButton(job.messageId))));
    if (!rows.length) rows.push(noteRow(3, "Nothing pending."));
    if (page.count > page.scheduledJobs.length) {
      rows.push(noteRow(3, `… and ${page.count - page.scheduledJobs.length} more`));
    }
    $("pending").tBodies[0].replaceChildren(...rows);
  }

  // One line of GET /messages/{id}'s attemptLog: "delivery #2 · 10:30:01 · 503 · 12 ms · … · next try 10:30:03".
  function attemptText(a) {
    const parts = [a.kind, a.attempt === undefined ? null : `#${a.attempt}`, a.startedAt && shortTime(a.startedAt),
      a.status, a.latencyMs === null || a.latencyMs === undefined ? null : `${a.latencyMs} ms`, a.error,
      a.nextRetryAt && `next try ${shortTime(a.nextRetryAt)}`];
    return parts.filter((part) => part !== null && part !== undefined && part !== "").join(" · ");
  }

  function attemptList(log) {
    if (!Array.isArray(log) || !log.length) return null;
    const items = log.map((entry) => el("li", { text: attemptText(entry) }));
    return el("details", {}, el("summary", { text: "attempts" }), el("ul", { class: "attempts" }, ...items));
  }

  function renderRecent() {
    const newestFirst = [...recent.values()].reverse();
    const rows = newestFirst.map((m) => el("tr", { "data-message-id": m.messageId, "data-status": m.status },
      td("Message", el("span", { class: "id", text: m.messageId })),
      td("Status", el("span", { class: "status", "data-status": m.status, text: m.status })),
      td("When", when(m.deliveredAt || m.failedAt)),
      td("Attempts", String(m.attempts ?? "—"), m.lastError ? el("div", { class: "muted", text: m.lastError }) : null,
        attemptList(m.attemptLog))));
    if (!rows.length) {
      rows.push(noteRow(4, "None yet: messages seen pending here appear when they finish."));
    }
    $("recent").tBodies[0].replaceChildren(...rows);
  }

  function renderFailed(page) {
    const body = $("failed").tBodies[0];
    if (!page) {
      body.replaceChildren(noteRow(6, "Not available: this API does not list failed messages."));
      return;
    }
    const rows = page.failedMessages.map((m) => el("tr", { "data-message-id": m.messageId },
      td("Message", el("span", { class: "id", text: m.messageId })),
      td("Webhook", el("span", { class: "id", text: m.webhookUrl })),
      td("Failed", when(m.failedAt)),
      td("Last error", m.lastError || "—"),
      td("Attempts", String(m.attempts ?? "—")),
      td("", replayButton(m.messageId))));
    if (!rows.length) rows.push(noteRow(6, "No failed messages."));
    body.replaceChildren(...rows);
  }

  // -- the chart: deliveries per minute (bars) and lateness (lines), inline SVG ---------------

  const SVG = "http://www.w3.org/2000/svg";
  const W = 600;
  const H = 120;

  function svg(tag, attrs = {}, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    node.append(...children);
    return node;
  }

  const title = (text) => svg("title", {}, text);

  function panel(label, max, ...marks) {
    return el("figure", {}, el("figcaption", { text: `${label} (max ${max})` }),
      svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": label },
        svg("line", { x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5, class: "axis" }), ...marks),
      el("div", { class: "axis-labels" }, el("span", { text: "−60 min" }), el("span", { text: "now" })));
  }

  function renderChart(minutes) {
    if (!Array.isArray(minutes)) {
      $("chart").replaceChildren(el("p", { class: "muted", text: "Not available: this API serves no GET /stats." }));
      return;
    }
    const step = W / Math.max(60, minutes.length);
    const most = Math.max(1, ...minutes.map((m) => (m.delivered || 0) + (m.failed || 0)));
    const bars = minutes.flatMap((m, i) => {
      const ok = ((m.delivered || 0) / most) * H;
      const bad = ((m.failed || 0) / most) * H;
      const tip = title(`${shortTime(m.minute)}: ${m.delivered || 0} delivered, ${m.failed || 0} failed, `
        + `${m.retried || 0} retried`);
      return [svg("rect", { x: i * step + 1, y: H - ok, width: step - 2, height: ok, class: "delivered" }, tip),
        svg("rect", { x: i * step + 1, y: H - ok - bad, width: step - 2, height: bad, class: "failed" })];
    });
    const slowest = Math.max(1, ...minutes.map((m) => m.latenessP99Ms || 0));
    const known = (m, key) => m[key] !== null && m[key] !== undefined;
    const y = (value) => H - (value / slowest) * H;
    // A line through the minutes that had deliveries, and a mark on each (one minute alone is no line).
    const line = (key, label) => {
      const points = minutes.map((m, i) => [m, i * step]).filter(([m]) => known(m, key));
      const path = points.map(([m, x]) => `${x + step / 2},${y(m[key])}`).join(" ");
      const marks = points.map(([m, x]) => svg("rect", { class: `mark ${key}`, x: x + 1, y: y(m[key]) - 1,
        width: step - 2, height: 2 }, title(`${shortTime(m.minute)}: ${label} ${m[key]} ms`)));
      return [svg("polyline", { class: key, points: path }), ...marks];
    };
    $("chart").replaceChildren(
      panel("Deliveries per minute (green delivered, red failed)", most, ...bars),
      panel("Lateness, ms (p50 solid, p99 dashed)", Math.round(slowest),
        ...line("latenessP50Ms", "lateness p50"), ...line("latenessP99Ms", "lateness p99")));
  }

  // -- start ----------------------------------------------------------------------------------

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    $("token").value = "";
    if (value) signIn(value);
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  renderRuns();
  renderRecent();
  const stored = sessionStorage.getItem(TOKEN_KEY);
  if (stored) signIn(stored);
})();
