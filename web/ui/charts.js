// Charts of one tenant, drawn with uPlot (vendored, same origin). Per workload: the CPU demand of each
// utilization window against the forecast band each scaling decision saw for the next window, the replicas
// decided, and the decisions that changed something, each linked to its explanation. Also the tenant's
// scaling policies. Data comes from the REST API with the dashboard's token; text is set with textContent.
"use strict";

window.ProvisioningCharts = (function () {
  const { byId, el, token: storedToken } = window.ProvisioningUi;
  const REFRESH_MS = 10000;
  const view = { tenantId: null, plots: [], timer: null, loading: false };

  async function getJson(path) {
    const token = storedToken();
    const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
    if (!response.ok) throw new Error(`${path} answered ${response.status}`);
    return response.json();
  }

  const seconds = (iso) => Math.round(new Date(iso).getTime() / 1000);

  function quantileKeys(forecast) {
    const keys = Object.keys((forecast && forecast.quantiles) || {}).sort((a, b) => Number(a) - Number(b));
    return keys.length >= 2 ? [keys[0], keys[keys.length - 1]] : null;
  }

  // One aligned table for uPlot: [times, demand, band low, band high, replicas, applied scale changes].
  function workloadSeries(windows, decisions) {
    const rows = new Map();
    const row = (t) => {
      if (!rows.has(t)) rows.set(t, [t, null, null, null, null, null]);
      return rows.get(t);
    };
    for (const w of windows) row(seconds(w.end))[1] = w.cpu_cores_mean;
    for (const item of decisions) {
      const d = item.decision;
      const at = seconds(d.at);
      row(at)[4] = d.desired_replicas;
      if (item.applied && d.action !== "hold") row(at)[5] = d.desired_replicas;
      const keys = quantileKeys(d.forecast);
      if (keys) {
        const next = row(at + Math.round(d.forecast.interval_minutes * 60));
        next[2] = d.forecast.quantiles[keys[0]][0];
        next[3] = d.forecast.quantiles[keys[1]][0];
      }
    }
    const sorted = Array.from(rows.values()).sort((a, b) => a[0] - b[0]);
    return [0, 1, 2, 3, 4, 5].map((i) => sorted.map((r) => r[i]));
  }

  function plotOptions(workload, width) {
    return {
      title: workload,
      width: width,
      height: 220,
      scales: { x: { time: true }, cores: {}, replicas: { range: (_u, min, max) => [0, Math.max(1, max + 1)] } },
      axes: [
        {},
        { scale: "cores", label: "CPU cores" },
        { scale: "replicas", side: 1, label: "replicas", grid: { show: false } },
      ],
      series: [
        {},
        { label: "demand (cores)", scale: "cores", stroke: "#2563eb", width: 2, spanGaps: true },
        { label: "forecast low", scale: "cores", stroke: "#9ca3af", dash: [4, 4], spanGaps: true },
        { label: "forecast high", scale: "cores", stroke: "#9ca3af", dash: [4, 4], spanGaps: true },
        { label: "replicas decided", scale: "replicas", stroke: "#ea580c", spanGaps: true,
          paths: uPlot.paths.stepped({ align: 1 }) },
        { label: "scaled", scale: "replicas", stroke: "#dc2626", width: 0,
          points: { show: true, size: 9, fill: "#dc2626" } },
      ],
      bands: [{ series: [3, 2], fill: "rgba(156, 163, 175, 0.2)" }],
    };
  }

  function decisionList(decisions) {
    const list = el("ul", { class: "decisions" });
    for (const item of decisions.filter((i) => i.applied || i.decision.action !== "hold").slice(0, 10)) {
      const d = item.decision;
      const anchor = `decision-${item.decision_id}`;
      list.append(el("li", { id: anchor, class: "decision", "data-decision-id": item.decision_id },
        el("a", { href: `#${anchor}`, class: "decision-link",
          text: `${new Date(d.at).toLocaleString()} · ${item.trigger}: ${d.current_replicas} → ${d.desired_replicas}` }),
        el("span", { class: "muted small", text: item.applied ? " applied" : ` not applied (${item.apply_reason})` }),
        el("details", {}, el("summary", { text: "why" }), el("p", { class: "explanation", text: d.explanation }))));
    }
    if (!list.children.length) list.append(el("li", { class: "muted", text: "No decision changed anything yet." }));
    return list;
  }

  function policyTable(policies) {
    if (!policies.length) return el("p", { class: "muted", text: "No scaling policy." });
    const body = el("tbody", {});
    for (const p of policies) {
      body.append(el("tr", { "data-policy-id": p.policy_id },
        el("td", {}, el("code", { text: p.policy_id })),
        el("td", { text: p.workload }),
        el("td", { text: p.kind }),
        el("td", { text: `${p.min_replicas ?? "-"} – ${p.max_replicas ?? "-"}` })));
    }
    return el("table", { class: "policies" },
      el("thead", {}, el("tr", {}, ...["Policy", "Workload", "Kind", "Replicas"].map((h) => el("th", { text: h })))),
      body);
  }

  function destroyPlots() {
    for (const plot of view.plots) plot.destroy();
    view.plots = [];
  }

  async function render() {
    const tenantId = view.tenantId;
    if (!tenantId || view.loading) return;
    view.loading = true;
    const status = byId("charts-status");
    try {
      const id = encodeURIComponent(tenantId);
      const [utilization, decisions, policies] = await Promise.all([
        getJson(`/api/v1/tenants/${id}/utilization`),
        getJson(`/api/v1/scaling/decisions?tenant_id=${id}&limit=200`),
        getJson(`/api/v1/scaling/policies?tenant_id=${id}`),
      ]);
      if (tenantId !== view.tenantId) return;
      const byWorkload = new Map();
      for (const name of Object.keys(utilization.workloads || {})) byWorkload.set(name, []);
      for (const item of decisions.items || []) {
        if (!byWorkload.has(item.decision.workload)) byWorkload.set(item.decision.workload, []);
        byWorkload.get(item.decision.workload).push(item);
      }
      destroyPlots();
      const box = byId("charts-body");
      box.replaceChildren();
      for (const [workload, items] of Array.from(byWorkload.entries()).sort()) {
        const chart = el("div", { class: "chart", "data-workload": workload });
        box.append(el("div", { class: "workload-chart" }, chart, decisionList(items)));
        const data = workloadSeries((utilization.workloads || {})[workload] || [], items);
        view.plots.push(new uPlot(plotOptions(workload, Math.max(320, chart.clientWidth)), data, chart));
      }
      if (!byWorkload.size) box.append(el("p", { class: "muted", text: "No utilization or decision yet." }));
      byId("charts-policies").replaceChildren(policyTable(policies.items || []));
      status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      status.textContent = `could not load the charts: ${error.message}`;
    } finally {
      view.loading = false;
    }
  }

  function show(tenantId) {
    view.tenantId = tenantId;
    byId("charts-tenant").textContent = tenantId;
    byId("charts").hidden = false;
    clearInterval(view.timer);
    view.timer = setInterval(render, REFRESH_MS);
    render();
  }

  function hide() {
    view.tenantId = null;
    clearInterval(view.timer);
    destroyPlots();
    byId("charts").hidden = true;
  }

  return { show: show, hide: hide, refresh: render, workloadSeries: workloadSeries };
})();

// Compute spend per tenant against its budget, fed by the live stream: every tenant view of the snapshot and of
// each "tenant" event carries the tenant's costs (GET /api/v1/tenants/{id}/costs, from the worker owning it).
// Per tenant: spent + committed (light bar), spent (dark bar), the forecast to the period's end and the budget
// (markers). Redrawn at most every SPEND_REDRAW_MS however many tenant events arrive.
window.ProvisioningSpend = (function () {
  const { byId, el } = window.ProvisioningUi;
  const SPEND_REDRAW_MS = 250;
  const view = { plot: null, timer: null, views: [] };

  const money = (value) => `$${Number(value || 0).toFixed(2)}`;

  // The tenants shown (those with a budget or any spend), by id, and the aligned table uPlot draws:
  // [index, spent + committed, spent, forecast, budget].
  function spendSeries(views) {
    const rows = views
      .filter((v) => v && v.costs && (v.costs.budget_usd !== null || v.costs.spent_usd + v.costs.committed_usd > 0))
      .sort((a, b) => (a.tenant_id < b.tenant_id ? -1 : a.tenant_id > b.tenant_id ? 1 : 0));
    return {
      tenants: rows.map((v) => v.tenant_id),
      data: [
        rows.map((_, i) => i),
        rows.map((v) => v.costs.spent_usd + v.costs.committed_usd),
        rows.map((v) => v.costs.spent_usd),
        rows.map((v) => v.costs.forecast_usd),
        rows.map((v) => (v.costs.budget_usd === null ? null : v.costs.budget_usd)),
      ],
      costs: rows.map((v) => v.costs),
    };
  }

  function options(tenants, width) {
    const bars = (size) => uPlot.paths.bars({ size: size, align: 0 });
    return {
      width: width,
      height: 240,
      scales: { x: { time: false, range: () => [-0.5, Math.max(tenants.length - 0.5, 0.5)] },
        usd: { range: (_u, _min, max) => [0, Math.max(1, max * 1.1)] } },
      axes: [
        { splits: () => tenants.map((_, i) => i), values: (_u, splits) => splits.map((i) => tenants[i] ?? "") },
        { scale: "usd", label: "USD" },
      ],
      series: [
        {},
        { label: "spent + committed", scale: "usd", fill: "rgba(37, 99, 235, 0.25)", stroke: "#2563eb",
          paths: bars([0.6, 80]), points: { show: false } },
        { label: "spent", scale: "usd", fill: "#2563eb", stroke: "#1d4ed8", paths: bars([0.3, 40]),
          points: { show: false } },
        { label: "forecast", scale: "usd", stroke: "#ea580c", width: 0, points: { show: true, size: 9, fill: "#ea580c" } },
        { label: "budget", scale: "usd", stroke: "#dc2626", width: 0, points: { show: true, size: 11, fill: "#dc2626" } },
      ],
    };
  }

  function listItem(costs) {
    const used = costs.spent_usd + costs.committed_usd;
    const of = costs.budget_usd === null ? "no budget" : `of ${money(costs.budget_usd)} (${Math.round((costs.fraction || 0) * 100)} %)`;
    const fraction = costs.fraction === null ? 0 : costs.fraction;
    return el("li", { "data-tenant-id": costs.tenant_id, "data-used": used.toFixed(6),
      class: fraction >= 1 ? "over" : fraction >= 0.8 ? "high" : null },
      el("code", { text: costs.tenant_id }),
      ` ${money(costs.spent_usd)} spent + ${money(costs.committed_usd)} committed ${of} · forecast ${money(costs.forecast_usd)}`);
  }

  function draw() {
    view.timer = null;
    const series = spendSeries(view.views);
    if (view.plot) view.plot.destroy();
    view.plot = null;
    const box = byId("spend-chart");
    box.replaceChildren();
    byId("spend-list").replaceChildren(...series.costs.map(listItem));
    byId("spend-empty").hidden = series.tenants.length > 0;
    box.hidden = series.tenants.length === 0;
    if (!series.tenants.length) return;
    const first = series.costs[0];
    byId("spend-period").textContent = first.period_start
      ? `${first.period_start.slice(0, 10)} – ${first.period_end.slice(0, 10)}` : "all time";
    view.plot = new uPlot(options(series.tenants, Math.max(320, box.clientWidth)), series.data, box);
  }

  function update(views) {
    view.views = views;
    if (view.timer === null) view.timer = setTimeout(draw, SPEND_REDRAW_MS);
  }

  return { update: update, spendSeries: spendSeries };
})();
