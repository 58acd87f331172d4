"use strict";

(function () {
  const TOKEN_KEY = "bff-monitoring-token";
  const API = "../api/usage/";
  const SIGN_IN = "Sign in to Open-WebUI first, then reload this page.";
  const RANGES = {
    "24h": { label: "24 h", days: 1, bucket: "hour" },
    "7d": { label: "7 d", days: 7, bucket: "day" },
    "30d": { label: "30 d", days: 30, bucket: "day" },
    "90d": { label: "90 d", days: 90, bucket: "day" },
  };
  const DEFAULT_RANGE = "7d";
  const FILTERS = ["model", "user", "context", "operation"];
  const COLORS = {
    blue: "#2563eb",
    sky: "#7dd3fc",
    orange: "#ea580c",
    green: "#16a34a",
    red: "#dc2626",
    purple: "#7c3aed",
    violet: "#c4b5fd",
    teal: "#0d9488",
    amber: "#d97706",
    gray: "#6b7280",
  };
  const ERROR_COLORS = [COLORS.red, COLORS.orange, COLORS.amber, COLORS.purple, COLORS.gray, COLORS.teal, COLORS.blue, COLORS.violet, COLORS.sky, "#db2777", "#92400e", "#111827"];

  const byId = (id) => document.getElementById(id);
  const integer = new Intl.NumberFormat("en-US");
  const tick = new Intl.NumberFormat("en-US", { maximumSignificantDigits: 3 });
  const known = { model: new Set(), user: new Set(), context: new Set(), operation: new Set() };
  const people = new Map(); // admins: user id -> "name <email>" (the usage API's breakdown by user)
  let viewer = null;
  let loadCount = 0;

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function storedToken() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function getJson(url) {
    const token = storedToken();
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const response = await fetch(url, { headers: headers, credentials: "same-origin", cache: "no-store" });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.error && body.error.message ? body.error.message : "HTTP " + response.status;
      throw new HttpError(response.status, message);
    }
    return body;
  }

  function formatInt(value) {
    return integer.format(value);
  }

  function formatUsd(value) {
    return "$" + value.toFixed(value !== 0 && Math.abs(value) < 1 ? 6 : 2);
  }

  function formatMs(value) {
    return value === null || value === undefined ? "–" : formatInt(Math.round(value)) + " ms";
  }

  function errorRate(errors, requests) {
    return requests ? (100 * errors) / requests : null;
  }

  function formatRate(rate) {
    return rate === null ? "–" : rate.toFixed(1) + "%";
  }

  function modelLabel(key) {
    return key === "" ? "(none)" : key;
  }

  function timeLabel(t, bucket) {
    return bucket === "hour" ? t.slice(5, 10) + " " + t.slice(11, 16) : t.slice(0, 10);
  }

  function timeRange(key) {
    const range = RANGES[key];
    const now = new Date();
    const start = new Date(now.getTime());
    if (range.bucket === "hour") {
      start.setUTCMinutes(0, 0, 0);
      start.setUTCHours(start.getUTCHours() - 23);
    } else {
      start.setUTCHours(0, 0, 0, 0);
      start.setUTCDate(start.getUTCDate() - (range.days - 1));
    }
    return { from: start.toISOString(), to: now.toISOString(), bucket: range.bucket };
  }

  function readState() {
    const params = new URLSearchParams(location.search);
    const range = RANGES[params.get("range")] ? params.get("range") : DEFAULT_RANGE;
    const state = { range: range };
    for (const name of FILTERS) {
      state[name] = (params.get(name) || "").trim();
    }
    if (viewer.scope !== "all") {
      state.user = "";
    }
    return state;
  }

  function writeControls(state) {
    const form = byId("filters");
    for (const input of form.querySelectorAll('input[name="range"]')) {
      input.checked = input.value === state.range;
    }
    for (const name of FILTERS) {
      const input = form.elements.namedItem(name);
      if (input) {
        input.value = state[name];
      }
    }
  }

  function readControls() {
    const form = byId("filters");
    const checked = form.querySelector('input[name="range"]:checked');
    const state = { range: checked && RANGES[checked.value] ? checked.value : DEFAULT_RANGE };
    for (const name of FILTERS) {
      const input = form.elements.namedItem(name);
      state[name] = input ? input.value.trim() : "";
    }
    if (viewer.scope !== "all") {
      state.user = "";
    }
    return state;
  }

  function writeUrl(state) {
    const params = new URLSearchParams({ range: state.range });
    for (const name of FILTERS) {
      if (state[name]) {
        params.set(name, state[name]);
      }
    }
    history.replaceState(null, "", "?" + params.toString());
  }

  function setKpi(name, value, text) {
    const element = document.querySelector('[data-kpi="' + name + '"]');
    element.textContent = text;
    element.dataset.value = value === null || value === undefined ? "" : String(value);
  }

  function renderTotals(totals) {
    setKpi("requests", totals.requests, formatInt(totals.requests));
    setKpi("errors", totals.errors, formatInt(totals.errors));
    const rate = errorRate(totals.errors, totals.requests);
    setKpi("error_rate", rate, formatRate(rate));
    setKpi("cost_usd", totals.cost_usd, formatUsd(totals.cost_usd));
    setKpi("fallbacks", totals.fallbacks, formatInt(totals.fallbacks));
    setKpi("total_tokens", totals.total_tokens, formatInt(totals.total_tokens));
    setKpi("input_tokens", totals.input_tokens, formatInt(totals.input_tokens));
    setKpi("output_tokens", totals.output_tokens, formatInt(totals.output_tokens));
    setKpi("latency_p50", totals.latency_ms.p50, formatMs(totals.latency_ms.p50));
    setKpi("latency_p95", totals.latency_ms.p95, formatMs(totals.latency_ms.p95));
    setKpi("ttft_p50", totals.ttft_ms.p50, formatMs(totals.ttft_ms.p50));
    setKpi("ttft_p95", totals.ttft_ms.p95, formatMs(totals.ttft_ms.p95));
  }

  function drawChart(id, config, empty) {
    const canvas = byId(id);
    if (!canvas) {
      return;
    }
    canvas.parentElement.classList.toggle("empty", empty);
    if (!window.Chart) {
      return;
    }
    const existing = window.Chart.getChart(canvas);
    if (existing) {
      existing.destroy();
    }
    new window.Chart(canvas, config);
  }

  const TIME_TICKS = { autoSkip: true, autoSkipPadding: 12, maxRotation: 0, maxTicksLimit: 8 };
  const MODEL_TICKS = { autoSkip: false, maxRotation: 45 };
  const COUNT_TICKS = { precision: 0 };
  const USD_TICKS = { callback: (value) => "$" + tick.format(value) };
  const PLAIN_TICKS = {};

  function options(xTicks, yTicks, stacked) {
    return {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
      scales: {
        x: { stacked: stacked === true, ticks: xTicks },
        y: { stacked: stacked === true, beginAtZero: true, ticks: yTicks },
      },
    };
  }

  function dataset(label, data, color, extra) {
    return Object.assign({ label: label, data: data, backgroundColor: color, borderColor: color }, extra || {});
  }

  function renderTimeseries(series) {
    const points = series.points;
    const labels = points.map((p) => timeLabel(p.t, series.bucket));
    const empty = !points.some((p) => p.requests > 0);
    drawChart(
      "chart-requests-time",
      {
        type: "bar",
        data: {
          labels: labels,
          datasets: [
            dataset("Requests", points.map((p) => p.requests), COLORS.blue),
            dataset("Errors", points.map((p) => p.errors), COLORS.red),
          ],
        },
        options: options(TIME_TICKS, COUNT_TICKS),
      },
      empty,
    );
    drawChart(
      "chart-cost-time",
      {
        type: "line",
        data: { labels: labels, datasets: [dataset("Cost (USD)", points.map((p) => p.cost_usd), COLORS.green, { fill: false, pointRadius: 2 })] },
        options: options(TIME_TICKS, USD_TICKS),
      },
      empty,
    );
    drawChart(
      "chart-tokens-time",
      {
        type: "bar",
        data: {
          labels: labels,
          datasets: [
            dataset("Input tokens", points.map((p) => p.input_tokens), COLORS.purple),
            dataset("Output tokens", points.map((p) => p.output_tokens), COLORS.violet),
          ],
        },
        options: options(TIME_TICKS, COUNT_TICKS, true),
      },
      empty,
    );
    drawChart(
      "chart-errors-time",
      {
        type: "line",
        data: {
          labels: labels,
          datasets: [dataset("Error rate (%)", points.map((p) => errorRate(p.errors, p.requests)), COLORS.red, { spanGaps: true, pointRadius: 3 })],
        },
        options: options(TIME_TICKS, PLAIN_TICKS),
      },
      empty,
    );
    drawChart(
      "chart-fallbacks-time",
      {
        type: "bar",
        data: { labels: labels, datasets: [dataset("Fallbacks", points.map((p) => p.fallbacks), COLORS.amber)] },
        options: options(TIME_TICKS, COUNT_TICKS),
      },
      empty,
    );
  }

  function renderModels(rows) {
    const labels = rows.map((row) => modelLabel(row.key));
    const empty = rows.length === 0;
    drawChart(
      "chart-cost-model",
      { type: "bar", data: { labels: labels, datasets: [dataset("Cost (USD)", rows.map((r) => r.cost_usd), COLORS.green)] }, options: options(MODEL_TICKS, USD_TICKS) },
      empty,
    );
    drawChart(
      "chart-tokens-model",
      {
        type: "bar",
        data: {
          labels: labels,
          datasets: [
            dataset("Input tokens", rows.map((r) => r.input_tokens), COLORS.purple),
            dataset("Output tokens", rows.map((r) => r.output_tokens), COLORS.violet),
          ],
        },
        options: options(MODEL_TICKS, COUNT_TICKS, true),
      },
      empty,
    );
    drawChart(
      "chart-latency-model",
      {
        type: "bar",
        data: {
          labels: labels,
          datasets: [
            dataset("Latency p50", rows.map((r) => r.latency_ms.p50), COLORS.blue),
            dataset("Latency p95", rows.map((r) => r.latency_ms.p95), COLORS.sky),
            dataset("TTFT p50", rows.map((r) => r.ttft_ms.p50), COLORS.teal),
            dataset("TTFT p95", rows.map((r) => r.ttft_ms.p95), COLORS.amber),
          ],
        },
        options: options(MODEL_TICKS, PLAIN_TICKS),
      },
      empty,
    );
    fillTable("model-table", rows, (row) => [
      modelLabel(row.key),
      formatInt(row.requests),
      formatInt(row.errors),
      formatInt(row.input_tokens),
      formatInt(row.output_tokens),
      formatUsd(row.cost_usd),
      formatInt(row.fallbacks),
      formatMs(row.latency_ms.p50),
      formatMs(row.latency_ms.p95),
      formatMs(row.ttft_ms.p50),
      formatMs(row.ttft_ms.p95),
    ]);
  }

  function renderStatuses(rows) {
    drawChart(
      "chart-status",
      {
        type: "doughnut",
        data: {
          labels: rows.map((row) => row.key),
          datasets: [{ label: "Requests", data: rows.map((row) => row.requests), backgroundColor: statusColors(rows) }],
        },
        options: { animation: false, responsive: true, maintainAspectRatio: false, plugins: { legend: { position: "right" } } },
      },
      rows.length === 0,
    );
  }

  function renderOperations(rows) {
    const chartOptions = options(MODEL_TICKS, COUNT_TICKS);
    chartOptions.scales.y.title = { display: true, text: "Requests" };
    chartOptions.scales.y1 = { position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, ticks: USD_TICKS, title: { display: true, text: "Cost (USD)" } };
    drawChart(
      "chart-operations",
      {
        type: "bar",
        data: {
          labels: rows.map((row) => modelLabel(row.key)),
          datasets: [
            dataset("Requests", rows.map((r) => r.requests), COLORS.blue, { yAxisID: "y" }),
            dataset("Errors", rows.map((r) => r.errors), COLORS.red, { yAxisID: "y" }),
            dataset("Cost (USD)", rows.map((r) => r.cost_usd), COLORS.green, { yAxisID: "y1" }),
          ],
        },
        options: chartOptions,
      },
      rows.length === 0,
    );
    fillTable("operation-table", rows, (row) => [
      modelLabel(row.key),
      formatInt(row.requests),
      formatInt(row.errors),
      formatInt(row.input_tokens),
      formatInt(row.output_tokens),
      formatUsd(row.cost_usd),
    ]);
  }

  function renderOutcomes(rows) {
    let others = 0;
    drawChart(
      "chart-outcomes",
      {
        type: "doughnut",
        data: {
          labels: rows.map((row) => modelLabel(row.key)),
          datasets: [
            {
              label: "Requests",
              data: rows.map((row) => row.requests),
              backgroundColor: rows.map((row) => (row.key === "completed" ? COLORS.green : ERROR_COLORS[others++ % ERROR_COLORS.length])),
            },
          ],
        },
        options: { animation: false, responsive: true, maintainAspectRatio: false, plugins: { legend: { position: "right" } } },
      },
      rows.length === 0,
    );
  }

  function statusColors(rows) {
    let errors = 0;
    return rows.map((row) => (Number(row.key) < 400 ? COLORS.green : ERROR_COLORS[errors++ % ERROR_COLORS.length]));
  }

  function renderUsers(rows) {
    drawChart(
      "chart-users",
      {
        type: "bar",
        data: { labels: rows.map((row) => row.key || "(no user)"), datasets: [dataset("Cost (USD)", rows.map((row) => row.cost_usd), COLORS.orange)] },
        options: Object.assign(options(USD_TICKS, { autoSkip: false }), { indexAxis: "y" }),
      },
      rows.length === 0,
    );
    fillTable("user-table", rows, (row) => [row.key || "(no user)", person(row), formatInt(row.requests), formatInt(row.total_tokens), formatUsd(row.cost_usd)]);
  }

  function person(row) {
    if (row.name && row.email) {
      return row.name + " <" + row.email + ">";
    }
    return row.name || row.email || "";
  }

  const percent = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  const DELIVERY = { sent: "sent", failed: "failed", no_webhook: "no webhook" };

  function formatTime(iso) {
    return iso.slice(0, 16).replace("T", " ");
  }

  function deliveryLabel(alert) {
    const label = DELIVERY[alert.delivery] || alert.delivery;
    return alert.attempts > 1 ? label + " (" + alert.attempts + " attempts)" : label;
  }

  function renderAlerts(answer) {
    const table = byId("alert-table");
    const body = table.tBodies[0];
    body.replaceChildren();
    const message = answer.error ? "Could not load budget alerts: " + answer.error.message : answer.alerts.length === 0 ? "No budget alerts." : null;
    if (message) {
      const td = body.insertRow().insertCell();
      td.colSpan = table.tHead.rows[0].cells.length;
      td.className = "none";
      td.textContent = message;
      return;
    }
    for (const alert of answer.alerts) {
      const tr = body.insertRow();
      tr.dataset.user = alert.user_id;
      tr.dataset.period = alert.period;
      tr.dataset.threshold = String(alert.threshold);
      tr.dataset.delivery = alert.delivery;
      tr.className = "alert-" + alert.delivery;
      const who = alert.user_email || alert.user_name || alert.user_id;
      const cells = [
        formatTime(alert.created_at),
        who,
        alert.period,
        percent.format(Math.round(alert.threshold * 1000) / 10) + "%",
        formatUsd(Number(alert.spent_usd)),
        formatUsd(Number(alert.limit_usd)),
        formatTime(alert.resets_at),
        deliveryLabel(alert),
      ];
      for (const text of cells) {
        tr.insertCell().textContent = text;
      }
      tr.cells[1].title = alert.user_id;
    }
  }

  function fillTable(id, rows, cells) {
    const body = byId(id).tBodies[0];
    body.replaceChildren();
    if (rows.length === 0) {
      const tr = body.insertRow();
      const td = tr.insertCell();
      td.colSpan = byId(id).tHead.rows[0].cells.length;
      td.className = "none";
      td.textContent = "No requests in this range.";
      return;
    }
    for (const row of rows) {
      const tr = body.insertRow();
      tr.dataset.key = row.key;
      for (const text of cells(row)) {
        tr.insertCell().textContent = text;
      }
    }
  }

  function remember(name, rows) {
    for (const row of rows) {
      if (row.key) {
        known[name].add(row.key);
        if (name === "user" && person(row)) {
          people.set(row.key, person(row));
        }
      }
    }
    const list = byId(name + "-options");
    if (!list) {
      return;
    }
    list.replaceChildren();
    for (const value of Array.from(known[name]).sort()) {
      const option = document.createElement("option");
      option.value = value;
      if (name === "user" && people.has(value)) {
        option.label = people.get(value); // the filter suggests users by name and email too
      }
      list.append(option);
    }
  }

  function describe(state, range) {
    const parts = ["Showing " + RANGES[state.range].label + ": " + range.from.slice(0, 16).replace("T", " ") + " to " + range.to.slice(0, 16).replace("T", " ") + " UTC"];
    for (const name of FILTERS) {
      if (state[name]) {
        parts.push(name + " = " + state[name]);
      }
    }
    if (viewer.scope !== "all") {
      parts.push("your own usage only");
    }
    return parts.join(" · ");
  }

  async function load() {
    const dashboard = byId("dashboard");
    const state = readControls();
    writeUrl(state);
    const range = timeRange(state.range);
    const base = { from: range.from, to: range.to };
    for (const name of FILTERS) {
      if (state[name]) {
        base[name] = state[name];
      }
    }
    const query = (extra, without) => {
      const params = Object.assign({}, base, extra);
      if (without) {
        delete params[without];
      }
      return "?" + new URLSearchParams(params).toString();
    };
    const count = ++loadCount;
    dashboard.dataset.status = "loading";
    byId("error-line").hidden = true;
    byId("status-line").textContent = "Loading…";
    const calls = [
      getJson(API + "summary" + query({})),
      getJson(API + "timeseries" + query({ bucket: range.bucket })),
      getJson(API + "breakdown" + query({ by: "model", limit: "20" })),
      getJson(API + "breakdown" + query({ by: "status", limit: "20" })),
      getJson(API + "breakdown" + query({ by: "context", limit: "50" })),
      getJson(API + "breakdown" + query({ by: "operation", limit: "50" })),
      getJson(API + "breakdown" + query({ by: "outcome", limit: "20" })),
    ];
    // With an operation chosen, the operation list still offers every operation of the range.
    const allOperations = state.operation ? getJson(API + "breakdown" + query({ by: "operation", limit: "50" }, "operation")) : null;
    if (viewer.scope === "all") {
      calls.push(getJson(API + "breakdown" + query({ by: "user", limit: "10" })));
    }
    // Admins: the latest budget alerts (of the chosen user); a failure here leaves the rest of the page.
    const alertParams = new URLSearchParams({ limit: "50" });
    if (state.user) {
      alertParams.set("user", state.user);
    }
    const alerts = viewer.scope === "all" ? getJson(API + "alerts?" + alertParams.toString()).catch((error) => ({ error: error })) : null;
    try {
      const [results, everyOperation, alertAnswer] = await Promise.all([Promise.all(calls), allOperations, alerts]);
      const [summary, series, models, statuses, contexts, operations, outcomes, users] = results;
      if (count !== loadCount) {
        return;
      }
      renderTotals(summary.totals);
      renderTimeseries(series);
      renderModels(models.rows);
      renderStatuses(statuses.rows);
      renderOperations(operations.rows);
      renderOutcomes(outcomes.rows);
      remember("model", models.rows);
      remember("context", contexts.rows);
      remember("operation", (everyOperation || operations).rows);
      if (users) {
        renderUsers(users.rows);
        remember("user", users.rows);
      }
      if (alertAnswer) {
        renderAlerts(alertAnswer);
      }
      byId("bucket-hint").textContent = range.bucket === "hour" ? "(hourly, UTC)" : "(daily, UTC)";
      byId("status-line").textContent = describe(state, range);
      dashboard.dataset.query = new URLSearchParams(base).toString();
      dashboard.dataset.bucket = range.bucket;
      dashboard.dataset.status = "ready";
    } catch (error) {
      if (count !== loadCount) {
        return;
      }
      if (error.status === 401) {
        signedOut(error);
        return;
      }
      byId("status-line").textContent = "";
      byId("error-line").textContent = "Could not load usage: " + error.message;
      byId("error-line").hidden = false;
      dashboard.dataset.status = "error";
    }
  }

  function showNotice(title, detail, signIn) {
    byId("dashboard").hidden = true;
    byId("notice").hidden = false;
    byId("notice-title").textContent = title;
    byId("notice-detail").textContent = detail;
    byId("token-form").hidden = !signIn;
  }

  function signedOut(error) {
    if (storedToken()) {
      sessionStorage.removeItem(TOKEN_KEY);
      byId("forget-token").hidden = true;
      showNotice(SIGN_IN, "The pasted token was not accepted: " + error.message, true);
    } else {
      showNotice(SIGN_IN, "The gateway found no valid Open-WebUI session: " + error.message, true);
    }
  }

  function showViewer() {
    const who = viewer.name || viewer.user_id;
    const scope = viewer.scope === "all" ? "all users' usage" : "your own usage only";
    const via = storedToken() ? " · signed in with a pasted token" : "";
    byId("viewer").textContent = "Signed in as " + who + " (" + viewer.role + ") · " + scope + via;
    byId("forget-token").hidden = !storedToken();
    if (viewer.scope === "all") {
      byId("top-users").hidden = false;
      byId("budget-alerts").hidden = false;
    } else {
      for (const id of ["top-users", "budget-alerts", "user-filter", "user-options"]) {
        const element = byId(id);
        if (element) {
          element.remove();
        }
      }
    }
  }

  // --- Experiments (admins): one table per configured experiment, its variants' results ---
  const EXPERIMENTS_API = "../api/experiments";

  function formatShare(value) {
    return value === null || value === undefined ? "–" : percent.format(Math.round(value * 1000) / 10) + "%";
  }

  function upShare(feedback) {
    if (feedback.up_share === null) {
      return "–";
    }
    const interval = feedback.up_share_95;
    return formatShare(feedback.up_share) + " (" + formatShare(interval.low) + "–" + formatShare(interval.high) + ")";
  }

  function targetLabel(target) {
    if (target.model) {
      return "model " + target.model;
    }
    return target.task ? "task " + target.task : "context " + target.context;
  }

  function renderExperiment(result) {
    const experiment = result.experiment;
    const panel = byId("experiment-template").content.firstElementChild.cloneNode(true);
    panel.dataset.experiment = experiment.name;
    panel.querySelector(".experiment-name").textContent = experiment.name;
    const state = panel.querySelector(".experiment-state");
    state.textContent = experiment.active ? "active" : "inactive";
    state.classList.add(experiment.active ? "active" : "inactive");
    const meta = [targetLabel(experiment.target), formatTime(result.range.from) + " to " + formatTime(result.range.to) + " UTC", "control: " + result.control];
    if (experiment.description) {
      meta.unshift(experiment.description);
    }
    panel.querySelector(".experiment-meta").textContent = meta.join(" · ");
    const weights = {};
    for (const variant of experiment.variants) {
      weights[variant.name] = variant.weight;
    }
    const body = panel.querySelector("tbody");
    for (const variant of result.variants) {
      const tr = body.insertRow();
      tr.dataset.variant = variant.variant;
      if (variant.control) {
        tr.classList.add("control");
      }
      const cells = [
        variant.variant + (variant.control ? " (control)" : ""),
        variant.model || "(no longer configured)",
        weights[variant.variant] === undefined ? "–" : String(weights[variant.variant]),
        formatInt(variant.users),
        formatInt(variant.requests),
        formatInt(variant.errors),
        formatShare(variant.error_rate),
        formatUsd(variant.cost_usd),
        variant.cost_per_request_usd === null ? "–" : formatUsd(variant.cost_per_request_usd),
        formatMs(variant.latency_ms.p50),
        formatMs(variant.latency_ms.p95),
        formatMs(variant.ttft_ms.p50),
        formatInt(variant.feedback.up),
        formatInt(variant.feedback.down),
        upShare(variant.feedback),
      ];
      for (const text of cells) {
        tr.insertCell().textContent = text;
      }
    }
    return panel;
  }

  async function showExperiments() {
    const section = byId("experiments");
    if (!section) {
      return;
    }
    if (viewer.scope !== "all") {
      section.remove();
      return;
    }
    section.hidden = false;
    section.dataset.status = "loading";
    const error = byId("experiments-error");
    error.hidden = true;
    try {
      const listed = await getJson(EXPERIMENTS_API);
      const results = await Promise.all(listed.experiments.map((e) => getJson(EXPERIMENTS_API + "/" + encodeURIComponent(e.name))));
      byId("experiment-list").replaceChildren(...results.map(renderExperiment));
      byId("experiments-none").hidden = results.length > 0;
      section.dataset.status = "ready";
    } catch (failure) {
      error.textContent = "Could not load the experiments: " + failure.message;
      error.hidden = false;
      section.dataset.status = "error";
    }
  }
  // --- end of Experiments ---

  async function start() {
    try {
      viewer = await getJson("viewer");
    } catch (error) {
      if (error.status === 401) {
        signedOut(error);
      } else if (error.status === 403) {
        showNotice("You may not open the monitoring pages.", error.message, false);
      } else {
        showNotice("The monitoring pages are unavailable right now.", error.message, false);
      }
      return;
    }
    showViewer();
    byId("notice").hidden = true;
    byId("dashboard").hidden = false;
    if (!window.Chart) {
      byId("charts-missing").hidden = false;
      byId("dashboard").classList.add("no-charts");
    }
    writeControls(readState());
    showExperiments(); // its own section; failures stay in it
    await load();
  }

  function bind() {
    byId("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = byId("token-input");
      const token = input.value.trim();
      input.value = "";
      if (token) {
        sessionStorage.setItem(TOKEN_KEY, token);
        start();
      }
    });
    byId("forget-token").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      location.reload();
    });
    byId("filters").addEventListener("submit", (event) => {
      event.preventDefault();
      load();
    });
    byId("filters").addEventListener("change", (event) => {
      if (event.target.name === "range") {
        load();
      }
    });
    byId("reset").addEventListener("click", () => {
      writeControls({ range: DEFAULT_RANGE, model: "", user: "", context: "", operation: "" });
      load();
    });
  }

  bind();
  if (document.body.dataset.pageStatus === "200" || storedToken()) {
    start();
  }
})();
