// The runs of one store (/api/runs), polled so that new runs appear; each opens its own dashboard
// (/runs/NAME/), and the ticked ones open the compare page (/compare?run=A&run=B).
"use strict";

const POLL_MS = 2000;
const MAX_COMPARED = 8;
const paced = { runs: [], polls: 0 };
window.paced = paced;

const $ = (id) => document.getElementById(id);

function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message || "";
}

function ticked() {
  return [...document.querySelectorAll("#runs input[type=checkbox]:checked")].map((box) => box.value);
}

function updateCompare() {
  const names = ticked();
  $("compare").disabled = names.length < 2 || names.length > MAX_COMPARED;
  $("compare-msg").textContent = names.length > MAX_COMPARED
    ? `at most ${MAX_COMPARED} runs at once` : names.length < 2 ? "tick two or more runs to compare them" : "";
}

function cell(content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.appendChild(content);
  else td.textContent = String(content);
  return td;
}

function row(run, wasTicked) {
  const tr = document.createElement("tr");
  tr.dataset.run = run.name;
  const box = document.createElement("input");
  box.type = "checkbox";
  box.value = run.name;
  box.checked = wasTicked.has(run.name);
  box.setAttribute("aria-label", `compare ${run.name}`);
  box.addEventListener("change", updateCompare);
  const link = document.createElement("a");
  link.href = `/runs/${encodeURIComponent(run.name)}/`;
  link.textContent = run.name;
  const started = run.started_at === null ? "–" : new Date(run.started_at * 1000).toLocaleString();
  tr.append(cell(box), cell(link), cell(`${run.kernel.type} ${run.kernel.formula}`),
    cell(`${run.seen}${run.pool === null ? "" : ` / ${run.pool}`}`), cell(run.steps_total ?? "–"), cell(started));
  return tr;
}

async function poll() {
  try {
    const res = await fetch("/api/runs", { headers: { Accept: "application/json" } });
    const body = await res.json().catch(() => ({ detail: res.statusText }));
    if (!res.ok) throw new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
    const wasTicked = new Set(ticked());
    paced.runs = body.runs;
    $("store").textContent = body.store;
    $("runs").querySelector("tbody").replaceChildren(...body.runs.map((run) => row(run, wasTicked)));
    $("no-runs").hidden = body.runs.length > 0;
    $("runs-note").textContent = `${body.runs.length} run${body.runs.length === 1 ? "" : "s"}`;
    updateCompare();
    showError("");
  } catch (err) {
    showError(`the dashboard API did not answer: ${err.message}`);
  }
  paced.polls += 1;
  document.body.dataset.polls = String(paced.polls);
}

function start() {
  $("compare-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const names = ticked();
    if (names.length >= 2) location.href = `/compare?${names.map((n) => `run=${encodeURIComponent(n)}`).join("&")}`;
  });
  poll();
  setInterval(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", start);
