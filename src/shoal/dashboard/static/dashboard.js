// shoal dashboard: three views drawn from server-sent events; no framework, no build step.
// Everything a site, a script or a user wrote (job names, log lines, metric names) is put into
// the page as text (textContent), never as HTML.
"use strict";

const state = { session: null, sources: [] };
const COLORS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0969da", "#57606a"];
const LOG_LINES_KEPT = 2000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "style") Object.assign(node.style, value); // CSSOM: allowed by the page's CSP
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

function showError(err) {
  const box = document.getElementById("error");
  box.replaceChildren();
  if (!err) {
    box.hidden = true;
    return;
  }
  box.append(el("b", { text: err.error_code || "ERROR" }), " ", err.message || "");
  if (err.hint) box.append(el("span", { class: "hint", text: err.hint }));
  box.dataset.code = err.error_code || "";
  box.hidden = false;
}

async function act(method, path) {
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: { "X-Shoal-CSRF": state.session.csrf },
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw body || { error_code: "HTTP " + response.status, message: response.statusText };
  return body;
}

function listen(path, handlers) {
  const source = new EventSource(path);
  const live = document.getElementById("live");
  // The dot says whether this view's stream is open (it reconnects by itself when it drops).
  source.onopen = () => live.classList.add("on");
  source.onerror = () => {
    if (source.readyState !== EventSource.OPEN) live.classList.remove("on");
  };
  for (const [event, handler] of Object.entries(handlers)) {
    source.addEventListener(event, (e) => handler(JSON.parse(e.data)));
  }
  source.addEventListener("end", () => source.close());
  state.sources.push(source);
  return source;
}

function badge(status) {
  return el("span", { class: "badge " + status, text: status });
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function roundText(progress) {
  if (!progress || progress.round === null || progress.round === undefined) return "";
  return progress.total_rounds ? `${progress.round} / ${progress.total_rounds}` : String(progress.round);
}

function progressBar(progress, status) {
  if (!progress || !progress.total_rounds) return status === "FINISHED_OK" ? el("span", { text: "done" }) : "";
  const done = Math.min(progress.rounds_done ?? (progress.stats || {}).rounds_done ?? 0, progress.total_rounds);
  const bar = el("span", { class: "bar" }, el("span", { style: { width: `${(100 * done) / progress.total_rounds}%` } }));
  return el("span", {}, bar, `${done}/${progress.total_rounds}`);
}

// An action on a job, as its button does it: the server decides whether the admin's role allows
// it, and its refusal (a catalogue error) is shown. window.shoal.action is the same function, so
// a forged call from the browser's console meets the same checks and shows the same error.
async function jobAction(jobId, name) {
  if ((name === "abort" || name === "delete") && !window.confirm(`${name} job ${jobId}?`)) return;
  try {
    if (name === "abort") await act("POST", `/api/jobs/${jobId}/abort`);
    if (name === "clone") {
      const made = await act("POST", `/api/jobs/${jobId}/clone`);
      location.hash = `#/job/${made.new_job_id}`;
    }
    if (name === "delete") {
      await act("DELETE", `/api/jobs/${jobId}`);
      location.hash = "#/jobs";
    }
    showError(null);
  } catch (err) {
    showError(err);
  }
}
window.shoal = { action: jobAction };

// --- views ---

function jobsView(view) {
  view.append(el("h1", { text: `Jobs of study '${state.session.study}'` }));
  const body = el("tbody");
  view.append(
    el(
      "table",
      { id: "jobs" },
      el("thead", {}, el("tr", {}, ...["Job", "Name", "Status", "Round", "Progress", "Duration", "Submitter", "Submitted"].map((h) => el("th", { text: h })))),
      body,
    ),
  );
  listen("/events/jobs", {
    update(jobs) {
      showError(null);
      body.replaceChildren(
        ...jobs.map((job) =>
          el(
            "tr",
            { "data-job": job.job_id },
            el("td", {}, el("a", { href: `#/job/${job.job_id}`, text: job.job_id.slice(0, 12) })),
            el("td", { text: job.job_name }),
            el("td", {}, badge(job.status)),
            el("td", { class: "num", text: roundText(job.progress) }),
            el("td", {}, progressBar(job.progress, job.status)),
            el("td", { class: "num", text: job.duration }),
            el("td", { text: `${job.submitter_name || ""} (${job.submitter_org || ""})` }),
            el("td", { text: when(job.submit_time) }),
          ),
        ),
      );
      if (!jobs.length) body.append(el("tr", {}, el("td", { colspan: "8", class: "muted", text: "no jobs yet" })));
    },
    failure: showError,
  });
}

function sitesView(view) {
  view.append(el("h1", { text: "Sites" }));
  const body = el("tbody");
  view.append(
    el(
      "table",
      { id: "sites" },
      el("thead", {}, el("tr", {}, ...["Site", "State", "Org", "Version", "Resources", "Jobs", "Last contact"].map((h) => el("th", { text: h })))),
      body,
    ),
  );
  listen("/events/sites", {
    update(sites) {
      showError(null);
      body.replaceChildren(
        ...sites.map((site) => {
          const resources = Object.entries(site.resources || {}).map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : v}`);
          const contact = site.connected ? `${new Date(site.last_contact * 1000).toLocaleTimeString()} (${site.idle_s} s ago)` : "";
          return el(
            "tr",
            { "data-site": site.name },
            el("td", { text: site.name }),
            el("td", {}, el("span", { class: "badge " + (site.connected ? "online" : "offline"), text: site.connected ? "online" : "offline" })),
            el("td", { text: site.org || "" }),
            el("td", { text: site.version || "" }),
            el("td", { text: resources.join(", ") }),
            el("td", {}, ...site.jobs.map((id) => el("a", { href: `#/job/${id}`, text: id.slice(0, 12) + " " }))),
            el("td", { text: contact }),
          );
        }),
      );
    },
    failure: showError,
  });
}

function jobView(view, jobId) {
  const title = el("h1", { text: `Job ${jobId}` });
  const facts = el("dl", { class: "facts", id: "facts" });
  const actions = el("div", { class: "actions", id: "actions" });
  const charts = el("div", { class: "charts", id: "charts" });
  const logs = el("div", { class: "logs", id: "logs" });
  view.append(title, facts, actions, el("h2", { text: "Metrics per round" }), charts, el("h2", { text: "Logs" }), logs);
  let rights = {};
  let meta = null;
  const logBlocks = {};

  function drawActions() {
    actions.replaceChildren();
    if (!meta) return;
    const terminal = !["SUBMITTED", "DISPATCHED", "RUNNING"].includes(meta.status);
    if (rights.manage_job && !terminal) {
      actions.append(el("button", { class: "danger", id: "abort", text: "Abort", onclick: () => jobAction(jobId, "abort") }));
    }
    if (rights.clone_job) actions.append(el("button", { id: "clone", text: "Clone", onclick: () => jobAction(jobId, "clone") }));
    if (rights.manage_job && meta.status !== "DISPATCHED" && meta.status !== "RUNNING") {
      actions.append(el("button", { class: "danger", id: "delete", text: "Delete", onclick: () => jobAction(jobId, "delete") }));
    }
    if (rights.download_job && terminal) {
      for (const [label, only] of [["result", ""], ["model", "model"], ["metrics", "metrics"], ["logs", "logs"]]) {
        const query = only ? `?only=${only}` : "";
        const href = `/api/jobs/${jobId}/download${query}`;
        actions.append(el("a", { class: "download", href, download: "", text: `⬇ ${label}` }));
      }
    }
  }

  function drawFacts() {
    const p = meta.progress || {};
    const rows = [
      ["Status", badge(meta.status)],
      ["Reason", meta.status_reason || ""],
      ["Round", roundText(p)],
      ["Progress", progressBar(p, meta.status)],
      ["Duration", meta.duration],
      ["Submitter", `${meta.submitter_name} (${meta.submitter_org}, ${meta.submitter_role})`],
      ["Submitted", when(meta.submit_time_iso)],
      ["Started", when(meta.start_time)],
      ["Ended", when(meta.end_time)],
    ];
    if (p.sites) rows.push(["Sites", Object.entries(p.sites).map(([s, v]) => `${s}: ${v}`).join(", ")]);
    if (meta.first_error) rows.push(["First error", JSON.stringify(meta.first_error)]);
    if (meta.notices) rows.push(["Notices", meta.notices.join("\n")]);
    facts.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
    facts.dataset.status = meta.status;
  }

  listen(`/events/jobs/${jobId}`, {
    rights(r) {
      rights = r;
      drawActions();
      if (!rights.view_logs) logs.replaceChildren(el("p", { class: "muted", text: "This role may not read this job's logs." }));
    },
    meta(m) {
      meta = m;
      title.textContent = `${m.job_name} `;
      title.append(el("span", { class: "muted", text: m.job_id }));
      drawFacts();
      drawActions();
    },
    series(s) {
      drawCharts(charts, s);
    },
    logs(pieces) {
      for (const [site, piece] of Object.entries(pieces)) {
        if (!logBlocks[site]) {
          const pre = el("pre", { "data-site": site });
          logBlocks[site] = pre;
          logs.append(el("details", { open: "" }, el("summary", { text: site }), pre));
        }
        const pre = logBlocks[site];
        const follow = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        const text = (piece.reset ? "" : pre.textContent) + piece.text;
        const lines = text.split("\n");
        pre.textContent = lines.slice(-LOG_LINES_KEPT).join("\n");
        if (follow) pre.scrollTop = pre.scrollHeight;
      }
    },
    logs_failure: showError,
    failure: showError,
  });
}

// --- curves: one SVG chart per metric, the global model and every site that logged it ---

function drawCharts(box, series) {
  const metrics = new Set(Object.keys(series.global || {}));
  for (const curves of Object.values(series.sites || {})) Object.keys(curves).forEach((m) => metrics.add(m));
  box.replaceChildren();
  if (!metrics.size) {
    box.append(el("p", { class: "muted", text: series.unavailable || "no metric logged yet" }));
    return;
  }
  const sites = Object.keys(series.sites || {}).sort();
  for (const metric of [...metrics].sort()) {
    const lines = [];
    if (series.global && series.global[metric]) lines.push(["global", series.global[metric]]);
    for (const site of sites) if (series.sites[site][metric]) lines.push([site, series.sites[site][metric]]);
    box.append(chart(metric, lines));
  }
}

function niceTicks(lo, hi, count) {
  const span = hi - lo || 1;
  const step0 = span / count;
  const power = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= step0);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step / 1e6; t += step) ticks.push(t);
  return ticks;
}

function chart(metric, lines) {
  const W = 420, H = 220, L = 52, R = 10, T = 10, B = 28;
  const points = lines.flatMap(([, pts]) => pts);
  const xs = points.map((p) => p[0] + 1), ys = points.map((p) => p[1]);
  let x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05;
  y0 -= pad; y1 += pad;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + ((y1 - y) / (y1 - y0)) * (H - T - B);
  const root = svg("svg", { class: "chart", "data-metric": metric, width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  for (const t of niceTicks(y0, y1, 4)) {
    root.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: sy(t), y2: sy(t) }));
    const label = svg("text", { x: L - 6, y: sy(t) + 3, "text-anchor": "end" });
    label.textContent = Number(t.toPrecision(4)).toString();
    root.append(label);
  }
  for (const t of niceTicks(x0, x1, 6).filter((t) => Number.isInteger(t))) {
    const label = svg("text", { x: sx(t), y: H - B + 14, "text-anchor": "middle" });
    label.textContent = String(t);
    root.append(label);
  }
  const axisLabel = svg("text", { x: W - R, y: H - 2, "text-anchor": "end" });
  axisLabel.textContent = "round";
  root.append(axisLabel);
  root.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
  root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  const legend = el("div", { class: "legend" });
  lines.forEach(([who, pts], i) => {
    const color = COLORS[i % COLORS.length];
    const group = svg("g", { class: "series", "data-who": who, "data-points": String(pts.length) });
    const path = pts.map((p) => `${sx(p[0] + 1).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    group.append(svg("polyline", { points: path, fill: "none", stroke: color, "stroke-width": who === "global" ? 2.5 : 1.5 }));
    for (const p of pts) {
      const dot = svg("circle", { cx: sx(p[0] + 1), cy: sy(p[1]), r: 2.5, fill: color });
      const tip = svg("title", {});
      tip.textContent = `${who} round ${p[0] + 1}: ${p[1]}`;
      dot.append(tip);
      group.append(dot);
    }
    root.append(group);
    legend.append(el("span", {}, el("i", { style: { background: color } }), who));
  });
  return el("div", { class: "chart-box" }, el("h3", { text: metric }), root, legend);
}

// --- routing ---

function route() {
  for (const source of state.sources) source.close();
  state.sources = [];
  document.getElementById("live").classList.remove("on");
  showError(null);
  const view = document.getElementById("view");
  view.replaceChildren();
  const hash = location.hash || "#/jobs";
  document.getElementById("nav-jobs").classList.toggle("active", hash.startsWith("#/job"));
  document.getElementById("nav-sites").classList.toggle("active", hash === "#/sites");
  const job = hash.match(/^#\/job\/(\d{1,20})$/);
  if (job) jobView(view, job[1]);
  else if (hash === "#/sites") sitesView(view);
  else jobsView(view);
}

async function start() {
  const response = await fetch("/api/session", { credentials: "same-origin" });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    showError(body);
    return;
  }
  state.session = body;
  const admin = body.admin;
  document.getElementById("who").textContent = `${admin.name} · ${admin.role} · ${body.project} · ${body.server}`;
  window.addEventListener("hashchange", route);
  route();
}

start();
