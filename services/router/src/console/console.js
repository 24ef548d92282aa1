// Meridian console: one small script for every page. No framework; the
// server sends JSON (and server-sent events for the live pages).
"use strict";

// A UUIDv7 starts with its timestamp: tickets handed over at one shift end
// share their first hex digits. The random tail tells them apart: the last
// 8 hex digits, exactly as `TicketId::short` (meridian-core) prints them in
// the CLI and the shift summaries.
function shortId(id) {
  return id.replace(/-/g, "").slice(-8).toLowerCase();
}

// "in 2 h 5 min" / "3 h 10 min ago" from the page's own instant (the
// mesh's clock, which `meridian up --speed` runs faster than the wall's).
function relative(iso, nowIso) {
  const minutes = Math.round((Date.parse(iso) - Date.parse(nowIso)) / 60000);
  const m = Math.abs(minutes);
  const text = m >= 1440 ? `${Math.floor(m / 1440)} d ${Math.floor((m % 1440) / 60)} h`
    : m >= 60 ? `${Math.floor(m / 60)} h ${m % 60} min` : `${m} min`;
  return minutes >= 0 ? "in " + text : text + " ago";
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    // Through the CSSOM: the Content-Security-Policy refuses style attributes.
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function byId(id) { return document.getElementById(id); }

function live(state, text) {
  const badge = byId("live");
  if (!badge) return;
  badge.textContent = text;
  badge.classList.toggle("on", state);
}

function time(iso) {
  if (!iso) return "";
  return iso.replace("T", " ").replace(/\.\d+Z$/, "Z").replace(/:\d\dZ$/, "Z");
}

function showError(id, message) {
  const node = byId(id);
  if (!node) return;
  node.hidden = !message;
  node.textContent = message || "";
}

// Not logged in (or the token expired or lost its key): to the login
// page, back here afterwards.
function toLogin() {
  location.assign("/login?next=" + encodeURIComponent(location.pathname));
}

// A live stream failed: when the reason is the login, go and log in
// rather than reconnecting forever.
async function checkSession() {
  try {
    const response = await fetch("/api/session");
    if (response.status === 401) toLogin();
  } catch (_) { /* the console is away; the stream reconnects */ }
}

// Who is logged in, and a way out, in the page's header.
async function showSession() {
  const header = document.querySelector("header");
  if (!header) return;
  let session = null;
  try {
    const response = await fetch("/api/session");
    if (response.status === 401) { toLogin(); return; }
    session = await response.json();
  } catch (_) { return; }
  if (!session.auth) return;
  header.append(el("span", { id: "session", class: "session" },
    el("span", { class: "muted", "data-role": session.role }, `${session.subject} (${session.role})`),
    el("form", { method: "post", action: "/logout" }, el("button", { type: "submit", id: "logout" }, "Log out"))));
  if (!session.what_if) {
    const run = byId("what-if-run");
    if (run) { run.disabled = true; run.title = `role ${session.role} may not run the what-if`; }
  }
}

async function getJson(url, options) {
  const response = await fetch(url, options);
  if (response.status === 401) { toLogin(); return { ok: false, status: 401, body: { error: "not logged in" } }; }
  let body = null;
  try { body = await response.json(); } catch (_) { body = { error: "the console answered " + response.status }; }
  return { ok: response.ok, status: response.status, body };
}

// ---- Now ----

function band(region, sunMinute) {
  const pct = (m) => (100 * m / 1440).toFixed(3) + "%";
  const spans = [];
  for (const s of region.band.overlaps) spans.push(el("span", { class: "overlap", title: s.label, style: `left:${pct(s.from_minute)};width:${pct(s.to_minute - s.from_minute)}` }));
  for (const s of region.band.shifts) spans.push(el("span", { class: "shift", title: s.label, style: `left:${pct(s.from_minute)};width:${pct(s.to_minute - s.from_minute)}` }));
  for (const s of region.band.holidays) spans.push(el("span", { class: "holiday", title: s.label, style: `left:${pct(s.from_minute)};width:${pct(s.to_minute - s.from_minute)}` }));
  for (const s of region.band.openings || []) spans.push(el("span", { class: "opening", title: s.label, style: `left:${pct(s.from_minute)};width:${pct(s.to_minute - s.from_minute)}` }));
  spans.push(el("span", { class: "sun", title: "now", style: `left:${pct(sunMinute)}` }));
  return el("div", { class: "band", "data-band": region.id }, spans);
}

function regionCard(region, sunMinute, at) {
  const g = region.gateway;
  const health = region.healthy === null ? el("span", { class: "badge" }, "not probed yet")
    : region.healthy ? el("span", { class: "badge ok", "data-health": "up" }, "healthy")
    : el("span", { class: "badge bad", "data-health": "down" }, "down");
  const position = region.position.replace("_", " ");
  const facts = [];
  let peers = null;
  if (!g) {
    facts.push(el("div", {}, "no gateway configured"));
  } else if (!g.reachable) {
    facts.push(el("div", { class: "error" }, "gateway unreachable: " + g.error));
  } else {
    facts.push(el("div", {}, "queue ", el("b", { "data-queue": region.id }, g.queue_open), " open"));
    facts.push(el("div", {}, "SLA at risk ", el("b", { "data-sla-risk": region.id }, g.sla_at_risk)));
    facts.push(el("div", {}, "lease ", g.fenced ? el("b", { class: "error", title: g.fenced_reason }, "fenced") : el("b", {}, "held")));
    facts.push(el("div", {}, "log head ", el("b", {}, g.local_head)));
    const st = region.staffing;
    if (st) {
      facts.push(el("div", { "data-staffing": region.id }, "agents ", el("b", { "data-agents-available": region.id }, st.agents_available),
        " available of ", el("b", { "data-agents-on-shift": region.id }, st.agents_on_shift), " on shift"));
      facts.push(el("div", {}, "open per available agent ", el("b", { "data-open-per-agent": region.id }, st.open_per_available === null ? "–" : st.open_per_available)));
      facts.push(el("div", {}, "unassigned ", el("b", { "data-unassigned": region.id }, st.unassigned),
        st.oldest_unassigned ? el("span", { class: "muted" }, " · oldest " + relative(st.oldest_unassigned, at).replace(/^in /, "")) : null));
    }
    const byStatus = Object.entries(g.queue_by_status).map(([s, n]) => `${s} ${n}`).join(" · ");
    if (byStatus) facts.push(el("div", { class: "muted" }, byStatus));
    if (g.peers.length) {
      peers = el("div", { class: "peers" }, "replication lag: ", g.peers.map((p, i) => [
        i ? " · " : "",
        `${p.region} ${p.connected ? "" : "(disconnected) "}${p.lag_events} ev / ${p.lag_seconds.toFixed(1)} s`,
      ]).flat());
    }
  }
  const next = region.next_shift_at
    ? el("div", { class: "next-shift", "data-next-shift": region.id, "data-at": region.next_shift_at },
      "next shift starts ", el("b", {}, time(region.next_shift_at)), " (" + relative(region.next_shift_at, at) + ")")
    : region.active ? null : el("div", { class: "next-shift muted", "data-next-shift": region.id }, "no shift within two weeks");
  return el("section", { class: "region" + (region.active ? " active" : ""), "data-region": region.id, "data-active": region.active ? "true" : "false" },
    el("h3", {}, region.id,
      region.active ? el("span", { class: "badge sun" }, "active") : el("span", { class: "badge" }, position),
      health,
      el("span", { class: "muted" }, region.time_zone + (region.shift ? " · " + region.shift + " (" + region.queue_owner + ")" : ""))),
    next,
    band(region, sunMinute),
    el("div", { class: "hours" }, ["00", "06", "12", "18", "24"].map((h) => el("span", {}, h))),
    el("div", { class: "facts" }, facts),
    peers);
}

// One of the Now page's lists: at most 50 tickets, and how many there are.
function ticketList(name, list, at, order) {
  const shown = list.tickets.length;
  const count = document.querySelector(`[data-total="${name}"]`);
  count.textContent = shown < list.total ? `${list.total} (the ${shown} ${order} shown)` : String(list.total);
  count.dataset.count = list.total;
  const items = list.tickets.map((t) => el("li", { "data-ticket": t.id, "data-short": t.short_id, class: t.sla_state },
    el("a", { href: t.journey_url, title: t.id, class: "short-id" }, t.short_id),
    el("span", { class: "subject" }, t.subject || "(no subject)"),
    el("span", { class: "muted" }, `${t.owner_region} · ${t.status}${t.tier ? " · " + t.tier : ""}`),
    t.due ? el("span", { class: "due", "data-due": t.due }, `${t.due_clock} due ${time(t.due)} (${relative(t.due, at)})${t.sla_state === "breached" ? " · breached" : t.sla_state === "at_risk" ? " · at risk" : ""}`)
      : el("span", { class: "muted" }, "no deadline running")));
  if (!items.length) items.push(el("li", { class: "muted empty" }, "none"));
  for (const error of list.errors) items.push(el("li", { class: "error" }, "could not list: " + error));
  document.querySelector(`[data-tickets="${name}"]`).replaceChildren(...items);
}

function renderNow(state) {
  byId("rules-version").textContent = state.rules_version;
  byId("routes-to").textContent = state.routes_to || "nobody";
  byId("routes-to").dataset.region = state.routes_to || "";
  byId("route-reason").textContent = "(" + state.route_reason.replaceAll("_", " ") + ")";
  showError("refused", state.rules_refused.length ? "A new rules file was refused; the rules above stay in force:\n" + state.rules_refused.join("\n") : "");
  const sunMinute = (Date.parse(state.at) - Date.parse(state.day_start)) / 60000;
  const box = byId("regions");
  box.replaceChildren(...state.regions.map((r) => regionCard(r, sunMinute, state.at)));
  ticketList("held", state.held_off_shift, state.at, "oldest first");
  ticketList("at-risk", state.at_risk, state.at, "soonest first");
  box.dataset.at = state.at;
  document.body.dataset.ready = "true";
}

function startNow() {
  const source = new EventSource("/api/now/events");
  source.onopen = () => live(true, "live");
  source.onerror = () => { live(false, "reconnecting…"); checkSession(); };
  source.onmessage = (message) => renderNow(JSON.parse(message.data));
}

// ---- Handoffs ----

function noteText(note) {
  if (!note) return null;
  const parts = [];
  if (note.last_action) parts.push("last: " + note.last_action);
  if (note.next_action) parts.push("next: " + note.next_action);
  if (note.deadline) parts.push("by " + time(note.deadline));
  if (note.text) parts.push(note.text);
  return el("p", { class: "note" },
    note.auto ? el("span", { class: "badge warn", "data-auto": "true" }, "auto") : null, " ",
    parts.join(" · "), note.author ? el("span", { class: "muted" }, " — " + note.author) : null);
}

function describe(item) {
  const p = item.payload || {};
  switch (item.kind) {
    case "handoff_offered": return [`${item.origin_region} → ${p.to}: offered`, noteText(p.handoff)];
    case "handoff_accepted": return [`${p.from} → ${item.origin_region}: accepted at epoch ${item.epoch}`, null];
    case "handoff_refused": return [`${item.origin_region} → ${p.to}: refused`, el("p", { class: "note error" }, p.reason)];
    case "taken_over": return [`${item.origin_region} took over from ${p.from} (fencing token ${p.fencing_token})`, null];
    case "shift_summary": {
      const s = p.summary || {};
      const lines = [
        `${(s.handed_off || []).length} handed off`, `${(s.kept || []).length} kept`,
        `${(s.sla_at_risk || []).length} at SLA risk`, `${(s.escalations_open || []).length} escalations open`,
        `${s.auto_notes || 0} auto notes`,
      ];
      return [`${s.region} shift ${time(s.shift_start)} – ${time(s.shift_end)} ended; next ${s.next_region || "nobody"}${s.next_queue_owner ? " (" + s.next_queue_owner + ")" : ""}`,
        el("p", { class: "note" }, s.auto_notes ? el("span", { class: "badge warn", "data-auto": "true" }, "auto") : null, " ", lines.join(" · "),
          (s.kept || []).map(([id, why]) => el("div", { class: "muted" }, "kept ", el("a", { href: "/journey/" + id, title: id }, shortId(id)), ": " + why)))];
    }
    default: return [item.kind, null];
  }
}

function handoffItem(item) {
  const [title, body] = describe(item);
  const ticket = item.kind === "shift_summary" ? null
    : el("a", { href: item.journey_url, "data-ticket": item.ticket_id }, "ticket " + shortId(item.ticket_id));
  const trace = item.trace_url ? el("a", { href: item.trace_url, target: "_blank", rel: "noopener" }, "trace") : null;
  return el("li", { class: "fresh", "data-kind": item.kind, "data-ticket": item.ticket_id },
    el("div", { class: "head" },
      el("span", { class: "kind " + item.kind }, item.kind.replaceAll("_", " ")),
      el("span", {}, title), ticket, trace,
      el("span", { class: "muted" }, time(item.at) + " · " + item.origin_region + "#" + item.origin_seq)),
    body);
}

function startHandoffs() {
  const list = byId("handoffs");
  const problems = {};
  const source = new EventSource("/api/handoffs/events");
  source.onerror = () => { live(false, "reconnecting…"); checkSession(); };
  source.addEventListener("hello", () => { live(true, "live"); list.replaceChildren(); document.body.dataset.ready = "true"; });
  source.addEventListener("problem", (message) => {
    const p = JSON.parse(message.data);
    problems[p.region] = p.error;
    showError("problems", Object.values(problems).join("\n"));
  });
  source.onmessage = (message) => {
    const item = JSON.parse(message.data);
    delete problems[item.origin_region];
    showError("problems", Object.values(problems).join("\n"));
    // Newest first, by the origin's hybrid-logical time.
    const node = handoffItem(item);
    node.dataset.at = item.at;
    let before = null;
    for (const other of list.children) { if (other.dataset.at < item.at) { before = other; break; } }
    list.insertBefore(node, before);
    while (list.children.length > 500) list.lastElementChild.remove();
    byId("empty").hidden = true;
  };
}

// ---- Rules ----

// The grid's axis: each day's name over its 24 cells, and hour marks
// (00, 06, 12, 18 UTC; on a phone only 00 and 12, so they stay readable).
function gridAxis(grid) {
  // "Mon 7 Dec": the month goes on a phone, where a day is 50 px wide.
  const days = (grid.day_labels || []).map((label) => {
    const cut = label.lastIndexOf(" ");
    return el("span", { class: "day-label", "data-day": label, title: label }, label.slice(0, cut), el("span", { class: "month" }, label.slice(cut)));
  });
  const hours = [];
  for (let d = 0; d < grid.days; d++) {
    for (const h of [0, 6, 12, 18]) hours.push(el("span", { class: "hour-label" + (h % 12 ? " minor" : ""), "data-hour": h }, String(h).padStart(2, "0")));
  }
  return [
    el("div", { class: "row axis", "data-axis": "days" }, el("span", { class: "name" }, "UTC"), el("div", { class: "labels days" }, days)),
    el("div", { class: "row axis", "data-axis": "hours" }, el("span", { class: "name" }, ""), el("div", { class: "labels hours" }, hours)),
  ];
}

function gridView(grid, changed) {
  const rows = grid.rows.map((row) => {
    const cells = row.minutes.map((m, h) => {
      const mark = row.marks[h];
      const cls = [mark || (m >= 60 ? "full" : m > 0 ? "partial" : ""), h % 24 === 0 ? "day" : "",
        changed && changed.has(row.kind + "/" + row.name + "/" + h) ? "changed" : ""].filter(Boolean).join(" ");
      return el("i", { class: cls, title: `${row.name} day ${Math.floor(h / 24) + 1} ${String(h % 24).padStart(2, "0")}:00 UTC: ${m} min${mark ? " (" + mark + ")" : ""}` });
    });
    return el("div", { class: "row", "data-row": row.kind + "/" + row.name },
      el("span", { class: "name kind-" + row.kind }, row.kind === "skill" ? "skill " + row.name : row.name),
      el("div", { class: "cells" }, cells));
  });
  return [...gridAxis(grid), ...rows];
}

// The holidays, ranges and extra hours behind the grid, one line each.
function calendarDays(days) {
  if (!days.length) return [el("li", { class: "muted" }, "no holidays or extra hours in these days")];
  const what = { holiday: "closed", opening: "extra opening", hours: "only open" };
  return days.map((d) => el("li", { class: "calendar-day " + d.kind, "data-kind": d.kind },
    `${d.date}${d.last !== d.date ? " to " + d.last : ""} ${d.owner}: ${what[d.kind]} ${d.hours || "all day"}${d.name ? " “" + d.name + "”" : ""} (${d.rule})`));
}

async function startRules() {
  live(true, "");
  const { ok, body } = await getJson("/api/rules");
  if (!ok) { showError("refused", body.error); return; }
  byId("rules-version").textContent = body.rules_version;
  byId("rules-file").textContent = body.file_name;
  showError("refused", body.rules_refused.length ? "A new rules file was refused; the active rules stay:\n" + body.rules_refused.join("\n") : "");
  byId("gap-summary").textContent = `${body.grid.gap_hours} gap hours, ${body.grid.parity_gap_hours} knowledge-parity gap hours from ${body.grid.from}`;
  byId("grid").replaceChildren(...gridView(body.grid));
  byId("calendar-days").replaceChildren(...calendarDays(body.grid.calendar_days || []));
  byId("what-if-run").addEventListener("click", runWhatIf);
  document.body.dataset.ready = "true";
}

async function runWhatIf() {
  const out = byId("what-if-result");
  out.replaceChildren(el("p", { class: "muted" }, "comparing…"));
  const { ok, body } = await getJson("/api/rules/what-if", { method: "POST", headers: { "content-type": "text/plain" }, body: byId("what-if-text").value });
  if (!ok) {
    out.replaceChildren(...[el("p", { class: "error", "data-what-if": "error" }, body.error),
      body.problems ? el("ul", { class: "error" }, body.problems.map((p) => el("li", { "data-line": p.line, "data-column": p.column }, p.text))) : null].filter(Boolean));
    return;
  }
  const changed = new Set(body.changed_cells.map((c) => c.kind + "/" + c.name + "/" + c.hour));
  const moved = body.tickets_moved;
  out.replaceChildren(...[
    el("p", { "data-what-if": "ok" }, `${body.proposed_version} against ${body.active_version}: ${body.changed_cells_total} changed cells (outlined), ${moved.length} of ${body.tickets_considered} tickets of the last day would have gone elsewhere.`),
    el("div", { class: "grid", id: "what-if-grid" }, gridView(body.grid, changed)),
    el("h2", {}, "Where the last day's tickets would have gone"),
    el("table", {},
      el("tr", {}, el("th", {}, "region"), el("th", {}, "active rules"), el("th", {}, "proposed")),
      [...new Set([...Object.keys(body.by_region_active), ...Object.keys(body.by_region_proposed)])].sort().map((r) =>
        el("tr", {}, el("td", {}, r), el("td", {}, body.by_region_active[r] || 0), el("td", {}, body.by_region_proposed[r] || 0)))),
    moved.length ? el("table", { "data-moved": moved.length },
      el("tr", {}, el("th", {}, "ticket"), el("th", {}, "created"), el("th", {}, "active"), el("th", {}, "proposed")),
      moved.map((m) => el("tr", {},
        el("td", {}, el("a", { href: "/journey/" + m.ticket_id, title: m.ticket_id }, shortId(m.ticket_id))),
        el("td", {}, time(m.created_at)),
        el("td", {}, `${m.active || "none"} (${m.active_reason.replaceAll("_", " ")})`),
        el("td", {}, `${m.proposed || "none"} (${m.proposed_reason.replaceAll("_", " ")})`)))) : null,
    body.ticket_errors.length ? el("p", { class: "error" }, "could not list: " + body.ticket_errors.join("; ")) : null,
  ].filter(Boolean));
}

// ---- Journey ----

async function startJourney() {
  live(true, "");
  const id = decodeURIComponent(location.pathname.replace(/^\/journey\//, ""));
  byId("ticket-id").textContent = id;
  const { ok, body } = await getJson("/api/journey/" + encodeURIComponent(id));
  if (!ok) { showError("journey-error", body.error); document.body.dataset.ready = "true"; return; }
  byId("ticket-summary").textContent = `${body.subject || ""} · ${body.status || "?"} · owner ${body.owner_region || "?"} at epoch ${body.epoch ?? "?"}`;
  byId("trace").replaceChildren("trace id ", el("code", {}, body.trace_id), " ",
    body.trace_url ? el("a", { href: body.trace_url, target: "_blank", rel: "noopener" }, "open in the tracing UI") : "(no tracing UI configured)",
    el("br"), "asked: ", Object.entries(body.regions).map(([r, h]) => h.error ? `${r} (unreachable: ${h.error})` : `${r} (${h.events} events)`).join(" · "));
  byId("steps").replaceChildren(...body.steps.map((step) => {
    const p = step.payload || {};
    let text = step.kind.replaceAll("_", " ");
    let extra = null;
    if (step.kind.startsWith("handoff") || step.kind === "taken_over") { const [t, b] = describe(step); text = t; extra = b; }
    else if (step.kind === "ticket_created") text = "created: " + ((p.ticket && p.ticket.subject) || "");
    else if (step.kind === "note_added" && p.note) {
      // Internal notes carry no visibility field; replies and customer messages do.
      const vis = p.note.visibility || "internal";
      text = { public: "reply to the customer", inbound: "customer message" }[vis] || "note added";
      extra = el("p", { class: "note", "data-visibility": vis }, p.note.auto ? el("span", { class: "badge warn" }, "auto") : null, " ", p.note.body, el("span", { class: "muted" }, " — " + p.note.author));
    }
    else if (step.kind === "ticket_updated" && p.changes) text = "updated: " + Object.keys(p.changes).filter((k) => k !== "epoch").join(", ");
    return el("li", { "data-kind": step.kind },
      el("div", { class: "head" }, el("span", { class: "kind " + step.kind }, text),
        el("span", { class: "muted" }, time(step.at) + " · " + step.origin_region + "#" + step.origin_seq + " · epoch " + step.epoch),
        step.actor ? el("span", { class: "actor", "data-actor": step.actor }, "by " + step.actor) : null,
        step.missing_in.length ? el("span", { class: "badge warn", "data-missing-in": step.missing_in.join(" ") }, "not yet in " + step.missing_in.join(", ")) : null),
      extra);
  }));
  byId("conflicts").replaceChildren(...(body.conflicts.length ? body.conflicts.map((c) =>
    el("li", {}, `${c.origin_region}#${c.origin_seq}: stale epoch ${c.stale_epoch} (current ${c.current_epoch}), seen in ${c.seen_in}: `, el("code", {}, c.changes_json)))
    : [el("li", { class: "muted" }, "none")]));
  document.body.dataset.ready = "true";
}

// ---- Login ----

// `meridian up` prints /login#token=…: a fragment never reaches the server
// or its logs. Take the token out of the address bar and history at once,
// then post it as if pasted.
function startLogin() {
  const form = byId("login-form");
  const next = new URLSearchParams(location.search).get("next");
  if (next) form.elements.next.value = next;
  const match = /^#(?:.*&)?token=([^&]+)/.exec(location.hash);
  if (match) {
    history.replaceState(null, "", location.pathname + location.search);
    form.elements.token.value = decodeURIComponent(match[1]);
    form.submit();
    return;
  }
  document.body.dataset.ready = "true";
}

const page = document.body.dataset.page;
for (const link of document.querySelectorAll("[data-nav]")) link.classList.toggle("current", link.dataset.nav === page);
if (page !== "login") showSession();
({ now: startNow, handoffs: startHandoffs, rules: startRules, journey: startJourney, login: startLogin })[page]?.();
