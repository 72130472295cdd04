// Live dashboard of the provisioning service: no build step, no dependencies.
// The access token is kept in sessionStorage; it goes to /ui/events as ?access_token= (EventSource cannot
// send headers) and to the REST API as an Authorization: Bearer header. Everything from the server is
// rendered with textContent, never as HTML.
"use strict";

(function () {
  const { byId, el, token: storedToken, setToken, forgetToken } = window.ProvisioningUi;
  const RECENT = 50;
  const RETRY_MS = 5000;
  const RESOURCE_ORDER = ["kubernetes", "cassandra", "s3", "pulsar", "ignite", "elasticsearch", "openproject"];
  const USAGE = [
    { key: "cpu_cores", label: "CPU", unit: "cores" },
    { key: "memory_gib", label: "Memory", unit: "GiB" },
    { key: "gpus", label: "GPUs", unit: "" },
  ];

  const state = { tenants: new Map(), anomalies: [], scaling: [], source: null, retryTimer: null };

  function cssToken(value) {
    return String(value || "unknown").toLowerCase().replace(/[^a-z0-9-]/g, "-");
  }

  function badge(kind, value, extra) {
    return el("span", Object.assign({ class: `badge ${kind}-${cssToken(value)}`, text: value }, extra || {}));
  }

  function fmtTime(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleTimeString();
  }

  function fmtNumber(value) {
    const n = Number(value || 0);
    return Number.isInteger(n) ? String(n) : n.toFixed(2).replace(/0+$/, "").replace(/\.$/, "");
  }

  // -- messages and connection state ------------------------------------------------------------

  function setMessage(text, kind) {
    const message = byId("message");
    message.hidden = !text;
    message.textContent = text || "";
    message.className = `message ${kind || "info"}`;
  }

  function setConn(stateName, label) {
    const conn = byId("conn");
    conn.dataset.state = stateName;
    conn.textContent = label || stateName;
  }

  function markUpdated() {
    byId("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  // -- tenants ----------------------------------------------------------------------------------

  function resourceBadges(view) {
    const resources = (view.status && view.status.resources) || {};
    const names = Object.keys(resources).sort((a, b) => {
      const ia = RESOURCE_ORDER.indexOf(a);
      const ib = RESOURCE_ORDER.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
    });
    const box = el("div", { class: "resources" });
    if (!names.length) box.append(el("span", { class: "muted", text: "no resources yet" }));
    for (const name of names) {
      const res = resources[name];
      const title = res.last_error ? `${name}: ${res.status} — ${res.last_error}` : `${name}: ${res.status}`;
      box.append(
        el("span", {
          class: `badge resource status-${cssToken(res.status)}`,
          "data-resource": name,
          "data-status": res.status,
          title: title,
        }, el("span", { class: "resource-name", text: name }), el("span", { class: "resource-status", text: res.status }))
      );
    }
    return box;
  }

  function quotaBars(view) {
    const quota = view.quota;
    const box = el("div", { class: "quota" });
    if (!quota) {
      box.append(el("span", { class: "muted", text: "no quota yet" }));
      return box;
    }
    const over = quota.over_quota || {};
    for (const item of USAGE) {
      const limit = Number(quota.limits[item.key] || 0);
      const used = Number((quota.usage || {})[item.key] || 0);
      const isOver = item.key in over || (limit > 0 ? used > limit : used > 0);
      const isHigh = !isOver && limit > 0 && used / limit >= 0.9;
      const ratio = limit > 0 ? Math.min(used / limit, 1) : (used > 0 ? 1 : 0);
      const fill = el("div", { class: "bar-fill" });
      fill.style.width = `${(ratio * 100).toFixed(1)}%`; // CSSOM, allowed by the page's CSP (no inline styles)
      box.append(
        el("div", { class: `quota-row${isOver ? " over" : ""}${isHigh ? " high" : ""}`, "data-quota": item.key },
          el("span", { class: "quota-label", text: item.label }),
          el("div", { class: "bar", role: "img", "aria-label": `${item.label} ${used} of ${limit}` }, fill),
          el("span", { class: "quota-value", text: `${fmtNumber(used)} / ${fmtNumber(limit)} ${item.unit}`.trim() }),
          isOver ? el("span", { class: "over-mark", text: "over quota" }) : null)
      );
    }
    const storageOver = "storage_gib" in over;
    box.append(
      el("div", { class: `quota-row storage${storageOver ? " over" : ""}`, "data-quota": "storage_gib" },
        el("span", { class: "quota-label", text: "Storage" }),
        el("span", { class: "quota-value", text: `limit ${fmtNumber(quota.limits.storage_gib)} GiB` }),
        storageOver ? el("span", { class: "over-mark", text: "over quota" }) : null)
    );
    return box;
  }

  function statusSignature(view) {
    const resources = (view.status && view.status.resources) || {};
    return JSON.stringify([view.tenant && view.tenant.state, Object.entries(resources).map(([k, r]) => [k, r.status])]);
  }

  function tenantRow(view, changed) {
    const tenant = view.tenant;
    const overall = (view.status && view.status.overall) || "unknown";
    const nameCell = el("td", { class: "tenant-cell" },
      el("div", { class: "tenant-name", text: tenant.name }),
      el("code", { class: "tenant-id", text: tenant.tenant_id }),
      tenant.region ? el("span", { class: "muted small", text: ` · ${tenant.region}` }) : null,
      tenant.state !== "active" ? badge("state", tenant.state) : null,
      el("button", { type: "button", class: "secondary small charts-open", "data-charts": tenant.tenant_id,
        text: "charts" }));
    return el("tr", { "data-tenant-id": tenant.tenant_id, class: changed ? "flash" : null },
      nameCell,
      el("td", {}, badge("tier", tenant.tier)),
      el("td", {}, badge("overall", overall, { "data-overall": overall })),
      el("td", {}, resourceBadges(view)),
      el("td", {}, quotaBars(view)));
  }

  function upsertTenant(view, quiet) {
    const tbody = byId("tenant-rows");
    const existing = tbody.querySelector(`tr[data-tenant-id="${CSS.escape(view.tenant_id)}"]`);
    if (!view.tenant) {
      state.tenants.delete(view.tenant_id);
      if (existing) existing.remove();
    } else {
      const previous = state.tenants.get(view.tenant_id);
      state.tenants.set(view.tenant_id, view);
      // highlight a row whose status changed (usage samples alone do not make it blink)
      const row = tenantRow(view, !quiet && (!previous || statusSignature(previous) !== statusSignature(view)));
      if (existing) {
        existing.replaceWith(row);
      } else {
        const after = Array.from(tbody.children).find((tr) => tr.dataset.tenantId > view.tenant_id);
        tbody.insertBefore(row, after || null);
      }
    }
    updateCounts();
  }

  function updateCounts() {
    window.ProvisioningSpend.update(Array.from(state.tenants.values()));
    const count = state.tenants.size;
    byId("tenant-count").textContent = count === 1 ? "1 tenant" : `${count} tenants`;
    byId("empty").hidden = count > 0;
    byId("tenants").hidden = count === 0;
  }

  // -- anomalies and scaling events ---------------------------------------------------------------

  function anomalyItem(update) {
    const a = update.data || {};
    return el("li", { class: "event", "data-tenant-id": update.tenant_id },
      el("div", { class: "event-head" },
        el("span", { class: "time", text: fmtTime(a.occurred_at) }),
        el("code", { text: update.tenant_id }),
        badge("severity", a.severity || "unknown"),
        a.reaction ? badge("reaction", a.reaction) : null),
      el("div", { class: "event-body", text: `${a.anomaly_type || "anomaly"} on ${a.resource_type || "?"}/${a.resource_id || "?"}`
        + (a.value !== undefined ? ` (value ${fmtNumber(a.value)})` : "") }));
  }

  function scalingItem(update) {
    const s = update.data || {};
    let change = "";
    if (s.desired_replicas !== null && s.desired_replicas !== undefined) change = `→ ${s.desired_replicas} replicas`;
    else if (s.delta !== null && s.delta !== undefined) change = `${s.delta > 0 ? "+" : ""}${s.delta} replicas`;
    const why = s.refusal || s.reason || "";
    return el("li", { class: "event", "data-tenant-id": update.tenant_id },
      el("div", { class: "event-head" },
        el("span", { class: "time", text: fmtTime(s.issued_at) }),
        el("code", { text: update.tenant_id }),
        badge("scaling", s.status || "unknown")),
      el("div", { class: "event-body", text: `${s.workload || "?"} ${change}` }),
      why ? el("div", { class: "event-why muted", text: why }) : null);
  }

  function renderList(id, items, render) {
    const list = byId(id);
    list.replaceChildren(...items.map(render));
    byId(`${id}-empty`).hidden = items.length > 0;
  }

  function eventKey(update) {
    const d = update.data || {};
    const id = d.event_id || d.command_id;
    return id ? `${update.tenant_id}/${id}` : null;
  }

  function addRecent(listName, update) {
    // an anomaly log re-written without a new anomaly repeats its newest one: show each event once
    const key = eventKey(update);
    if (key && state[listName].some((u) => eventKey(u) === key)) return;
    state[listName] = [update, ...state[listName]].slice(0, RECENT);
    renderList(listName, state[listName], listName === "anomalies" ? anomalyItem : scalingItem);
  }

  // -- the stream ---------------------------------------------------------------------------------

  function applySnapshot(snap) {
    state.tenants.clear();
    byId("tenant-rows").replaceChildren();
    for (const view of snap.tenants || []) upsertTenant(view, true);
    updateCounts();
    state.anomalies = (snap.anomalies || []).slice(0, RECENT);
    state.scaling = (snap.scaling || []).slice(0, RECENT);
    renderList("anomalies", state.anomalies, anomalyItem);
    renderList("scaling", state.scaling, scalingItem);
    const p = snap.principal || {};
    byId("who").textContent = `${p.sub || "?"} · ${(p.roles || []).join(", ") || "no role"}`
      + (p.tenant_id ? ` · tenant ${p.tenant_id}` : "");
    if (snap.truncated) setMessage(`Showing the first ${state.tenants.size} of ${snap.total} tenants.`, "info");
    else setMessage("");
    markUpdated();
  }

  function closeStream() {
    if (state.source) {
      state.source.close();
      state.source = null;
    }
    if (state.retryTimer) {
      clearTimeout(state.retryTimer);
      state.retryTimer = null;
    }
  }

  async function diagnose(token) {
    // EventSource hides the status of a refused connection: ask the API the same question.
    try {
      const response = await fetch("/api/v1/tenants?limit=1", { headers: { Authorization: `Bearer ${token}` } });
      if (response.status === 401 || response.status === 403) {
        let reason = response.statusText;
        try {
          reason = (await response.json()).error.message;
        } catch (_) { /* keep the status text */ }
        setConn("refused", "token refused");
        setMessage(`The token was refused: ${reason}. Paste another one.`, "error");
        return false;
      }
    } catch (_) { /* the server is unreachable: retry */ }
    return true;
  }

  function connect() {
    closeStream();
    const token = storedToken();
    if (!token) {
      setConn("disconnected");
      setMessage("Paste an access token (a JWT) and press Connect.", "info");
      return;
    }
    setConn("connecting", "connecting…");
    const source = new EventSource(`events?access_token=${encodeURIComponent(token)}`);
    state.source = source;
    source.addEventListener("open", () => setConn("live"));
    source.addEventListener("snapshot", (e) => applySnapshot(JSON.parse(e.data)));
    source.addEventListener("tenant", (e) => { upsertTenant(JSON.parse(e.data)); markUpdated(); });
    source.addEventListener("anomaly", (e) => { addRecent("anomalies", JSON.parse(e.data)); markUpdated(); });
    source.addEventListener("scaling", (e) => {
      const update = JSON.parse(e.data);
      addRecent("scaling", update);
      markUpdated();
      if (update.tenant_id === chartsTenant()) window.ProvisioningCharts.refresh();
    });
    source.addEventListener("token-expired", () => {
      closeStream();
      setConn("expired", "token expired");
      setMessage("The access token has expired. Paste a new one.", "error");
    });
    source.addEventListener("error", async () => {
      if (source !== state.source) return;
      if (source.readyState === EventSource.CLOSED) {
        closeStream();
        setConn("reconnecting", "reconnecting…");
        if (await diagnose(token)) state.retryTimer = setTimeout(connect, RETRY_MS);
      } else {
        setConn("reconnecting", "reconnecting…");
      }
    });
  }

  function chartsTenant() {
    return byId("charts").hidden ? null : byId("charts-tenant").textContent;
  }

  byId("tenant-rows").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-charts]");
    if (button) window.ProvisioningCharts.show(button.dataset.charts);
  });
  byId("charts-close").addEventListener("click", () => window.ProvisioningCharts.hide());

  byId("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = byId("token");
    const token = input.value.trim();
    if (token) setToken(token);
    input.value = "";
    connect();
  });

  byId("signout").addEventListener("click", () => {
    forgetToken();
    window.ProvisioningCharts.hide();
    closeStream();
    state.tenants.clear();
    byId("tenant-rows").replaceChildren();
    byId("who").textContent = "";
    updateCounts();
    setConn("disconnected");
    setMessage("Token forgotten.", "info");
  });

  updateCounts();
  renderList("anomalies", [], anomalyItem);
  renderList("scaling", [], scalingItem);
  connect();
})();
