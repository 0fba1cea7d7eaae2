// The btrfsd Cockpit page: a client of org.btrfsd1 on the system bus (docs/api.md).
// Every call is made as the logged-in user (no superuser channel), so polkit decides;
// a denial shows Cockpit's "administrative access" message, any other error btrfsd's
// own sentence (made for people). No build step: plain ES module on ../base1/cockpit.js.

/* global cockpit */

const BUS_NAME = "org.btrfsd1";
const ROOT = "/org/btrfsd1";
const MANAGER = "org.btrfsd1.Manager";
const FILESYSTEM = "org.btrfsd1.Filesystem";
const JOB = "org.btrfsd1.Job";
const DENIED = new Set([
    "org.freedesktop.DBus.Error.AccessDenied",
    "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
]);
// "i": the call carries ALLOW_INTERACTIVE_AUTHORIZATION, so a logged-in admin whose
// session has Cockpit's polkit agent is asked for a password instead of refused.
const CALL_OPTIONS = { flags: "i" };

const client = cockpit.dbus(BUS_NAME, { bus: "system" });
const filesystems = client.proxies(FILESYSTEM, ROOT);
const jobs = client.proxies(JOB, ROOT);
const fsState = new Map(); // object path -> {card, mount, subvols, quota, last, busy}
let schedules = {};
// index.html#/<uuid> shows that one filesystem (its jobs and schedules) only
const onlyUuid = cockpit.location.path[0] || "";
const wanted = fsPath => !onlyUuid || (filesystems[fsPath] && filesystems[fsPath].Uuid === onlyUuid);

// -- helpers --------------------------------------------------------------------------

function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
        if (v === undefined || v === null || v === false) continue;
        if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
        else if (k === "class") el.className = v;
        else if (k === "dataset") Object.assign(el.dataset, v);
        else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
        if (c === undefined || c === null || c === false) continue;
        el.append(c instanceof Node ? c : String(c));
    }
    return el;
}

// replaceChildren without the null/false/0 placeholders of conditional parts
function fill(el, ...children) {
    el.replaceChildren(...children.flat().filter(c => c !== null && c !== undefined && c !== false && c !== 0 && c !== ""));
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
export function formatBytes(n) {
    n = Number(n) || 0;
    let i = 0;
    while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++ }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + UNITS[i];
}

// "20G", "512M", "1.5 TiB", "1000" (bytes) -> bytes; NaN when unreadable
export function parseSize(text) {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$/i.exec(text || "");
    if (!m) return NaN;
    const power = " kmgtp".indexOf((m[2] || " ").toLowerCase());
    return Math.round(parseFloat(m[1]) * 1024 ** power);
}

function formatTime(us) {
    if (!us) return "–";
    return new Date(Number(us) / 1000).toLocaleString();
}

function percent(part, whole) {
    return whole > 0 ? Math.min(100, Math.max(0, (100 * part) / whole)) : 0;
}

function progressBar(value, { label, id, status } = {}) {
    const pct = Math.round(value * 10) / 10;
    const bar = h("div", { class: "progress-fill" });
    bar.style.width = `${pct}%`; // through CSSOM: Cockpit's content policy drops style="" attributes
    return h("div", { class: "progress" + (status ? " progress-" + status : ""), id },
             h("div", { class: "progress-bar", role: "progressbar", "aria-valuemin": "0",
                        "aria-valuemax": "100", "aria-valuenow": String(pct),
                        "aria-label": label || "progress" },
               bar),
             h("span", { class: "progress-text" }, `${pct.toFixed(pct < 10 ? 1 : 0)}%`));
}

function variantValue(v) {
    return v && typeof v === "object" && "v" in v ? v.v : v;
}

// -- errors and alerts ----------------------------------------------------------------

function describeError(err) {
    const name = (err && err.name) || "";
    const text = (err && err.message) || cockpit.message(err);
    if (DENIED.has(name) || (err && err.problem === "access-denied"))
        return { admin: true, title: "Administrative access required", text };
    return { admin: false, title: "", text };
}

function showAlert(kind, title, text, { id } = {}) {
    const alerts = document.getElementById("alerts");
    const el = h("div", { class: `alert alert-${kind}`, role: "alert", id },
                 h("div", { class: "alert-body" },
                   title && h("strong", { class: "alert-title" }, title),
                   h("p", {}, text)),
                 h("button", { class: "btn btn-plain alert-close", "aria-label": "Close",
                               onclick: () => el.remove() }, "×"));
    alerts.append(el);
    return el;
}

function showError(err, what) {
    const d = describeError(err);
    if (d.admin) {
        const extra = "You are not allowed to " + what + " (PolicyKit refused it for your user). " +
            "Ask an administrator, or log in as a user that btrfsd's PolicyKit rules allow.";
        showAlert("warning", d.title, extra + (d.text ? " " + d.text : ""),
                  { id: "alert-access" });
    } else {
        showAlert("danger", "Could not " + what, d.text);
    }
}

// One method call as the logged-in user; errors become alerts, never exceptions.
async function call(path, iface, method, args, what) {
    try {
        return await client.call(path, iface, method, args, CALL_OPTIONS);
    } catch (err) {
        showError(err, what);
        return null;
    }
}

window.addEventListener("unhandledrejection", ev => {
    ev.preventDefault();
    showError(ev.reason, "finish that");
});

// -- theme: follow Cockpit's light/dark setting -----------------------------------------

function applyTheme() {
    let style = "auto";
    try { style = window.localStorage.getItem("shell:style") || "auto" } catch (e) { /* none */ }
    const dark = style === "dark" ||
        (style === "auto" && window.matchMedia("(prefers-color-scheme: dark)").matches);
    for (const cls of ["pf-theme-dark", "pf-v5-theme-dark"])
        document.documentElement.classList.toggle(cls, dark);
}
applyTheme();
window.addEventListener("storage", ev => { if (ev.key === "shell:style") applyTheme() });
window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", applyTheme);

// -- filesystems ------------------------------------------------------------------------

// The mount point closest to the top level and the subvolume mounted there, and every
// mounted subvolume (path relative to the top level -> mount point): a rollback of one of
// those takes effect at the next mount (docs/api.md).
async function findMount(fs) {
    let best = null;
    const mounted = new Map();
    for (const mp of fs.MountPoints || []) {
        try {
            const [, sub] = await client.call(ROOT, MANAGER, "ResolvePath", [mp, {}]);
            const prefix = sub.replace(/^\/+|\/+$/g, "");
            if (!mounted.has(prefix)) mounted.set(prefix, mp);
            if (!best || prefix.length < best.prefix.length) best = { mp, prefix };
        } catch (e) { /* not visible to this user: try the next */ }
    }
    return { ...(best || { mp: (fs.MountPoints || [])[0] || "", prefix: "" }), mounted };
}

// The absolute path of a subvolume (path relative to the top level); null if it is not
// below the mounted subvolume.
function absolutePath(st, rel) {
    const { mp, prefix } = st.mount;
    let inner = rel;
    if (prefix) {
        if (rel === prefix) inner = "";
        else if (rel.startsWith(prefix + "/")) inner = rel.slice(prefix.length + 1);
        else return null;
    }
    if (!inner) return mp;
    return mp === "/" ? "/" + inner : mp + "/" + inner;
}

function fsTitle(fs) {
    return fs.Label || (fs.MountPoints && fs.MountPoints[0]) || fs.Uuid;
}

function renderFilesystem(path) {
    const fs = filesystems[path];
    const st = fsState.get(path);
    if (!fs || !st) return;
    const header = st.card.querySelector(".fs-header");
    const used = Number(fs.UsedBytes), total = Number(fs.TotalBytes);
    fill(header, 
        h("div", { class: "fs-title" },
          h("h2", {}, fsTitle(fs)),
          h("span", { class: "muted" }, (fs.MountPoints || []).join(", ")),
          h("span", { class: "muted mono" }, fs.Uuid)),
        h("div", { class: "fs-space" },
          h("div", { class: "space-label" },
            `${formatBytes(used)} used of ${formatBytes(total)} (${formatBytes(fs.FreeBytes)} free)`),
          progressBar(percent(used, total), { label: "space used" })),
        h("div", { class: "fs-meta muted" },
          "Devices: " + (fs.Devices || []).join(", "),
          " · Quotas: " + (fs.QuotaEnabled ? (fs.QuotaMode === "squota" ? "simple" : "on") : "off")));
    renderLast(path);
}

function renderLast(path) {
    const st = fsState.get(path);
    const box = st.card.querySelector(".fs-last");
    const scrub = st.last && st.last.scrub;
    if (!scrub) {
        fill(box, h("span", { class: "muted" }, "No scrub has run yet."));
        return;
    }
    const v = k => variantValue(scrub[k]);
    const details = v("details") || {};
    const errors = ["read_errors", "csum_errors", "verify_errors", "super_errors",
                    "uncorrectable_errors"]
        .map(k => [k, Number(variantValue(details[k]) || 0)]).filter(([, n]) => n > 0);
    const corrected = Number(variantValue(details.corrected_errors) || 0);
    fill(box, 
        h("strong", {}, "Last scrub: "),
        h("span", { class: "last-scrub" }, `${v("state")}, ${formatTime(v("end_time"))} — ${v("message") || ""}`),
        h("span", { class: errors.length ? "badge badge-danger" : "badge badge-success" },
          errors.length ? errors.map(([k, n]) => `${k.replace(/_/g, " ")}: ${n}`).join(", ")
                        : "no errors"),
        corrected ? h("span", { class: "badge badge-warning" }, `corrected: ${corrected}`) : null);
}

async function loadSubvolumes(path) {
    const st = fsState.get(path);
    const reply = await call(path, FILESYSTEM, "ListSubvolumes", [{}], "list the subvolumes");
    if (reply) {
        const cols = reply[0];
        st.subvols = cols[0].map((_, i) => ({
            id: cols[0][i], parent: cols[1][i], path: cols[2][i], uuid: cols[3][i],
            parentUuid: cols[4][i], generation: cols[6][i], otime: cols[8][i],
            readOnly: cols[9][i], snapshot: cols[10][i], referenced: cols[11][i],
            exclusive: cols[12][i], maxReferenced: cols[13][i], maxExclusive: cols[14][i],
        }));
    }
    renderSubvolumes(path);
}

async function loadQuota(path) {
    const st = fsState.get(path);
    const fs = filesystems[path];
    if (!fs.QuotaEnabled) {
        st.quota = null;
    } else {
        const reply = await client.call(path, FILESYSTEM, "GetQuotaUsage", [{}], CALL_OPTIONS)
            .catch(err => { showError(err, "read the quota usage"); return null });
        if (reply) st.quota = { mode: reply[0], inconsistent: reply[1], groups: reply[2] };
    }
    renderQuota(path);
}

async function loadLast(path) {
    const st = fsState.get(path);
    try {
        st.last = (await client.call(path, FILESYSTEM, "GetLastResults", [{}]))[0];
    } catch (e) { st.last = null }
    renderLast(path);
}

// Where a read-only subvolume belongs: the writable subvolume it was (directly or through
// other snapshots) taken of; after a rollback that one is a copy of a snapshot and the old
// state a read-only subvolume in its snapshot directory, so else the writable subvolume
// whose tree holds it; else its nearest source whatever it is (a source made read-only).
function homeOf(sv, byUuid, byPath) {
    if (!sv.readOnly) return null;
    const chain = [];
    for (let p = byUuid.get(sv.parentUuid); p && !chain.includes(p); p = byUuid.get(p.parentUuid)) {
        if (!p.readOnly) return p;
        chain.push(p);
    }
    const parts = sv.path.split("/");
    for (let i = parts.length - 1; i > 0; i--) {
        const up = byPath.get(parts.slice(0, i).join("/"));
        if (up && !up.readOnly) return up;
    }
    return chain[0] || null;
}

function subvolumeRow(path, sv, depth, home) {
    const st = fsState.get(path);
    const abs = absolutePath(st, sv.path);
    const name = sv.path;
    const actions = [];
    if (abs) {
        if (!sv.snapshot || !sv.readOnly) {
            actions.push(h("button", { class: "btn btn-secondary btn-sm", "data-action": "snapshot",
                                       onclick: () => snapshotNow(path, abs) }, "Snapshot now"));
        }
        if (sv.readOnly && home) {
            actions.push(h("button", { class: "btn btn-secondary btn-sm", "data-action": "compare",
                                       onclick: () => openCompare(path, sv, home) }, "Compare"));
            actions.push(h("button", { class: "btn btn-link btn-sm", "data-action": "restore",
                                       onclick: () => restoreDialog(path, sv, home, []) }, "Restore…"));
            if (!home.readOnly && absolutePath(st, home.path))
                actions.push(h("button", { class: "btn btn-link btn-sm", "data-action": "rollback",
                                           onclick: () => confirmRollback(path, sv, home) },
                               "Roll back to this snapshot…"));
        }
        actions.push(h("button", { class: "btn btn-danger-link btn-sm", "data-action": "delete",
                                   onclick: () => confirmDelete(path, abs) }, "Delete"));
    }
    const toggle = h("label", { class: "switch" },
                     h("input", { type: "checkbox", checked: sv.readOnly, disabled: !abs,
                                  "aria-label": `read-only ${name}`,
                                  onchange: ev => setReadOnly(path, abs, ev.target.checked, ev.target) }),
                     h("span", { class: "switch-toggle" }),
                     h("span", { class: "switch-label" }, "Read-only"));
    return h("tr", { class: depth ? "snapshot-row" : "subvolume-row", dataset: { path: name } },
             h("td", { class: "name" + (depth ? " indent" : "") },
               depth ? h("span", { class: "snap-icon", "aria-hidden": "true" }, "↳ ") : null,
               h("span", { class: "mono" }, name),
               sv.snapshot ? h("span", { class: "badge" }, "snapshot") : null),
             h("td", {}, String(sv.id)),
             h("td", {}, formatTime(sv.otime)),
             h("td", {}, toggle),
             h("td", { class: "actions" }, actions));
}

function renderSubvolumes(path) {
    const st = fsState.get(path);
    const box = st.card.querySelector(".fs-subvolumes");
    if (!st.subvols) { fill(box, h("p", { class: "muted" }, "Loading…")); return }
    const byUuid = new Map(st.subvols.map(sv => [sv.uuid, sv]));
    const byPath = new Map(st.subvols.map(sv => [sv.path, sv]));
    const homes = new Map();
    const children = new Map();
    const top = [];
    for (const sv of st.subvols) {
        const home = homeOf(sv, byUuid, byPath);
        if (home) {
            homes.set(sv.uuid, home);
            if (!children.has(home.uuid)) children.set(home.uuid, []);
            children.get(home.uuid).push(sv);
        } else {
            top.push(sv);
        }
    }
    top.sort((a, b) => a.path.localeCompare(b.path));
    const rows = [];
    const visit = (sv, depth, seen) => {
        if (seen.has(sv.uuid)) return;
        seen.add(sv.uuid);
        rows.push(subvolumeRow(path, sv, depth, homes.get(sv.uuid)));
        const snaps = (children.get(sv.uuid) || []).sort((a, b) => a.otime - b.otime);
        for (const s of snaps) visit(s, depth + 1, seen);
    };
    const seen = new Set();
    for (const sv of top) visit(sv, 0, seen);
    for (const sv of st.subvols) visit(sv, 0, seen); // a cycle of read-only ones: still listed
    st.homes = homes;
    fill(box, 
        st.subvols.length === 0
            ? h("p", { class: "muted" }, "No subvolumes yet.")
            : h("table", { class: "table" },
                h("thead", {}, h("tr", {}, ["Subvolume", "ID", "Created", "Flags", ""].map(t => h("th", {}, t)))),
                h("tbody", {}, rows)));
}

function renderQuota(path) {
    const st = fsState.get(path);
    const fs = filesystems[path];
    const box = st.card.querySelector(".fs-quota");
    if (!fs.QuotaEnabled) {
        fill(box, 
            h("p", { class: "muted" }, "Quotas are off on this filesystem."),
            h("button", { class: "btn btn-secondary", "data-action": "enable-quota",
                          onclick: async () => {
                              const r = await call(path, FILESYSTEM, "EnableQuota", [{}], "enable quotas");
                              if (r && r[0]) showAlert("info", "Quotas enabled", r[0]);
                          } }, "Enable quotas"));
        return;
    }
    if (!st.quota) { fill(box, h("p", { class: "muted" }, "Loading…")); return }
    const rows = st.quota.groups.filter(g => g[1] !== "").map(([id, sub, rfer, excl, maxRfer, maxExcl]) => {
        const abs = absolutePath(st, sub);
        const limit = Number(maxRfer) || 0;
        const pct = limit ? percent(rfer, limit) : 0;
        const status = limit ? (pct >= 100 ? "danger" : pct >= 80 ? "warning" : "") : "";
        return h("tr", { class: "quota-row", dataset: { path: sub } },
                 h("td", { class: "mono" }, sub),
                 h("td", {}, formatBytes(rfer)),
                 h("td", {}, formatBytes(excl)),
                 h("td", { class: "limit" },
                   limit ? formatBytes(limit) : "none",
                   maxExcl && Number(maxExcl) ? h("span", { class: "muted" }, ` (exclusive ${formatBytes(maxExcl)})`) : null),
                 h("td", { class: "usage" }, limit ? progressBar(pct, { label: `quota ${sub}`, status }) : null),
                 h("td", { class: "actions" },
                   abs && h("button", { class: "btn btn-secondary btn-sm", "data-action": "edit-limit",
                                        onclick: () => editLimit(path, abs, sub, maxRfer, maxExcl) }, "Edit limit"),
                   abs && (Number(maxRfer) || Number(maxExcl)) ? h("button", {
                       class: "btn btn-link btn-sm", "data-action": "clear-limit",
                       onclick: () => setLimit(path, abs, 0, 0, "clear the limit") }, "Clear") : null));
    });
    fill(box, 
        st.quota.inconsistent ? h("div", { class: "alert alert-warning inline" },
                                  h("p", {}, "Quota numbers are inconsistent until a rescan finishes.")) : null,
        h("table", { class: "table" },
          h("thead", {}, h("tr", {}, ["Subvolume", "Referenced", "Exclusive", "Limit", "Usage", ""].map(t => h("th", {}, t)))),
          h("tbody", {}, rows)));
}

// -- actions ---------------------------------------------------------------------------

async function snapshotNow(path, source) {
    const r = await call(path, FILESYSTEM, "CreateSnapshot", [source, "", {}], `snapshot ${source}`);
    if (r) showAlert("success", "Snapshot created", r[0]);
    await refreshFs(path);
}

async function setReadOnly(path, abs, readOnly, input) {
    const r = await call(path, FILESYSTEM, "SetReadOnly", [abs, readOnly, {}],
                         `make ${abs} ${readOnly ? "read-only" : "writable"}`);
    if (!r && input) input.checked = !readOnly;
    await loadSubvolumes(path);
}

function modal(title, body, confirmLabel, danger) {
    return new Promise(resolve => {
        const dlg = h("dialog", { class: "modal" },
                      h("h3", {}, title), body,
                      h("div", { class: "modal-actions" },
                        h("button", { class: danger ? "btn btn-danger" : "btn btn-primary", "data-action": "confirm",
                                      onclick: () => { dlg.close("ok") } }, confirmLabel),
                        h("button", { class: "btn btn-link", "data-action": "cancel",
                                      onclick: () => { dlg.close("cancel") } }, "Cancel")));
        dlg.addEventListener("close", () => { dlg.remove(); resolve(dlg.returnValue === "ok") });
        document.body.append(dlg);
        dlg.showModal();
    });
}

async function confirmDelete(path, abs) {
    const recursive = h("input", { type: "checkbox", id: "delete-recursive" });
    const ok = await modal(`Delete ${abs}?`,
                           h("div", {}, h("p", {}, "The subvolume and all its files are deleted. This cannot be undone."),
                             h("label", { class: "check" }, recursive, " Also delete subvolumes nested inside it")),
                           "Delete", true);
    if (!ok) return;
    const r = await call(path, FILESYSTEM, "DeleteSubvolume",
                         [abs, { recursive: cockpit.variant("b", recursive.checked) }], `delete ${abs}`);
    if (r) showAlert("success", "Deleted", abs);
    await refreshFs(path);
}

async function editLimit(path, abs, sub, maxRfer, maxExcl) {
    const rfer = h("input", { type: "text", id: "limit-referenced", class: "form-input",
                              value: Number(maxRfer) ? formatBytes(maxRfer).replace(/ |iB/g, "") : "",
                              placeholder: "e.g. 20G (empty: none)" });
    const excl = h("input", { type: "text", id: "limit-exclusive", class: "form-input",
                              value: Number(maxExcl) ? formatBytes(maxExcl).replace(/ |iB/g, "") : "",
                              placeholder: "empty: none" });
    const ok = await modal(`Quota limit for ${sub}`,
                           h("div", { class: "form" },
                             h("label", {}, "Referenced limit", rfer),
                             h("label", {}, "Exclusive limit", excl)),
                           "Set limit", false);
    if (!ok) return;
    const r = rfer.value.trim() ? parseSize(rfer.value) : 0;
    const e = excl.value.trim() ? parseSize(excl.value) : 0;
    if (Number.isNaN(r) || Number.isNaN(e)) {
        showAlert("danger", "Could not set the limit", "Write a size such as 512M, 20G or 1.5T.");
        return;
    }
    await setLimit(path, abs, r, e, `set the quota limit of ${abs}`);
}

async function setLimit(path, abs, referenced, exclusive, what) {
    await call(path, FILESYSTEM, "SetQuotaLimit", [abs, referenced, exclusive, {}], what);
    await loadQuota(path);
    await loadSubvolumes(path);
}

async function createSubvolume(path, input) {
    const st = fsState.get(path);
    const name = input.value.trim().replace(/^\/+/, "");
    if (!name) return;
    const abs = st.mount.mp === "/" ? "/" + name : st.mount.mp + "/" + name;
    const r = await call(path, FILESYSTEM, "CreateSubvolume", [abs, {}], `create ${abs}`);
    if (r) { input.value = ""; showAlert("success", "Subvolume created", r[0]) }
    await refreshFs(path);
}

async function startScrub(path, limitInput) {
    const opts = {};
    const limit = limitInput.value.trim();
    if (limit) {
        const perSec = parseSize(limit);
        if (Number.isNaN(perSec)) {
            showAlert("danger", "Could not start the scrub", "Write a speed such as 100M (per second and device).");
            return;
        }
        opts.limit = cockpit.variant("t", perSec);
    }
    await call(path, FILESYSTEM, "StartScrub", [opts], "start a scrub");
}

async function startBalance(path) {
    await call(path, FILESYSTEM, "StartBalance",
               [{ data_usage: cockpit.variant("u", 10), metadata_usage: cockpit.variant("u", 5) }],
               "start a balance");
}

// -- compare, restore, rollback ---------------------------------------------------------

const COMPARE_PAGE = 200; // rows per CompareSnapshots call; "Load more" asks for the next
const CHANGE_KINDS = ["added", "deleted", "modified", "metadata", "renamed", "linked"];
const CHANGE_BADGE = { added: "badge-success", deleted: "badge-danger", modified: "badge-warning",
                       metadata: "", renamed: "badge-info", linked: "badge-info" };

// The read-only snapshots listed under the same subvolume.
function siblingSnapshots(st, home) {
    // by UUID: a re-listing makes new objects while the panel keeps the ones it opened with
    return st.subvols.filter(s => s.readOnly && st.homes && st.homes.get(s.uuid)?.uuid === home.uuid);
}

function openCompare(path, sv, home) {
    const st = fsState.get(path);
    st.compare = { snap: sv, home, other: null, total: 0, rows: [], loading: true, failed: false };
    loadCompare(path, 0);
    st.card.querySelector(".fs-compare").scrollIntoView({ block: "nearest" });
}

function closeCompare(path) {
    const st = fsState.get(path);
    st.compare = null;
    renderCompare(path);
}

// The pair compared: old is the older snapshot, new the newer one or "" (the live subvolume).
function comparePair(st, c) {
    if (!c.other) return { old: c.snap, new: null };
    return c.other.otime < c.snap.otime || (c.other.otime === c.snap.otime && c.other.id < c.snap.id)
        ? { old: c.other, new: c.snap } : { old: c.snap, new: c.other };
}

async function loadCompare(path, offset) {
    const st = fsState.get(path);
    const c = st.compare;
    if (!c) return;
    c.loading = true;
    renderCompare(path);
    const pair = comparePair(st, c);
    const oldAbs = absolutePath(st, pair.old.path);
    const newAbs = pair.new ? absolutePath(st, pair.new.path) : "";
    const r = await call(path, FILESYSTEM, "CompareSnapshots",
                         [oldAbs, newAbs, { offset: cockpit.variant("t", offset),
                                            limit: cockpit.variant("t", COMPARE_PAGE) }],
                         `compare ${oldAbs} with ${newAbs || "the live subvolume"}`);
    if (st.compare !== c) return; // closed or replaced meanwhile
    c.loading = false;
    if (!r) {
        c.failed = true;
    } else {
        const [total, cols] = r;
        const rows = cols[0].map((_, i) => ({
            path: cols[0][i], change: cols[1][i], oldPath: cols[2][i], type: cols[3][i],
            size: cols[4][i], data: cols[5][i], meta: cols[6][i],
        }));
        c.failed = false;
        c.total = Number(total);
        c.rows = offset ? c.rows.concat(rows) : rows;
    }
    renderCompare(path);
}

// The name a compare row has in the older snapshot (what a restore takes), or "" if none.
function restorableName(row) {
    if (row.change === "added" || row.change === "linked") return "";
    return row.change === "renamed" ? row.oldPath : row.path;
}

function renderCompare(path) {
    const st = fsState.get(path);
    const box = st.card.querySelector(".fs-compare");
    const c = st.compare;
    if (!c) { fill(box); return }
    const pair = comparePair(st, c);
    const others = siblingSnapshots(st, c.home).filter(s => s.uuid !== c.snap.uuid);
    const select = h("select", { class: "form-input form-input-select", id: "compare-with",
                                 "aria-label": "compare with",
                                 onchange: ev => {
                                     c.other = others.find(s => s.uuid === ev.target.value) || null;
                                     c.rows = []; c.total = 0;
                                     loadCompare(path, 0);
                                 } },
                     h("option", { value: "", selected: !c.other }, `${c.home.path} (live)`),
                     others.map(s => h("option", { value: s.uuid, selected: c.other?.uuid === s.uuid }, s.path)));
    const counts = new Map(CHANGE_KINDS.map(k => [k, 0]));
    for (const row of c.rows) counts.set(row.change, (counts.get(row.change) || 0) + 1);
    const all = c.rows.length >= c.total;
    const checks = [];
    const rows = c.rows.map(row => {
        const name = restorableName(row);
        const check = h("input", { type: "checkbox", disabled: !name, dataset: { name },
                                   "aria-label": `select ${row.path}`,
                                   title: name ? null : "not in the older snapshot" });
        if (name) checks.push(check);
        return h("tr", { class: "change-row", dataset: { path: row.path, change: row.change } },
                 h("td", { class: "select" }, check),
                 h("td", { class: "mono" }, row.path),
                 h("td", {}, h("span", { class: "badge badge-change " + (CHANGE_BADGE[row.change] || "") },
                               row.change)),
                 h("td", {}, row.type),
                 h("td", { class: "num" }, row.type === "file" || row.type === "symlink" ? formatBytes(row.size) : ""),
                 h("td", { class: "mono muted" }, row.oldPath || ""));
    });
    const selected = () => checks.filter(ch => ch.checked).map(ch => ch.dataset.name);
    fill(box, h("div", { class: "compare-panel", id: "compare-panel" },
        h("div", { class: "compare-head" },
          h("h3", {}, "Changes"),
          h("span", { class: "inline-label" }, "from ", h("span", { class: "mono compare-old" }, pair.old.path),
            " to ", select),
          h("button", { class: "btn btn-plain alert-close", "aria-label": "Close", "data-action": "close-compare",
                        onclick: () => closeCompare(path) }, "×")),
        c.failed && !c.rows.length
            ? h("p", { class: "muted" }, "The comparison could not be made (see the message above).")
            : c.loading && !c.rows.length ? h("p", { class: "muted" }, "Comparing…")
            : [h("div", { class: "compare-counts" },
                 h("strong", { class: "compare-total" },
                   c.total === 1 ? "1 changed path" : `${c.total} changed paths`),
                 all ? null : h("span", { class: "muted" }, ` (${c.rows.length} loaded; counts of those)`),
                 CHANGE_KINDS.filter(k => counts.get(k)).map(k =>
                     h("span", { class: "badge badge-change " + (CHANGE_BADGE[k] || ""), dataset: { kind: k } },
                       `${k} ${counts.get(k)}`))),
               c.rows.length ? h("table", { class: "table table-compact compare-table" },
                   h("thead", {}, h("tr", {}, ["", "Path", "Change", "Type", "Size", "Was at"].map(t =>
                       h("th", { class: t === "Size" ? "num" : null }, t)))),
                   h("tbody", {}, rows)) : h("p", { class: "muted" }, "Nothing changed."),
               h("div", { class: "toolbar" },
                 all ? null : h("button", { class: "btn btn-secondary btn-sm", "data-action": "compare-more",
                                            disabled: c.loading,
                                            onclick: () => loadCompare(path, c.rows.length) },
                                `Load ${Math.min(COMPARE_PAGE, c.total - c.rows.length)} more`),
                 h("button", { class: "btn btn-primary btn-sm", "data-action": "restore-selected",
                               onclick: () => restoreDialog(path, pair.old, c.home, selected()) },
                   "Restore…"),
                 h("span", { class: "muted" }, `Restore takes the selected paths from ${pair.old.path}.`))]));
}

function radio(name, value, checked, label, ...extra) {
    return h("label", { class: "check" },
             h("input", { type: "radio", name, value, checked, id: `${name}-${value}` }), label, ...extra);
}

async function restoreDialog(path, snap, home, names) {
    const st = fsState.get(path);
    const snapAbs = absolutePath(st, snap.path);
    const homeAbs = absolutePath(st, home.path) || home.path;
    const pathsInput = h("textarea", { class: "form-input", id: "restore-paths", rows: "4",
                                       placeholder: "one path per line, relative to the snapshot, e.g. etc/app.conf" });
    pathsInput.value = names.join("\n");
    const destInput = h("input", { type: "text", class: "form-input", id: "restore-destination",
                                   placeholder: "/absolute/directory", "aria-label": "restore into directory",
                                   onfocus: () => { body.querySelector("#restore-dest-dir").checked = true } });
    const body = h("div", { class: "form" },
                   h("p", {}, "From the snapshot ", h("span", { class: "mono" }, snapAbs), "."),
                   h("label", {}, "Paths", pathsInput),
                   h("fieldset", {},
                     h("legend", {}, "Restore to"),
                     radio("restore-dest", "original", true, "their original place in ",
                           h("span", { class: "mono" }, homeAbs)),
                     radio("restore-dest", "dir", false, "this directory: ", destInput)),
                   h("fieldset", {},
                     h("legend", {}, "Something already there"),
                     radio("restore-way", "aside", true, "is moved aside: renamed to ",
                           h("span", { class: "mono" }, "NAME.before-restore-<UTC time>"), " beside it"),
                     radio("restore-way", "overwrite", false, "is overwritten (deleted)")));
    const ok = await modal("Restore files", body, "Restore", false);
    if (!ok) return;
    const paths = pathsInput.value.split("\n").map(p => p.trim()).filter(Boolean);
    if (!paths.length) {
        showAlert("danger", "Could not restore", "Name at least one path to restore.");
        return;
    }
    const opts = {};
    if (body.querySelector("#restore-dest-dir").checked) {
        const dest = destInput.value.trim();
        if (!dest.startsWith("/")) {
            showAlert("danger", "Could not restore", "Write the destination as an absolute directory path.");
            return;
        }
        opts.destination = cockpit.variant("s", dest);
    }
    if (body.querySelector("#restore-way-overwrite").checked) opts.overwrite = cockpit.variant("b", true);
    const r = await call(path, FILESYSTEM, "RestoreFiles", [snapAbs, paths, opts],
                         `restore from ${snapAbs}`);
    if (r) {
        showAlert("info", "Restore started",
                  `${paths.length === 1 ? paths[0] : paths.length + " paths"} from ${snapAbs}; ` +
                  "its progress is in the jobs list.");
    }
}

async function confirmRollback(path, snap, home) {
    const st = fsState.get(path);
    const fs = filesystems[path];
    const snapAbs = absolutePath(st, snap.path);
    const target = absolutePath(st, home.path);
    const mountedAt = st.mount.mounted.get(home.path);
    const isDefault = fs && Number(fs.DefaultSubvolumeId) === Number(home.id);
    const later = mountedAt || isDefault;
    const laterText = later
        ? `${target} is ${[mountedAt && `mounted at ${mountedAt}`, isDefault && "the default subvolume"]
            .filter(Boolean).join(" and ")}: the rollback makes a copy of the snapshot the new default ` +
          "subvolume, and takes effect at the next mount or boot; until then it stays as it is."
        : "";
    const ok = await modal(`Roll back ${target}?`,
                           h("div", {},
                             h("p", {}, h("span", { class: "mono" }, target), " becomes a writable copy of ",
                               h("span", { class: "mono" }, snapAbs), "."),
                             h("p", {}, "Its current state is kept as a read-only snapshot in its snapshot " +
                                        "directory (its path is shown when done); nothing is deleted."),
                             later ? h("p", { class: "modal-note" }, laterText) : null),
                           "Roll back", true);
    if (!ok) return;
    const r = await call(path, FILESYSTEM, "Rollback", [target, snapAbs, {}], `roll back ${target}`);
    if (r) {
        showAlert("success", "Rolled back",
                  `${target} is now a copy of ${snapAbs}. The state before is kept as ${r[0]}.` +
                  (later ? " It takes effect at the next mount or boot." : ""), { id: "alert-rollback" });
        if (st.compare && st.compare.home.uuid === home.uuid) closeCompare(path);
    }
    await refreshFs(path);
}

async function refreshFs(path) {
    await Promise.all([loadSubvolumes(path), loadQuota(path)]);
}

function addFilesystem(path) {
    if (fsState.has(path) || !wanted(path)) return;
    const nameInput = h("input", { type: "text", class: "form-input", id: "new-subvolume",
                                   placeholder: "name, e.g. data or srv/www", "aria-label": "new subvolume name" });
    const limitInput = h("input", { type: "text", class: "form-input form-input-sm", id: "scrub-limit",
                                    placeholder: "no limit", "aria-label": "scrub speed limit" });
    const card = h("section", { class: "card fs-card", dataset: { path } },
                   h("div", { class: "fs-header" }),
                   h("div", { class: "toolbar" },
                     h("button", { class: "btn btn-secondary", "data-action": "scrub",
                                   onclick: () => startScrub(path, limitInput) }, "Start scrub"),
                     h("label", { class: "inline-label" }, "speed limit per device ", limitInput, " /s"),
                     h("button", { class: "btn btn-secondary", "data-action": "balance",
                                   onclick: () => startBalance(path) }, "Start balance"),
                     h("span", { class: "fs-last" })),
                   h("h3", {}, "Subvolumes and snapshots"),
                   h("form", { class: "toolbar", onsubmit: ev => { ev.preventDefault(); createSubvolume(path, nameInput) } },
                     nameInput,
                     h("button", { class: "btn btn-primary", type: "submit", "data-action": "create" }, "Create subvolume")),
                   h("div", { class: "fs-subvolumes" }),
                   h("div", { class: "fs-compare" }),
                   h("h3", {}, "Quotas"),
                   h("div", { class: "fs-quota" }));
    const st = { card, mount: { mp: "", prefix: "", mounted: new Map() }, subvols: null, quota: null,
                 last: null, compare: null };
    fsState.set(path, st);
    document.getElementById("loading")?.remove();
    document.getElementById("filesystems").append(card);
    renderFilesystem(path);
    renderSubvolumes(path);
    renderQuota(path);
    findMount(filesystems[path]).then(mount => {
        st.mount = mount;
        refreshFs(path);
        loadLast(path);
        loadSchedules();
    });
}

function removeFilesystem(path) {
    const st = fsState.get(path);
    if (st) { st.card.remove(); fsState.delete(path) }
}

filesystems.addEventListener("added", (ev, proxy) => addFilesystem(proxy.path));
filesystems.addEventListener("removed", (ev, proxy) => removeFilesystem(proxy.path));
filesystems.addEventListener("changed", (ev, proxy) => {
    const st = fsState.get(proxy.path);
    if (!st) return;
    const quotaWas = st.quotaEnabled;
    st.quotaEnabled = proxy.QuotaEnabled;
    renderFilesystem(proxy.path);
    if (quotaWas !== undefined && quotaWas !== proxy.QuotaEnabled) loadQuota(proxy.path);
});

// -- jobs ------------------------------------------------------------------------------

const jobRows = new Map();

function jobButtons(path, job) {
    const buttons = [];
    const controllable = !["quota-rescan", "restore"].includes(job.Operation);
    if (controllable && job.State === "running")
        buttons.push(h("button", { class: "btn btn-secondary btn-sm", "data-action": "pause",
                                   onclick: () => call(path, JOB, "Pause", [{}], `pause the ${job.Operation}`) }, "Pause"));
    if (controllable && job.State === "paused")
        buttons.push(h("button", { class: "btn btn-secondary btn-sm", "data-action": "resume",
                                   onclick: () => call(path, JOB, "Resume", [{}], `resume the ${job.Operation}`) }, "Resume"));
    if (job.Cancelable)
        buttons.push(h("button", { class: "btn btn-danger-link btn-sm", "data-action": "cancel",
                                   onclick: () => call(path, JOB, "Cancel", [{}], `cancel the ${job.Operation}`) }, "Cancel"));
    return buttons;
}

function renderJob(path) {
    const job = jobs[path];
    if (!job || !job.valid || !wanted(job.Filesystem)) return;
    let row = jobRows.get(path);
    if (!row) {
        row = h("div", { class: "job", dataset: { path } });
        jobRows.set(path, row);
        // newest first, however the jobs arrived
        const start = Number(job.StartTime) || Infinity;
        row.dataset.start = String(start);
        const box = document.getElementById("jobs");
        const after = [...box.children].find(r => Number(r.dataset.start) < start);
        box.insertBefore(row, after || null);
    }
    const fs = filesystems[job.Filesystem];
    const finished = !["running", "paused"].includes(job.State);
    const status = job.State === "completed" ? (job.Success ? "success" : "warning")
        : ["failed", "interrupted"].includes(job.State) ? "danger" : "";
    const d = job.Details || {};
    const bytes = Number(job.BytesTotal)
        ? `${formatBytes(job.BytesDone)} of ${formatBytes(job.BytesTotal)}` : "";
    const chunks = variantValue(d.chunks_expected)
        ? `${variantValue(d.chunks_completed) || 0} of ${variantValue(d.chunks_expected)} chunks` : "";
    const files = variantValue(d.files_total) !== undefined
        ? `${variantValue(d.files_done) || 0} of ${variantValue(d.files_total)} files` : "";
    const rate = job.State === "running" && Number(job.Rate) ? `${formatBytes(job.Rate)}/s` : "";
    const eta = job.State === "running" && Number(job.ExpectedEndTime)
        ? "ends about " + new Date(Number(job.ExpectedEndTime) / 1000).toLocaleTimeString() : "";
    row.className = "job job-" + job.State;
    fill(row, 
        h("div", { class: "job-head" },
          h("strong", {}, job.Operation), " on ", fs ? fsTitle(fs) : job.Filesystem,
          h("span", { class: "badge job-state badge-" + (status || "info") }, job.State),
          h("span", { class: "muted" }, " started " + formatTime(job.StartTime)),
          h("span", { class: "job-actions" }, jobButtons(path, job))),
        progressBar(100 * Number(job.Progress || 0), { label: `${job.Operation} progress`, status }),
        h("div", { class: "muted job-detail" }, [files, bytes, chunks, rate, eta].filter(Boolean).join(" · ")),
        finished && (job.Message || job.Error)
            ? h("div", { class: "job-message" }, job.Error || job.Message) : null);
    document.getElementById("jobs-section").hidden = false;
    if (finished && fs) loadLast(job.Filesystem);
}

jobs.addEventListener("added", (ev, proxy) => renderJob(proxy.path));
jobs.addEventListener("changed", (ev, proxy) => renderJob(proxy.path));
jobs.addEventListener("removed", (ev, proxy) => {
    jobRows.get(proxy.path)?.remove();
    jobRows.delete(proxy.path);
    if (jobRows.size === 0) document.getElementById("jobs-section").hidden = true;
});

// -- quota warnings --------------------------------------------------------------------

client.subscribe({ interface: FILESYSTEM, member: "QuotaWarning" }, (path, iface, signal, args) => {
    const [sub, , used, limit, level] = args;
    const what = sub || "a subvolume you cannot see";
    showAlert(level === "warning" ? "warning" : "danger", `Quota ${level}`,
              `${what} uses ${formatBytes(used)} of its ${formatBytes(limit)} limit.`);
    if (fsState.has(path)) loadQuota(path);
});

// -- schedules -------------------------------------------------------------------------

async function loadSchedules() {
    try {
        schedules = (await client.call(ROOT, MANAGER, "GetSchedules", [{}]))[0];
    } catch (e) { schedules = {}; return }
    const under = sub => [...fsState.values()].some(st => st.mount.mp &&
        (sub === st.mount.mp || sub.startsWith(st.mount.mp.replace(/\/$/, "") + "/")));
    const names = Object.keys(schedules).filter(n => !onlyUuid || under(variantValue(schedules[n].subvolume) || "")).sort();
    let section = document.getElementById("schedules-section");
    if (!names.length) { section?.remove(); return }
    if (!section) {
        section = h("section", { class: "card", id: "schedules-section" });
        document.getElementById("page").append(section);
    }
    fill(section, 
        h("h2", {}, "Snapshot schedules"),
        h("table", { class: "table" },
          h("thead", {}, h("tr", {}, ["Name", "Subvolume", "Every", "Keeps", ""].map(t => h("th", {}, t)))),
          h("tbody", {}, names.flatMap(name => {
              const spec = schedules[name];
              const v = k => variantValue(spec[k]);
              const keeps = ["keep_last", "hourly", "daily", "weekly", "monthly", "yearly"]
                  .filter(k => Number(v(k))).map(k => `${k.replace("_", " ")} ${v(k)}`).join(", ");
              const explain = h("div", { class: "explain" });
              return [h("tr", {},
                        h("td", {}, name), h("td", { class: "mono" }, v("subvolume") || ""),
                        h("td", {}, v("every") ? `${Math.round(Number(v("every")) / 60)} min` : "–"),
                        h("td", {}, keeps || "–"),
                        h("td", {}, h("button", { class: "btn btn-secondary btn-sm", "data-action": "explain",
                                                  onclick: () => explainSchedule(name, explain) }, "Explain"))),
                      h("tr", {}, h("td", { colspan: "5" }, explain))];
          }))));
}

async function explainSchedule(name, box) {
    const r = await call(ROOT, MANAGER, "ExplainSchedule", [name, {}], `explain schedule ${name}`);
    if (!r) return;
    fill(box, r[0].length === 0 ? h("p", { class: "muted" }, "No snapshots yet.")
        : h("table", { class: "table table-compact" },
            h("tbody", {}, r[0].map(([p, , created, important, keep, reasons]) =>
                h("tr", {},
                  h("td", { class: "mono" }, p), h("td", {}, formatTime(created)),
                  h("td", {}, h("span", { class: "badge " + (keep ? "badge-success" : "badge-warning") },
                                keep ? "kept" : "removed at next cleanup")),
                  h("td", {}, (important ? "important; " : "") + String(reasons).replace(/,(?! )/g, ", ")))))));
}

// -- start ------------------------------------------------------------------------------

async function start() {
    try {
        const [version] = await client.call(ROOT, "org.freedesktop.DBus.Properties", "Get", [MANAGER, "Version"]);
        document.getElementById("version").textContent = "btrfsd " + variantValue(version);
    } catch (err) {
        showError(err, "reach btrfsd");
    }
    try {
        await filesystems.wait();
        await jobs.wait();
    } catch (err) {
        showError(err, "list btrfsd's filesystems and jobs");
    }
    for (const path of Object.keys(filesystems)) addFilesystem(path);
    for (const path of Object.keys(jobs)) renderJob(path);
    if (fsState.size === 0) {
        const loading = document.getElementById("loading");
        if (loading) loading.textContent = "No mounted Btrfs filesystem.";
    }
    document.body.dataset.ready = "1";
}

client.addEventListener("close", (ev, options) => {
    showAlert("danger", "Disconnected from btrfsd", cockpit.message(options));
});

start();
