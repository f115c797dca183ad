// The bgagents dashboard: every task live, a task's output as it is
// written, stop and start. It reads the daemon's JSON API with the bearer
// token the user gives once (kept in this tab's sessionStorage).
//
// Guest output, task texts and agent names are untrusted: everything is
// put on the page with textContent, never parsed as HTML.
"use strict";

const TOKEN_KEY = "bgagents-token";
const LIST_DEBOUNCE_MS = 250;
const LIST_REFRESH_MS = 5000;
const OUTPUT_WAIT_SECS = 30;
// The tail keeps the last this many characters of a task's output.
const TAIL_CHARS = 1 << 20;

const state = {
  token: null,
  tasks: new Map(), // id -> task record
  rows: new Map(), // id -> {row, cells, shown}
  order: [], // ids as shown
  fetchedAt: 0,
  selected: null,
  tail: null, // the selected task's output reader: {id, stopped}
  listTimer: null,
  wanted: null, // the task the address asked to show
  live: false, // the event stream is connected
  streams: 0, // bumped to end the running event stream
  detailFor: null, // "id done" whose full view the detail shows
};

const $ = (id) => document.getElementById(id);

// The address's fragment may carry the token (`#token=…`) and a task to
// show (`#task=ID`); the token is taken off the address bar and out of
// the history at once.
function readFragment() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const given = fragment.get("token");
  if (given) sessionStorage.setItem(TOKEN_KEY, given);
  state.wanted = fragment.get("task");
  if (given) {
    const rest = state.wanted ? "#task=" + encodeURIComponent(state.wanted) : "";
    history.replaceState(null, "", location.pathname + location.search + rest);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + state.token }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
  if (response.status === 401) throw new Unauthorized("the token was refused");
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const failure = new Error(body.error || response.status + " " + response.statusText);
    failure.status = response.status;
    throw failure;
  }
  return body;
}

function showLogin(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.live = false;
  state.streams++;
  if (state.tail) state.tail.stopped = true;
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

function setConnection(text, ok) {
  const element = $("connection");
  element.textContent = text;
  element.classList.toggle("ok", ok);
}

// A passing problem (a list that failed, a refused stop) is shown until
// the next thing that works.
function showProblem(text) {
  setConnection(text, false);
}

function showHealthy() {
  if (state.live) setConnection("live", true);
}

// --- the task list ---------------------------------------------------------

function formatRuntime(seconds) {
  const total = Math.round(seconds);
  const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
  if (h) return h + "h" + m + "m" + s + "s";
  if (m) return m + "m" + s + "s";
  return s + "s";
}

function runtimeOf(task) {
  const ticking = task.status === "running" ? (Date.now() - state.fetchedAt) / 1000 : 0;
  return formatRuntime(task.runtime_secs + ticking);
}

async function refreshList() {
  state.listTimer = null;
  if (!state.token) return;
  try {
    const { tasks } = await api("/api/tasks");
    state.fetchedAt = Date.now();
    state.tasks = new Map(tasks.map((task) => [task.task_id, task]));
    renderList();
    if (state.selected) renderDetail();
    showHealthy();
  } catch (error) {
    if (error instanceof Unauthorized) showLogin(error.message);
    else showProblem("cannot list tasks: " + error.message);
  }
}

function scheduleList() {
  if (state.listTimer === null) state.listTimer = setTimeout(refreshList, LIST_DEBOUNCE_MS);
}

// Task ids are long: the list shows their start, the row's title all of it.
function shortId(id) {
  const bare = id.startsWith("agent_task_") ? id.slice("agent_task_".length) : id;
  return bare.length > 13 ? bare.slice(0, 13) + "…" : bare;
}

// Newest top-level tasks first; under each, its children in the order they
// were started.
function treeOrder() {
  const children = new Map();
  const roots = [];
  for (const task of state.tasks.values()) {
    if (task.parent && state.tasks.has(task.parent)) {
      if (!children.has(task.parent)) children.set(task.parent, []);
      children.get(task.parent).push(task.task_id);
    } else {
      roots.push(task.task_id);
    }
  }
  const order = [];
  const depth = new Map();
  const stack = roots.map((id) => [id, 0]);
  while (stack.length) {
    const [id, level] = stack.pop();
    order.push(id);
    depth.set(id, level);
    const kids = children.get(id) || [];
    for (let i = kids.length - 1; i >= 0; i--) stack.push([kids[i], level + 1]);
  }
  return { order, depth };
}

function matchesFilter(task) {
  if ($("hide-finished").checked && task.done) return false;
  const words = $("filter").value.trim().toLowerCase();
  if (!words) return true;
  const haystack = [task.task_id, task.agent, task.status, task.session || ""].join(" ").toLowerCase();
  return words.split(/\s+/).every((word) => haystack.includes(word));
}

function makeRow(id) {
  const row = document.createElement("tr");
  row.dataset.id = id;
  const cells = {};
  for (const name of ["id", "agent", "status", "runtime", "tokens", "session", "actions"]) {
    cells[name] = document.createElement("td");
    cells[name].className = name;
    row.appendChild(cells[name]);
  }
  const stop = document.createElement("button");
  stop.type = "button";
  stop.className = "stop";
  stop.textContent = "Stop";
  stop.addEventListener("click", (event) => {
    event.stopPropagation();
    stopTask(id);
  });
  cells.actions.appendChild(stop);
  cells.stop = stop;
  row.addEventListener("click", () => select(id));
  return { row, cells, shown: {} };
}

function setCell(entry, name, text) {
  if (entry.shown[name] !== text) {
    entry.shown[name] = text;
    entry.cells[name].textContent = text;
  }
}

function renderList() {
  const { order, depth } = treeOrder();
  const visible = order.filter((id) => matchesFilter(state.tasks.get(id)));
  const body = $("tasks").tBodies[0];
  for (const [id, entry] of state.rows) {
    if (!state.tasks.has(id)) {
      entry.row.remove();
      state.rows.delete(id);
    }
  }
  const counts = {};
  for (const task of state.tasks.values()) counts[task.status] = (counts[task.status] || 0) + 1;
  for (const id of visible) {
    const task = state.tasks.get(id);
    let entry = state.rows.get(id);
    if (!entry) {
      entry = makeRow(id);
      state.rows.set(id, entry);
    }
    entry.cells.id.style.paddingLeft = 0.5 + depth.get(id) * 1.25 + "em";
    setCell(entry, "id", (depth.get(id) ? "└ " : "") + shortId(id));
    entry.row.title = id;
    setCell(entry, "agent", task.agent);
    setCell(entry, "status", task.status);
    setCell(entry, "runtime", runtimeOf(task));
    setCell(entry, "tokens", task.tokens === undefined ? "" : String(task.tokens));
    setCell(entry, "session", task.session || "");
    entry.row.className = "status-" + task.status + (id === state.selected ? " selected" : "");
    entry.cells.stop.hidden = task.done;
  }
  // Rows move only when the order changed: a thousand rows stay cheap.
  const same = visible.length === state.order.length && visible.every((id, i) => id === state.order[i]);
  if (!same) {
    const shown = new Set(visible);
    for (const [id, entry] of state.rows) if (!shown.has(id)) entry.row.remove();
    for (const id of visible) body.appendChild(state.rows.get(id).row);
    state.order = visible;
  }
  $("empty").hidden = state.tasks.size > 0;
  $("counts").textContent = Object.entries(counts)
    .map(([status, count]) => count + " " + status)
    .join(" · ");
}

function tickRuntimes() {
  for (const id of state.order) {
    const task = state.tasks.get(id);
    if (task && task.status === "running") setCell(state.rows.get(id), "runtime", runtimeOf(task));
  }
  const selected = state.tasks.get(state.selected);
  if (selected && selected.status === "running") $("detail-status").textContent = statusLine(selected);
}

function statusLine(task) {
  const tokens = task.tokens === undefined ? "" : " · " + task.tokens + " tokens";
  return task.status + " · " + runtimeOf(task) + tokens;
}

// --- one task ------------------------------------------------------------------

function select(id) {
  if (state.selected === id) return;
  state.selected = id;
  for (const [rowId, entry] of state.rows) entry.row.classList.toggle("selected", rowId === id);
  $("detail").hidden = false;
  for (const field of ["detail-output", "detail-task", "detail-result", "detail-error"]) $(field).textContent = "";
  state.detailFor = null;
  renderDetail();
  followOutput(id);
}

async function renderDetail() {
  const id = state.selected;
  const task = state.tasks.get(id);
  $("detail-title").textContent = id + (task ? " · " + task.agent : "");
  $("detail-stop").hidden = !task || task.done;
  if (!task) {
    $("detail-status").textContent = "no longer kept (pruned)";
    return;
  }
  $("detail-status").textContent = statusLine(task);
  $("detail-parent").textContent = task.parent || "—";
  // The full view once while it runs (for its task text) and once done
  // (for its result), not on every refresh.
  const wanted = id + " " + task.done;
  if (state.detailFor !== wanted) {
    state.detailFor = wanted;
    try {
      const view = await api("/api/tasks/" + encodeURIComponent(id));
      if (state.selected !== id) return;
      $("detail-task").textContent = view.task;
      $("detail-result-row").hidden = view.result === null;
      $("detail-result").textContent = view.result || "";
      $("detail-error-row").hidden = view.error === null;
      $("detail-error").textContent = view.error || "";
    } catch (error) {
      state.detailFor = null;
      if (error instanceof Unauthorized) showLogin(error.message);
    }
  }
}

// Reads the task's output from where the last read ended, waiting for more,
// until the task is done or another task is selected.
async function followOutput(id) {
  if (state.tail) state.tail.stopped = true;
  const tail = { id, stopped: false };
  state.tail = tail;
  const element = $("detail-output");
  let offset = 0;
  while (!tail.stopped) {
    let read;
    try {
      read = await api(
        "/api/tasks/" + encodeURIComponent(id) + "/output?offset=" + offset + "&wait=" + OUTPUT_WAIT_SECS
      );
    } catch (error) {
      if (error instanceof Unauthorized) return showLogin(error.message);
      if (tail.stopped) return;
      if (error.status === 404) {
        element.textContent += "\n[this task is no longer kept]";
        return;
      }
      showProblem("output of " + id + ": " + error.message);
      await new Promise((resolve) => setTimeout(resolve, 2000));
      continue;
    }
    showHealthy();
    if (tail.stopped) return;
    if (read.output) {
      const atBottom = element.scrollTop + element.clientHeight >= element.scrollHeight - 4;
      let text = element.textContent + read.output;
      if (text.length > TAIL_CHARS) text = text.slice(text.length - TAIL_CHARS);
      element.textContent = text;
      if (atBottom) element.scrollTop = element.scrollHeight;
    }
    offset = read.next_offset;
    if (read.done) {
      if (read.truncated) element.textContent += "\n[output truncated at the agent's output limit]";
      return;
    }
  }
}

async function stopTask(id) {
  try {
    const stopped = await api("/api/tasks/" + encodeURIComponent(id) + "/stop", { method: "POST" });
    const task = state.tasks.get(id);
    if (task) Object.assign(task, stopped);
    renderList();
  } catch (error) {
    if (error instanceof Unauthorized) return showLogin(error.message);
    showProblem("stop " + id + ": " + error.message);
  }
  scheduleList();
}

// --- starting a task -------------------------------------------------------------

async function loadAgents() {
  const { agents } = await api("/api/agents");
  const select = $("start-agent");
  select.replaceChildren();
  for (const agent of agents) {
    const option = document.createElement("option");
    option.value = agent.name;
    option.textContent = agent.description ? agent.name + " — " + agent.description : agent.name;
    select.appendChild(option);
  }
}

async function startTask(event) {
  event.preventDefault();
  $("start-error").textContent = "";
  try {
    const started = await api("/api/tasks", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ agent: $("start-agent").value, task: $("start-task").value }),
    });
    $("start-task").value = "";
    state.tasks.set(started.task_id, started);
    renderList();
    select(started.task_id);
  } catch (error) {
    if (error instanceof Unauthorized) return showLogin(error.message);
    $("start-error").textContent = error.message;
  }
}

// --- live events -----------------------------------------------------------------

// Server-sent events read with fetch, which can send the token
// (EventSource cannot set headers).
async function followEvents() {
  const stream = ++state.streams;
  let delay = 500;
  while (state.token && stream === state.streams) {
    try {
      const response = await fetch("/api/events", {
        headers: { Authorization: "Bearer " + state.token },
        cache: "no-store",
      });
      if (response.status === 401) return showLogin("the token was refused");
      if (!response.ok) throw new Error(response.status + " " + response.statusText);
      state.live = true;
      setConnection("live", true);
      delay = 500;
      // Anything missed while disconnected.
      scheduleList();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        if (stream !== state.streams) {
          reader.cancel();
          return;
        }
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          onEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
      throw new Error("the daemon closed the stream");
    } catch (error) {
      state.live = false;
      if (stream !== state.streams) return;
      setConnection("reconnecting: " + error.message, false);
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }
}

function onEvent(block) {
  let name = "message";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
  }
  // Status changes change the list (output comes through the tail).
  if (name !== "output") scheduleList();
}

// --- start-up ----------------------------------------------------------------------

async function open() {
  $("login").hidden = true;
  $("main").hidden = false;
  try {
    await loadAgents();
  } catch (error) {
    if (error instanceof Unauthorized) return showLogin(error.message);
    setConnection("cannot read the agents: " + error.message, false);
  }
  await refreshList();
  const show = state.wanted && state.tasks.has(state.wanted) ? state.wanted : state.selected;
  if (show) {
    state.selected = null;
    select(show);
  }
  if (state.token) followEvents();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    $("token").value = "";
    open();
  });
  $("start-form").addEventListener("submit", startTask);
  $("detail-stop").addEventListener("click", () => state.selected && stopTask(state.selected));
  $("filter").addEventListener("input", renderList);
  $("hide-finished").addEventListener("change", renderList);
  setInterval(tickRuntimes, 1000);
  setInterval(scheduleList, LIST_REFRESH_MS);
  state.token = readFragment();
  if (state.token) open();
  else showLogin("");
  // A token pasted into the address of an open page.
  window.addEventListener("hashchange", () => {
    const before = state.token;
    const token = readFragment();
    if (token && token !== before) {
      state.token = token;
      open();
    } else if (state.wanted && state.tasks.has(state.wanted)) {
      select(state.wanted);
    }
  });
});
