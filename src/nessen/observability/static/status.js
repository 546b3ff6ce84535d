// Nessen status page: polls the health endpoint and draws the last two minutes.
// Served from its own path so the page works under Content-Security-Policy:
// default-src 'self'. It builds SVG with DOM calls only (no innerHTML, no inline style).
"use strict";
(() => {
  const body = document.body;
  const HEALTH = body.dataset.health || "/api/health";
  const INTERVAL = Number(body.dataset.interval) || 1000;
  const HISTORY = 120;            // samples kept: two minutes at one per second
  const W = 300, H = 100;         // the charts' viewBox
  const SVG = "http://www.w3.org/2000/svg";
  const STATES = ["STARTING", "READY", "DEGRADED", "DRAINING", "STOPPING"];
  const samples = [];             // {t, uptime, source, total, rejected, rate, rejectedRate, p50, ...}
  const perWorker = new Map();    // pid -> {t, total}: the last sample of each worker, for its rate
  let polls = 0, failures = 0;

  const $ = (id) => document.getElementById(id);
  const text = (id, value) => { $(id).textContent = value; };

  function number(value, digits) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "\u2013";
    return value.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
  }

  function bytes(value) {
    if (!Number.isFinite(value)) return "\u2013";
    const units = ["B", "KiB", "MiB", "GiB"];
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return number(value, unit ? 1 : 0) + " " + units[unit];
  }

  function duration(ms) {
    let s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    return m + "m " + s + "s";
  }

  function niceCeiling(value) {
    if (!(value > 0)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (value <= step * power) return step * power;
    }
    return 10 * power;
  }

  function svgElement(name, attributes) {
    const element = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
    return element;
  }

  const MIN_SPAN = 30;             // samples across the chart while the history is short

  function step(count) {
    return W / (Math.min(HISTORY, Math.max(count, MIN_SPAN)) - 1);
  }

  function x(index, count) {
    // The newest sample sits at the right edge; older ones move left.
    return W - (count - 1 - index) * step(count);
  }

  // series: [{key, cls, area}], unit shown in the y-axis label
  function drawChart(id, series, unit) {
    const svg = $(id);
    const count = samples.length;
    let max = 0;
    for (const s of series) for (const sample of samples) {
      const v = sample[s.key];
      if (Number.isFinite(v) && v > max) max = v;
    }
    const top = niceCeiling(max);
    svg.replaceChildren();
    for (const fraction of [0.25, 0.5, 0.75]) {
      svg.append(svgElement("line", { class: "grid", x1: 0, x2: W, y1: H * fraction, y2: H * fraction }));
    }
    let points = 0;
    for (const s of series) {
      const coordinates = [];
      samples.forEach((sample, index) => {
        const v = sample[s.key];
        if (Number.isFinite(v)) {
          coordinates.push(x(index, count).toFixed(2) + "," + (H - (v / top) * (H - 4)).toFixed(2));
        }
      });
      points = Math.max(points, coordinates.length);
      if (!coordinates.length) continue;
      if (s.area && coordinates.length > 1) {
        const first = coordinates[0].split(",")[0], last = coordinates[coordinates.length - 1].split(",")[0];
        svg.append(svgElement("polygon", {
          class: s.cls, points: first + "," + H + " " + coordinates.join(" ") + " " + last + "," + H,
        }));
      }
      if (coordinates.length === 1) coordinates.push((W).toFixed(2) + "," + coordinates[0].split(",")[1]);
      svg.append(svgElement("polyline", { class: s.cls, points: coordinates.join(" "), "data-series": s.key }));
    }
    const latest = samples.length ? samples[samples.length - 1][series[series.length - 1].key] : null;
    svg.dataset.points = String(points);
    svg.dataset.max = String(top);
    svg.dataset.last = Number.isFinite(latest) ? String(latest) : "";
    text(id + "-max", number(top, 2) + " " + unit);
  }

  function drawStates() {
    const svg = $("chart-state");
    const count = samples.length;
    const width = step(count);
    svg.replaceChildren();
    samples.forEach((sample, index) => {
      svg.append(svgElement("rect", {
        class: sample.state, x: (x(index, count) - width).toFixed(2), y: 0,
        width: width.toFixed(2), height: 10, "data-state": sample.state,
      }));
    });
    svg.dataset.points = String(count);
  }

  function sum(values) {
    return Object.values(values || {}).reduce((a, b) => a + b, 0);
  }

  // With several workers the figures are the service's (data.aggregate: every worker's added
  // up, whichever worker answered the poll); with one process they are that process's.
  function figures(data) {
    const all = data.aggregate;
    return all ? {
      requests: all.requests, cpu: all.cpu_percent, rss: all.memory.rss_bytes,
      lag: all.event_loop_lag_ms, source: "supervisor " + all.supervisor_pid,
      websockets: all.websockets,
    } : {
      requests: data.requests, cpu: data.cpu_percent, rss: data.memory.rss_bytes,
      lag: data.event_loop_lag_ms, source: "pid " + data.pid, websockets: data.websockets,
    };
  }

  function ingest(data) {
    // Rates use this page's clock (milliseconds with a fraction), not uptime_ms, whose whole
    // milliseconds could make two quick polls look simultaneous.
    const t = performance.now() / 1000;
    const seen = figures(data);
    const requests = seen.requests;
    const rejected = sum(requests.rejected);
    const errors = requests.errors || {};
    const e4 = errors["4xx"] || 0, e5 = errors["5xx"] || 0;
    const last = samples[samples.length - 1];
    const restarted = last && (last.source !== seen.source || (!data.aggregate && data.uptime_ms < last.uptime));
    if (restarted) samples.length = 0;
    const previous = samples[samples.length - 1];
    const sample = {
      t, uptime: data.uptime_ms, source: seen.source, total: requests.total, rejected,
      rate: null, rejectedRate: null, e4, e5, errors4xx: null, errors5xx: null,
      p50: requests.p50_ms, p95: requests.p95_ms, p99: requests.p99_ms,
      active: requests.active, state: STATES.includes(data.state) ? data.state : "UNREACHABLE",
    };
    if (previous && t > previous.t) {
      sample.rate = Math.max(0, (sample.total - previous.total) / (t - previous.t));
      sample.rejectedRate = Math.max(0, (rejected - previous.rejected) / (t - previous.t));
      sample.errors4xx = Math.max(0, (e4 - previous.e4) / (t - previous.t));
      sample.errors5xx = Math.max(0, (e5 - previous.e5) / (t - previous.t));
    }
    samples.push(sample);
    if (samples.length > HISTORY) samples.shift();
    return sample;
  }

  function renderWorkers(data) {
    const card = $("workers-card");
    const workers = data.workers;
    card.hidden = !workers;
    if (!workers) return;
    const t = performance.now() / 1000;
    text("workers-note", workers.length + " live \u00b7 this poll answered by pid " + data.pid);
    const rows = $("workers");
    rows.replaceChildren();
    const live = new Set();
    for (const worker of workers) {
      const requests = worker.requests;
      const before = perWorker.get(worker.pid);
      const rate = before && t > before.t ? Math.max(0, (requests.total - before.total) / (t - before.t)) : null;
      perWorker.set(worker.pid, { t, total: requests.total });
      live.add(worker.pid);
      const row = rows.insertRow();
      row.dataset.pid = String(worker.pid);
      row.dataset.worker = String(worker.worker);
      row.dataset.total = String(requests.total);
      row.dataset.active = String(requests.active);
      const errors = requests.errors || {};
      for (const value of [
        String(worker.worker), String(worker.pid), worker.state, number(rate, 1),
        number(requests.active, 0), number(requests.p99_ms, 2), number(requests.total, 0),
        number(errors["4xx"], 0), number(errors["5xx"], 0), number(sum(requests.rejected), 0),
        number(worker.cpu_percent, 1), bytes(worker.memory.rss_bytes),
      ]) row.insertCell().textContent = value;
    }
    for (const pid of perWorker.keys()) if (!live.has(pid)) perWorker.delete(pid);
  }

  function render(data, sample) {
    const state = $("state");
    state.textContent = data.state;
    state.className = "state state-" + sample.state;
    state.dataset.state = data.state;
    body.dataset.state = data.state;
    const reason = $("reason");
    reason.hidden = !data.reason;
    reason.textContent = data.reason ? "Reason: " + data.reason : "";
    const seen = figures(data);
    const requests = seen.requests;
    text("version", "version " + data.version);
    text("pid", data.aggregate ? data.aggregate.workers + " workers (all added up), supervisor pid " + data.aggregate.supervisor_pid : "pid " + data.pid);
    text("uptime", duration(data.uptime_ms));
    text("rate", number(sample.rate, 1));
    text("total", number(requests.total, 0));
    text("p50", number(requests.p50_ms, 2));
    text("p95", number(requests.p95_ms, 2));
    text("p99", number(requests.p99_ms, 2));
    text("active", number(requests.active, 0));
    text("rejected", number(sample.rejected, 0));
    text("errors-4xx", number(sample.e4, 0));
    text("errors-5xx", number(sample.e5, 0));
    text("cpu", number(seen.cpu, 1));
    text("rss", bytes(seen.rss));
    text("lag", number(seen.lag, 2));
    text("avg-bytes", bytes(requests.avg_response_bytes));
    const sockets = seen.websockets || {};
    text("websockets", number(sockets.open, 0));
    text("websocket-messages", number((sockets.messages_in || 0) + (sockets.messages_out || 0), 0));
    renderWorkers(data);

    const reasons = $("reasons");
    const entries = Object.entries(requests.rejected || {}).sort((a, b) => b[1] - a[1]);
    reasons.replaceChildren();
    if (!entries.length) {
      const row = reasons.insertRow();
      row.className = "empty";
      row.insertCell().textContent = "none yet";
    }
    for (const [name, count] of entries) {
      const row = reasons.insertRow();
      row.dataset.reason = name;
      row.dataset.count = String(count);
      row.insertCell().textContent = name;
      row.insertCell().textContent = number(count, 0);
    }

    drawChart("chart-rate", [{ key: "rate", cls: "s-rate", area: true }], "req/s");
    drawChart("chart-latency", [
      { key: "p50", cls: "s-p50" }, { key: "p95", cls: "s-p95" }, { key: "p99", cls: "s-p99" },
    ], "ms");
    drawChart("chart-active", [{ key: "active", cls: "s-active", area: true }], "");
    drawChart("chart-rejected", [{ key: "rejectedRate", cls: "s-rejected", area: true }], "/s");
    drawChart("chart-errors", [
      { key: "errors4xx", cls: "s-4xx" }, { key: "errors5xx", cls: "s-5xx" },
    ], "/s");
    drawStates();
    const now = new Date();
    const updated = $("updated");
    updated.textContent = now.toLocaleTimeString("en-GB");
    updated.dateTime = now.toISOString();
  }

  function connection(live, message) {
    const element = $("connection");
    element.dataset.live = String(live);
    element.textContent = message;
  }

  async function poll() {
    try {
      const response = await fetch(HEALTH, { cache: "no-store", headers: { Accept: "application/json" } });
      const data = await response.json();  // a 503 (not ready) still carries the JSON
      polls += 1;
      render(data, ingest(data));
      connection(true, "live \u00b7 HTTP " + response.status + (response.ok ? "" : " (not ready)"));
    } catch (error) {
      failures += 1;
      connection(false, "cannot reach " + HEALTH + ": " + error.message);
    } finally {
      body.dataset.polls = String(polls);
      body.dataset.failures = String(failures);
    }
  }

  async function run() {
    await poll();
    setTimeout(run, INTERVAL);
  }

  run();
})();
