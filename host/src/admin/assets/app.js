// The symphony-host dashboard. Reads the JSON API every 2 s and renders
// with DOM nodes only: every value from Redis (keys, ids, errors) becomes
// a text node, never HTML.
"use strict";

const REFRESH_MS = 2000;
const state = {
  view: "overview",
  token: sessionStorage.getItem("symphony-token") || "",
  scheduled: { filter: {}, cursor: "", history: [] },
  dead: { filter: {} },
  confirm: null, // { what, until } for bulk actions awaiting a second click
  notice: null, // { text, bad }
};
let timer = null;
let generation = 0; // drops answers of a view left since

// ---- DOM helpers: text only -------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "onclick") node.addEventListener("click", v);
    else if (k === "onsubmit") node.addEventListener("submit", v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
function table(headers, rows, empty) {
  if (!rows.length) return el("p", { class: "muted" }, empty || "Nothing.");
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map(h =>
      el("th", { class: h.endsWith("#") ? "num" : "" }, h.replace(/#$/, ""))))),
    el("tbody", {}, rows));
}
function num(v) { return el("td", { class: "num" }, v); }
function when(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  const delta = Math.round((ms - Date.now()) / 1000);
  const rel = delta >= 0 ? `in ${delta} s` : `${-delta} s ago`;
  return `${d.toLocaleString()} (${rel})`;
}
function outcomeCell(o) {
  return el("td", { class: o === "ok" ? "outcome-ok" : "outcome-bad" }, o);
}

// ---- API ---------------------------------------------------------------
async function api(path, body) {
  const headers = {};
  if (state.token) headers["Authorization"] = `Bearer ${state.token}`;
  const init = { headers, cache: "no-store" };
  if (body !== undefined) {
    init.method = "POST";
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) {
    document.getElementById("login").hidden = false;
    throw new Error("the admin token is needed");
  }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || `${res.status} ${res.statusText}`);
  return data;
}
function setStatus(text, bad) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = bad ? "bad" : "";
}
async function act(path, body, done) {
  try {
    const r = await api(path, body);
    state.notice = { text: done(r), bad: false };
  } catch (e) {
    state.notice = { text: String(e.message || e), bad: true };
  }
  refresh();
}
function notice() {
  if (!state.notice) return null;
  return el("div", { class: state.notice.bad ? "notice bad" : "notice", id: "notice" }, state.notice.text);
}

// ---- Views: each has `controls` (built once) and `render` (every poll) --
const views = {};

function summaryRows(win) {
  const row = (label, s) => el("tr", {},
    el("td", {}, label), num(s.count), num(s.per_second),
    num(s.outcomes.ok || 0), num(s.count - (s.outcomes.ok || 0)),
    num(s.late_p50_ms), num(s.late_p99_ms), num(s.duration_p50_ms), num(s.duration_p99_ms));
  const rows = [row("all", win.total)];
  for (const [k, s] of Object.entries(win.plugins)) rows.push(row(`plugin ${k}`, s));
  for (const [k, s] of Object.entries(win.tenants)) rows.push(row(`tenant ${k}`, s));
  return rows;
}
const SUMMARY_HEAD = ["", "dispatches#", "per s#", "ok#", "failed#", "late p50 ms#",
  "late p99 ms#", "duration p50 ms#", "duration p99 ms#"];

views.overview = {
  path: () => "/api/overview",
  render(d) {
    const card = (n, label, id) => el("div", { class: "card", id }, el("b", {}, n), el("span", {}, label));
    return [
      el("div", { class: "cards" },
        card(d.pending, "scheduled (all hosts)", "card-pending"),
        card(d.claimed, "claimed (all hosts)", "card-claimed"),
        card(d.dead_letters, "dead letters", "card-dead"),
        card(d.retries, "retries pending", "card-retries"),
        card(d.fleet.per_second, `dispatches/s, ${d.fleet.hosts} host(s), last minute`, "card-fleet-rate"),
        card(d.fleet.minute_failed, "failed, all hosts, last minute", "card-fleet-failed"),
        card(d.host.running, "running on this host", "card-running"),
        card(d.generation, "plugin generation", "card-generation")),
      el("h2", {}, "Last minute (this host)"),
      table(SUMMARY_HEAD, summaryRows(d.minute)),
      el("h2", {}, "Last hour (this host)"),
      table(SUMMARY_HEAD, summaryRows(d.hour)),
    ];
  },
};

function filterForm(fields, values, onApply) {
  const inputs = fields.map(([name, label]) =>
    el("input", { name, value: values[name] || "", "aria-label": label, size: 14 }));
  const form = el("form", {
    class: "filters",
    onsubmit: (e) => {
      e.preventDefault();
      const f = {};
      for (const i of inputs) if (i.value.trim()) f[i.name] = i.value.trim();
      onApply(f);
    },
  }, fields.map(([, label], n) => el("label", {}, label, inputs[n])), el("button", { type: "submit" }, "Apply"));
  return form;
}
function query(obj) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(obj)) if (v !== undefined && v !== "") p.set(k, v);
  return p.toString();
}

views.scheduled = {
  path: () => `/api/triggers?${query({ ...state.scheduled.filter, after: state.scheduled.cursor, limit: 50 })}`,
  controls() {
    return filterForm([["tenant", "tenant"], ["action", "action"], ["id_prefix", "id prefix"]],
      state.scheduled.filter, (f) => {
        state.scheduled = { filter: f, cursor: "", history: [] };
        refresh();
      });
  },
  render(d) {
    const s = state.scheduled;
    const rows = d.items.map(t => el("tr", { "data-key": t.key },
      el("td", {}, when(t.due_ms)), el("td", {}, t.tenant), el("td", {}, t.action),
      el("td", { class: "mono" }, t.id), el("td", {}, t.retry ? "retry" : ""),
      el("td", {}, t.retry ? "" : el("button", {
        class: "danger", "data-act": "cancel",
        onclick: () => act("/api/triggers/cancel", { tenant: t.tenant, action: t.action, id: t.id },
          (r) => r.cancelled ? `Cancelled ${t.key}` : `${t.key} was no longer pending`),
      }, "Cancel"))));
    const pager = el("p", {},
      el("button", { disabled: !s.history.length, onclick: () => { s.cursor = s.history.pop() || ""; refresh(); } }, "Previous"), " ",
      el("button", { disabled: !d.next, onclick: () => { s.history.push(s.cursor); s.cursor = d.next; refresh(); } }, "Next"), " ",
      el("span", { class: "muted" }, `${d.items.length} shown, ${d.scanned} index entries read`));
    return [notice(), table(["due", "tenant", "action", "id", "", ""], rows,
      d.next ? "None in this stretch of the index: go on with Next." : "No scheduled triggers match."), pager];
  },
};

views["in-flight"] = {
  path: () => "/api/in-flight?limit=200",
  render(d) {
    const rows = d.items.map(c => el("tr", { "data-key": c.key },
      el("td", {}, c.tenant), el("td", {}, c.action), el("td", { class: "mono" }, c.id),
      el("td", {}, c.retry ? "retry" : ""), el("td", { class: "mono" }, c.host || "waiting for its due time or a slot"),
      el("td", {}, c.since_ms ? when(c.since_ms) : ""), el("td", {}, when(c.lease_end_ms))));
    return [el("p", { class: "muted" }, `${d.total} claimed firing(s) across all hosts`),
      table(["tenant", "action", "id", "", "host", "running since", "lease ends"], rows, "Nothing claimed.")];
  },
};

views.dispatches = {
  path: () => "/api/dispatches?limit=300",
  render(d) {
    const rows = d.items.map(x => el("tr", { "data-id": x.id },
      el("td", {}, new Date(x.at_ms).toLocaleTimeString()), el("td", {}, x.tenant), el("td", {}, x.action),
      el("td", { class: "mono" }, x.id), el("td", {}, x.plugin), num(x.attempt), outcomeCell(x.outcome),
      num((x.duration_us / 1000).toFixed(2)), x.late_us == null ? el("td", {}, "unknown") : num((x.late_us / 1000).toFixed(1)),
      el("td", { class: "err" }, x.error || "")));
    return table(["finished", "tenant", "action", "id", "plugin", "attempt#", "outcome",
      "ms#", "late ms#", "error"], rows, "No dispatch on this host yet.");
  },
};

function confirmButton(what, label, onYes) {
  const c = state.confirm;
  if (c && c.what === what && c.until > Date.now()) {
    return el("span", {}, `${label}: sure? `,
      el("button", { class: "danger", "data-act": `${what}-yes`, onclick: () => { state.confirm = null; onYes(); } }, "Yes"), " ",
      el("button", { onclick: () => { state.confirm = null; refresh(); } }, "No"));
  }
  return el("button", { class: "danger", "data-act": what, onclick: () => { state.confirm = { what, until: Date.now() + 10000 }; refresh(); } }, label);
}

views.dead = {
  path: () => `/api/dead?${query({ ...state.dead.filter, limit: 200 })}`,
  controls() {
    return filterForm([["tenant", "tenant"], ["action", "action"], ["key", "trigger key"]],
      state.dead.filter, (f) => { state.dead.filter = f; refresh(); });
  },
  render(d) {
    const f = state.dead.filter;
    const rows = d.items.map(l => el("tr", { "data-key": l.key },
      el("td", {}, when(l.failed_at_ms)), el("td", {}, l.tenant), el("td", {}, l.action),
      el("td", { class: "mono" }, l.id), num(l.attempts), el("td", {}, when(l.first_due_ms)),
      el("td", { class: "err" }, l.last_error),
      el("td", {}, el("button", {
        "data-act": "retry",
        onclick: () => act("/api/dead/retry", { key: l.key }, (r) => `Queued ${r.retried} again: ${l.key}`),
      }, "Retry"))));
    const bulk = el("p", {},
      confirmButton("retry-all", `Retry all ${d.total} matching`, () =>
        act("/api/dead/retry", f, (r) => `Queued ${r.retried} again`)), " ",
      confirmButton("purge", `Purge all ${d.total} matching`, () =>
        act("/api/dead/purge", f, (r) => `Purged ${r.purged}`)));
    const unreadable = d.unreadable ? el("p", { class: "notice bad" },
      `${d.unreadable} entr(y/ies) of the list are not dead letters (written by another client); purge removes them.`) : null;
    return [notice(), unreadable, d.total ? bulk : null,
      table(["failed", "tenant", "action", "id", "attempts#", "first due", "last error", ""], rows, "No dead letters.")];
  },
};

views.plugins = {
  path: () => "/api/plugins",
  controls() {
    return el("p", {}, el("button", {
      "data-act": "reload",
      onclick: () => act("/api/plugins/reload", {}, (r) => `Reloaded: generation ${r.generation}`),
    }, "Reload now"));
  },
  render(d) {
    const rows = d.plugins.map(p => el("tr", { "data-plugin": p.name },
      el("td", {}, p.name), el("td", { class: "mono" }, p.path), el("td", { class: "mono" }, p.version),
      el("td", {}, p.actions.join(", ")), el("td", {}, p.tenants.join(", ")),
      el("td", {}, Object.entries(p.capabilities).map(([k, v]) => `${k}:${v}`).join(" ")),
      el("td", { class: "mono" }, `timeout ${p.limits.timeout_ms} ms, memory ${p.limits.max_memory_bytes} B, ` +
        `instances ${p.limits.max_instances}, calls ${p.limits.max_host_calls}` + (p.limits.fuel ? `, fuel ${p.limits.fuel}` : ""))));
    return [notice(),
      el("p", {}, `Generation ${d.generation}.`),
      d.last_reload_error
        ? el("div", { class: "notice bad", id: "reload-error" }, `Last reload rejected (the plugins below keep serving): ${d.last_reload_error}`)
        : el("p", { class: "muted", id: "reload-ok" }, "The last reload (if any) succeeded."),
      table(["name", "path", "version", "actions", "tenants", "capabilities", "limits"], rows, "No plugins.")];
  },
};

views.hosts = {
  path: () => "/api/hosts",
  render(d) {
    const rows = d.hosts.map(h => el("tr", { "data-host": h.id },
      el("td", { class: "mono" }, h.id), el("td", {}, h.version), el("td", {}, when(h.started_ms)),
      num(Math.round((d.now_ms - h.started_ms) / 1000)), num(h.in_flight), num(h.minute_dispatches),
      num(h.minute_failed), el("td", {}, when(h.last_seen_ms)),
      el("td", { class: h.alive ? "outcome-ok" : "outcome-bad" }, h.alive ? "alive" : "gone"),
      el("td", { class: "mono" }, h.admin_url || "")));
    return table(["host", "version", "started", "uptime s#", "in flight#", "jobs last min#", "failed#",
      "last seen", "", "admin"], rows,
      "No host has written a heartbeat yet.");
  },
};

// ---- Routing and refresh ----------------------------------------------
let controls = null;
let body = null;
function show(view) {
  state.view = views[view] ? view : "overview";
  state.notice = null;
  state.confirm = null;
  generation++;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === state.view);
  const main = document.getElementById("view");
  main.replaceChildren();
  controls = el("div", { id: "controls" });
  body = el("div", { id: "data" });
  const v = views[state.view];
  if (v.controls) controls.append(v.controls());
  main.append(controls, body);
  refresh();
}
async function refresh() {
  clearTimeout(timer);
  const mine = generation;
  const v = views[state.view];
  try {
    const d = await api(v.path());
    if (mine !== generation) return;
    body.replaceChildren(...[v.render(d)].flat().filter(Boolean));
    document.getElementById("login").hidden = true;
    setStatus(`updated ${new Date().toLocaleTimeString()}`, false);
  } catch (e) {
    if (mine !== generation) return;
    setStatus(String(e.message || e), true);
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("token-save").addEventListener("click", () => {
    state.token = document.getElementById("token").value.trim();
    sessionStorage.setItem("symphony-token", state.token);
    refresh();
  });
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  show(location.hash.slice(1));
});
