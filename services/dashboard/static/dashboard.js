// The PACED dashboard page: charts (vendored Chart.js) over the JSON API, live via /api/stream.
// window.paced exposes the charts and counters so that the browser tests can read what is drawn.
"use strict";

const REFRESH_MS = 3000; // the charts that do not come with the stream are fetched this often
const COLORS = ["#3b6fd8", "#e8833a", "#1f9d55", "#a24bcf", "#d64545", "#2a9cb3", "#8a6d3b", "#5d6b82"];
const paced = { charts: {}, updates: 0, refreshes: 0, edges: [], problem: null };
window.paced = paced;

// A run of a dashboard over many runs is served under /runs/NAME/; its API is there too.
const BASE = (location.pathname.match(/^\/runs\/[^/]+/) || [""])[0];

const $ = (id) => document.getElementById(id);
const fmt = (x, digits = 2) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
const count = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);
const bucketLabels = (edges) => edges.slice(0, -1).map((e, i) => `${e.toFixed(2)}–${edges[i + 1].toFixed(2)}`);

function showError(message) {
  const el = $("error");
  el.hidden = !message;
  el.textContent = message || "";
}

function reportError(err) {
  // 503: the store is unreachable; the answer says so and that the run waits for it.
  showError(err.status === 503 ? err.message : `the dashboard API did not answer: ${err.message}`);
}

async function getJSON(path) {
  const res = await fetch(BASE + path, { headers: { Accept: "application/json" } });
  const body = await res.json().catch(() => ({ detail: res.statusText }));
  if (!res.ok) {
    const err = new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
    err.status = res.status;
    throw err;
  }
  return body;
}

// ---------------------------------------------------------------- charts

function chart(id, config) {
  paced.charts[id] = new Chart($(id), config);
  return paced.charts[id];
}

function lineDataset(label, color, yAxisID = "y", extra = {}) {
  return { label, data: [], borderColor: color, backgroundColor: color, pointRadius: 0, borderWidth: 1.5,
    spanGaps: true, yAxisID, ...extra };
}

function makeCharts() {
  Chart.defaults.animation = false;
  Chart.defaults.font.size = 11;
  Chart.defaults.maintainAspectRatio = false;
  const pAxis = { title: { display: true, text: "pass rate p̂" }, ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 11 } };
  chart("chart-histogram", {
    data: {
      labels: [],
      datasets: [
        { type: "bar", label: "problems", data: [], backgroundColor: "#9db6ea", yAxisID: "y", order: 2 },
        { type: "line", label: "w(p) at bucket centre", data: [], borderColor: "#d64545", backgroundColor: "#d64545",
          pointRadius: 0, borderWidth: 2, yAxisID: "w", order: 1 },
      ],
    },
    options: {
      scales: { x: pAxis, y: { beginAtZero: true, title: { display: true, text: "problems" } },
        w: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: true, text: "w(p)" } } },
      onClick: (_event, elements) => { if (elements.length) listBucket(elements[0].index).catch(reportError); },
    },
  });
  chart("chart-trained", {
    type: "bar",
    data: { labels: [], datasets: [
      { label: "trained on", data: [], backgroundColor: "#3b6fd8" },
      { label: "pool", data: [], backgroundColor: "#c7cfdd" },
    ] },
    options: { scales: { x: pAxis, y: { beginAtZero: true, title: { display: true, text: "share" } } } },
  });
  chart("chart-loss-bucket", {
    type: "bar",
    data: { labels: [], datasets: [{ label: "mean per-sequence loss", data: [], backgroundColor: "#e8833a" }] },
    options: { scales: { x: pAxis, y: { beginAtZero: true, title: { display: true, text: "loss" } } } },
  });
  chart("chart-groups", {
    type: "line",
    data: { labels: [], datasets: [] },
    options: { scales: { x: pAxis, y: { beginAtZero: true, title: { display: true, text: "share of the group" } } } },
  });
  const stepAxis = { type: "linear", title: { display: true, text: "learner step" } };
  chart("chart-loss", {
    type: "line",
    data: { datasets: [
      lineDataset("loss", "#3b6fd8"),
      lineDataset("held-out accuracy", "#1f9d55", "acc", { pointRadius: 3 }),
    ] },
    options: { parsing: false, scales: { x: stepAxis, y: { title: { display: true, text: "loss" } },
      acc: { position: "right", min: 0, max: 1, grid: { drawOnChartArea: false }, title: { display: true, text: "accuracy" } } } },
  });
  chart("chart-throughput", {
    type: "line",
    data: { datasets: [lineDataset("learner tokens/s", "#3b6fd8"), lineDataset("rollout tokens/s", "#e8833a")] },
    options: { parsing: false, scales: { x: stepAxis, y: { beginAtZero: true, title: { display: true, text: "tokens/s" } } } },
  });
  chart("chart-idle", {
    type: "line",
    data: { datasets: [
      lineDataset("learner idle", "#3b6fd8"), lineDataset("rollout idle", "#e8833a"),
      lineDataset("staleness (versions)", "#a24bcf", "stale"),
    ] },
    options: { parsing: false, scales: { x: stepAxis, y: { min: 0, max: 1, title: { display: true, text: "idle fraction" } },
      stale: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: true, text: "staleness" } } } },
  });
  chart("chart-problem", {
    type: "line",
    data: { datasets: [lineDataset("p̂ over the window", "#3b6fd8", "y", {
      pointRadius: 4, pointBackgroundColor: [], pointBorderColor: [] })] },
    options: { parsing: false, plugins: { legend: { display: false } },
      scales: { x: { type: "linear", title: { display: true, text: "outcome (oldest first)" }, ticks: { stepSize: 1 } },
        y: { min: 0, max: 1, title: { display: true, text: "p̂" } } } },
  });
}

function points(xs, ys) {
  const out = [];
  xs.forEach((x, i) => { if (ys[i] !== null && ys[i] !== undefined) out.push({ x, y: ys[i] }); });
  return out;
}

// ---------------------------------------------------------------- heatmap

const RAMP = [[13, 8, 135], [84, 2, 163], [139, 10, 165], [185, 50, 137], [219, 92, 104], [244, 136, 73], [254, 188, 43], [240, 249, 33]];

const UNREACHABLE = "#f2f4f7";

function rampColor(t) {
  const x = Math.max(0, Math.min(1, t)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x));
  const f = x - i;
  const c = RAMP[i].map((v, k) => Math.round(v + f * (RAMP[i + 1][k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function drawHeatmap(history) {
  const canvas = $("heatmap");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const left = 44, bottom = 22, top = 4, right = 8;
  const w = width - left - right, h = height - top - bottom;
  const cols = history.counts.length, rows = history.edges.length - 1;
  ctx.fillStyle = "#667085";
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "right";
  for (const p of [0, 0.25, 0.5, 0.75, 1]) ctx.fillText(p.toFixed(2), left - 6, top + h * (1 - p) + 4);
  if (!cols) {
    ctx.textAlign = "left";
    ctx.fillText("no snapshot yet", left + 8, top + h / 2);
    return;
  }
  let max = 0;
  const shares = history.counts.map((counts, j) => counts.map((c) => {
    const s = history.seen[j] ? c / history.seen[j] : 0;
    max = Math.max(max, s);
    return s;
  }));
  const cw = w / cols, rh = h / rows;
  // A bucket no estimate of this run can fall in (window and prior) is not data: drawn blank, not as 0.
  const reachable = history.reachable || [];
  shares.forEach((col, j) => col.forEach((s, i) => {
    ctx.fillStyle = reachable[i] === false ? UNREACHABLE : rampColor(max ? Math.sqrt(s / max) : 0);
    ctx.fillRect(left + j * cw, top + (rows - 1 - i) * rh, Math.ceil(cw), Math.ceil(rh));
  }));
  ctx.fillStyle = "#667085";
  ctx.textAlign = "left";
  ctx.fillText(`step ${history.steps[0]}`, left, height - 6);
  ctx.textAlign = "right";
  ctx.fillText(`step ${history.steps[cols - 1]}`, left + w, height - 6);
  paced.heatmapColumns = cols;
}

// ---------------------------------------------------------------- live summary

function applySummary(s) {
  $("run-name").textContent = s.run_name;
  document.title = `PACED · ${s.run_name}`;
  $("stat-step").textContent = s.step === null ? "–" : `${s.step}${s.steps_total ? ` / ${s.steps_total}` : ""}`;
  $("stat-seen").textContent = `${s.seen}${s.pool ? ` / ${s.pool}` : ""}`;
  $("stat-mass").textContent = `${fmt(s.mass, 1)}${s.mean_w === null ? "" : ` (mean ${fmt(s.mean_w, 3)})`}`;
  $("stat-accuracy").textContent = pct(s.accuracy);
  $("stat-workers").textContent = `${s.workers}${s.desired_rollout === null ? "" : ` (want ${s.desired_rollout})`}`;
  $("stat-queue").textContent = `${s.queue.undelivered + s.queue.pending}`;
  $("stat-paused").textContent = s.paused ? "paused" : "running";
  showError(s.error ? `the dashboard cannot read the store: ${s.error}` : "");
  const hist = paced.charts["chart-histogram"];
  hist.data.datasets[0].data = s.counts;
  hist.update();
  paced.seen = s.seen;
}

function connectStream() {
  const source = new EventSource(`${BASE}/api/stream`);
  source.addEventListener("summary", (event) => {
    applySummary(JSON.parse(event.data));
    paced.updates += 1;
    document.body.dataset.updates = String(paced.updates);
    $("live").className = "live on";
    $("live").textContent = "live";
  });
  source.onerror = () => {
    $("live").className = "live off";
    $("live").textContent = "reconnecting…";
  };
  paced.stream = source;
}

// ---------------------------------------------------------------- periodic refresh

async function refreshHistogram() {
  const h = await getJSON("/api/histogram");
  paced.edges = h.edges;
  const c = paced.charts["chart-histogram"];
  c.data.labels = bucketLabels(h.edges);
  c.data.datasets[0].data = h.counts;
  c.data.datasets[1].data = h.weights;
  c.data.datasets[1].label = `w(p) = ${h.kernel.formula}`;
  c.update();
  $("hist-note").textContent = `${h.seen} problems seen · Σw(p̂) = ${fmt(h.mass, 1)} · kernel ${h.kernel.type} ${h.kernel.formula}`;
}

async function refreshTrained() {
  const t = await getJSON("/api/trained");
  const labels = bucketLabels(t.edges);
  const c = paced.charts["chart-trained"];
  c.data.labels = labels;
  c.data.datasets[0].data = t.trained_fraction;
  c.data.datasets[1].data = t.pool_fraction;
  c.update();
  $("trained-note").textContent = t.window_steps
    ? `${t.first_step === t.last_step ? `step ${t.first_step}` : `steps ${t.first_step}–${t.last_step}`}, `
      + count(t.sequences, "sequence") : "no step yet";
  const l = paced.charts["chart-loss-bucket"];
  l.data.labels = labels;
  l.data.datasets[0].data = t.loss_mean;
  l.data.datasets[0].label = `mean per-sequence ${t.loss_kinds.join(", ") || "loss"}`;
  l.update();
  $("loss-note").textContent = t.window_steps ? `last ${count(t.window_steps, "step")}` : "";
}

async function refreshGroups() {
  const g = await getJSON("/api/groups");
  const c = paced.charts["chart-groups"];
  c.data.labels = bucketLabels(g.edges);
  c.data.datasets = g.groups.map((group, i) => lineDataset(
    `${group.name} (mean ${fmt(group.mean_p)}, ${group.seen})`, COLORS[i % COLORS.length], "y",
    { data: group.counts.map((n) => (group.seen ? n / group.seen : 0)), pointRadius: 2 }));
  c.update();
}

async function refreshSeries() {
  const s = await getJSON("/api/series?max_points=600");
  const set = (id, ...series) => {
    const c = paced.charts[id];
    series.forEach((data, i) => { c.data.datasets[i].data = data; });
    c.update();
  };
  const evals = s.evals.filter((e) => e.step !== null && e.accuracy !== null);
  set("chart-loss", points(s.step, s.loss), evals.map((e) => ({ x: e.step, y: e.accuracy })));
  set("chart-throughput", points(s.step, s.learner_tokens_per_s), points(s.step, s.rollout_tokens_per_s));
  set("chart-idle", points(s.step, s.learner_idle), points(s.step, s.rollout_idle), points(s.step, s.staleness));
}

async function refreshHistory() {
  const history = await getJSON("/api/histogram/history?max_points=400");
  drawHeatmap(history);
  const blank = (history.reachable || []).filter((r) => !r).length;
  $("heatmap-note").textContent = history.steps.length
    ? count(history.steps.length, "step") + (blank ? `; ${count(blank, "blank row")}: no estimate can fall there` : "")
    : "";
}

async function refreshWorkers() {
  const w = await getJSON("/api/workers");
  const body = $("workers").querySelector("tbody");
  body.replaceChildren(...w.workers.map((worker) => {
    const tr = document.createElement("tr");
    const cells = [worker.id, worker.version ?? "–", worker.state ?? "–", fmt(worker.tokens_per_s, 0),
      worker.age_s === null ? "–" : `${fmt(worker.age_s, 1)} s ago`];
    for (const value of cells) {
      const td = document.createElement("td");
      td.textContent = String(value);
      tr.appendChild(td);
    }
    return tr;
  }));
  $("workers-note").textContent = `${w.workers.length} reporting, desired ${w.desired_rollout ?? "–"}`;
  const input = $("scale-n");
  if (document.activeElement !== input && w.desired_rollout !== null) input.placeholder = String(w.desired_rollout);
  paced.desired = w.desired_rollout;
}

async function refreshAll() {
  const parts = [refreshHistogram, refreshTrained, refreshGroups, refreshSeries, refreshHistory, refreshWorkers];
  const results = await Promise.allSettled(parts.map((f) => f()));
  const failed = results.find((r) => r.status === "rejected");
  if (failed) reportError(failed.reason);
  paced.refreshes += 1;
  document.body.dataset.refreshes = String(paced.refreshes);
}

// ---------------------------------------------------------------- control

async function control(path, body) {
  const msg = $("control-msg");
  const token = $("token").value.trim();
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(BASE + path, { method: "POST", headers, body: JSON.stringify(body ?? {}) });
  const data = await res.json().catch(() => ({ detail: res.statusText }));
  if (res.ok) {
    msg.className = "msg good";
    msg.textContent = `desired rollout replicas ${data.desired_rollout ?? "–"}, sampling ${data.paused ? "paused" : "running"}`;
    refreshWorkers().catch(reportError);
  } else {
    msg.className = "msg bad";
    const detail = Array.isArray(data.detail) ? data.detail.map((d) => `${d.loc.slice(1).join(".")}: ${d.msg}`).join("; ") : data.detail;
    msg.textContent = `refused (${res.status}): ${detail}`;
  }
}

function wireControl() {
  $("control").addEventListener("submit", (event) => {
    event.preventDefault();
    const raw = $("scale-n").value;
    if (raw === "") {
      $("control-msg").className = "msg bad";
      $("control-msg").textContent = "enter the number of rollout replicas first";
      return;
    }
    control("/api/control/scale", { rollout: Number(raw) }).catch(reportError);
  });
  $("pause").addEventListener("click", () => control("/api/control/pause").catch(reportError));
  $("resume").addEventListener("click", () => control("/api/control/resume").catch(reportError));
}

// ---------------------------------------------------------------- problem view

async function showProblem(id) {
  const msg = $("problem-msg");
  $("problem-id").value = id;
  try {
    const p = await getJSON(`/api/problems/${encodeURIComponent(id)}`);
    paced.problem = p;
    msg.textContent = "";
    $("problem").hidden = false;
    $("problem-summary").textContent =
      `${p.problem_id}: p̂ = ${fmt(p.p_hat, 3)} from ${p.correct}/${p.n} correct in the window ` +
      `(${p.recorded} recorded, newest version ${p.version}${p.frozen ? ", frozen" : ""})`;
    const c = paced.charts["chart-problem"];
    const ds = c.data.datasets[0];
    ds.data = p.outcomes.map((o, i) => ({ x: i + 1, y: o.p_hat }));
    ds.pointBackgroundColor = p.outcomes.map((o) => (o.correct ? "#1f9d55" : "#d64545"));
    ds.pointBorderColor = ds.pointBackgroundColor;
    c.update();
    const body = $("rollouts").querySelector("tbody");
    body.replaceChildren(...p.rollouts.map((r) => {
      const tr = document.createElement("tr");
      const cells = [[r.version, "num"], [r.correct ? "correct" : `wrong (${r.reason})`, r.correct ? "ok" : "wrong"],
        [r.extracted ?? "–", "text"], [r.text, "text"], [r.worker_id, ""]];
      for (const [value, cls] of cells) {
        const td = document.createElement("td");
        td.textContent = String(value);
        if (cls) td.className = cls;
        tr.appendChild(td);
      }
      return tr;
    }));
    history.replaceState(null, "", `#problem=${encodeURIComponent(id)}`);
  } catch (err) {
    $("problem").hidden = true;
    paced.problem = null;
    msg.className = "msg bad";
    msg.textContent = err.status === 404 ? `no problem ${id} in this run (no outcome recorded)` : err.message;
  }
}

async function listBucket(bucket, tries = 0) {
  const list = $("bucket-list");
  const data = await getJSON(`/api/problems?bucket=${bucket}&limit=40`);
  const range = paced.edges.length ? `${paced.edges[bucket].toFixed(2)}–${paced.edges[bucket + 1].toFixed(2)}` : bucket;
  if (data.indexed_at === null) {
    list.textContent = `indexing problems with p̂ in ${range}…`;
    if (tries < 20) setTimeout(() => listBucket(bucket, tries + 1).catch(reportError), 1000);
    return;
  }
  const label = document.createElement("span");
  label.textContent = `p̂ in ${range} (most recently sampled):`;
  list.replaceChildren(label, ...data.problems.map((p) => {
    const a = document.createElement("a");
    a.textContent = p.id;
    a.title = `p̂ ${fmt(p.p_hat, 3)}, n ${p.n}, version ${p.version}`;
    a.addEventListener("click", () => showProblem(p.id).catch(reportError));
    return a;
  }));
  if (!data.problems.length) label.textContent = `no problem with p̂ in ${range}`;
}

function wireProblem() {
  $("problem-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("problem-id").value.trim();
    if (id) showProblem(id).catch(reportError);
  });
  const match = location.hash.match(/^#problem=(.+)$/);
  if (match) showProblem(decodeURIComponent(match[1])).catch(reportError);
}

// ---------------------------------------------------------------- start

async function start() {
  makeCharts();
  wireControl();
  wireProblem();
  try {
    const run = await getJSON("/api/run");
    $("run-name").textContent = run.run_name;
    $("all-runs").hidden = !BASE;
    if (run.finished) {
      $("control-msg").textContent = run.finished;
      for (const id of ["scale", "pause", "resume"]) $(id).disabled = true;
    } else if (!run.control_enabled) {
      $("control-msg").textContent = "control is off: start the dashboard with PACED_DASHBOARD_TOKEN set";
    }
  } catch (err) {
    reportError(err);
  }
  connectStream();
  await refreshAll();
  setInterval(refreshAll, REFRESH_MS);
  window.addEventListener("resize", () => refreshHistory().catch(reportError));
}

document.addEventListener("DOMContentLoaded", start);
