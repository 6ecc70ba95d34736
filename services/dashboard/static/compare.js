// Runs side by side (/api/compare?run=A&run=B): held-out accuracy and loss per step, and the pass-rate
// histograms, one colour per run. window.paced exposes the charts for the browser tests.
"use strict";

const REFRESH_MS = 3000;
const COLORS = ["#3b6fd8", "#e8833a", "#1f9d55", "#a24bcf", "#d64545", "#2a9cb3", "#8a6d3b", "#5d6b82"];
const paced = { charts: {}, refreshes: 0, compared: null };
window.paced = paced;

const $ = (id) => document.getElementById(id);
const names = new URLSearchParams(location.search).getAll("run");

function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message || "";
}

function makeCharts() {
  Chart.defaults.animation = false;
  Chart.defaults.font.size = 11;
  Chart.defaults.maintainAspectRatio = false;
  const stepAxis = { type: "linear", title: { display: true, text: "learner step" } };
  paced.charts.accuracy = new Chart($("chart-accuracy"), {
    type: "line", data: { datasets: [] },
    options: { parsing: false, scales: { x: stepAxis, y: { min: 0, max: 1, title: { display: true, text: "accuracy" } } } },
  });
  paced.charts.loss = new Chart($("chart-loss"), {
    type: "line", data: { datasets: [] },
    options: { parsing: false, scales: { x: stepAxis, y: { title: { display: true, text: "loss" } } } },
  });
  paced.charts.histogram = new Chart($("chart-histogram"), {
    type: "bar", data: { labels: [], datasets: [] },
    options: { scales: { x: { title: { display: true, text: "pass rate p̂" } },
      y: { beginAtZero: true, title: { display: true, text: "share of the run's problems" } } } },
  });
}

function line(label, color, data) {
  return { label, data, borderColor: color, backgroundColor: color, borderWidth: 1.5, pointRadius: 2, spanGaps: true };
}

async function refresh() {
  try {
    const query = names.map((n) => `run=${encodeURIComponent(n)}`).join("&");
    const res = await fetch(`/api/compare?${query}`, { headers: { Accept: "application/json" } });
    const body = await res.json().catch(() => ({ detail: res.statusText }));
    if (!res.ok) throw new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
    paced.compared = body;
    const color = (i) => COLORS[i % COLORS.length];
    const label = (run) => `${run.name} (${run.kernel.type} ${run.kernel.formula})`;
    paced.charts.accuracy.data.datasets = body.runs.map((run, i) => line(label(run), color(i),
      run.evals.filter((e) => e.step !== null && e.accuracy !== null).map((e) => ({ x: e.step, y: e.accuracy }))));
    paced.charts.loss.data.datasets = body.runs.map((run, i) => line(label(run), color(i),
      run.step.map((s, k) => ({ x: s, y: run.loss[k] })).filter((p) => p.y !== null)));
    const hist = paced.charts.histogram;
    hist.data.labels = body.edges.slice(0, -1).map((e, i) => `${e.toFixed(2)}–${body.edges[i + 1].toFixed(2)}`);
    hist.data.datasets = body.runs.map((run, i) => ({ label: label(run), backgroundColor: color(i),
      data: run.counts.map((c) => (run.seen ? c / run.seen : 0)) }));
    Object.values(paced.charts).forEach((c) => c.update());
    $("compared").textContent = body.runs.map((run) => run.name).join(" · ");
    document.title = `PACED · ${body.runs.map((run) => run.name).join(" vs ")}`;
    showError("");
  } catch (err) {
    showError(`cannot compare these runs: ${err.message}`);
  }
  paced.refreshes += 1;
  document.body.dataset.refreshes = String(paced.refreshes);
}

async function start() {
  makeCharts();
  if (names.length < 1) {
    showError("no run to compare: pick runs on the list of runs");
    return;
  }
  await refresh();
  setInterval(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", start);
