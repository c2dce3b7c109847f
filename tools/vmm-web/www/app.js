// SPDX-License-Identifier: MIT
// vmm-web's page: log in, the pool grouped by group with bookings counting
// down, book/renew/cancel, a VM's detail and monitoring, VM requests, the OS
// catalog (admins), history, live toasts from the event stream, themes.
import { h, fill, $, left, localTime } from './dom.js';
import { get, post, del, enc, ApiError } from './api.js';
import { lineChart } from './chart.js';

const state = { me: null, pool: null, es: null, os: [], refreshTimer: 0 };
const isAdmin = () => state.me && state.me.role === 'admin';

// ---- theme ----

function effectiveTheme() {
  const set = document.documentElement.dataset.theme;
  if (set) return set;
  return window.matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

function showThemeButton() {
  const dark = effectiveTheme() === 'dark';
  const b = $('#theme-toggle');
  b.textContent = dark ? 'Light theme' : 'Dark theme';
  b.setAttribute('aria-pressed', String(dark));
}

function setupTheme() {
  let saved = null;
  try { saved = localStorage.getItem('vmm-theme'); } catch (e) { saved = null; }
  if (saved === 'light' || saved === 'dark') document.documentElement.dataset.theme = saved;
  showThemeButton();
  $('#theme-toggle').addEventListener('click', () => {
    const next = effectiveTheme() === 'dark' ? 'light' : 'dark';
    document.documentElement.dataset.theme = next;
    try { localStorage.setItem('vmm-theme', next); } catch (e) { /* private mode */ }
    showThemeButton();
  });
  window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', showThemeButton);
}

// ---- toasts and dialogs ----

function toast(text) {
  const el = h('div', { class: 'toast', text });
  $('#toasts').append(el);
  setTimeout(() => el.remove(), 7000);
}

function errorText(e) {
  if (e instanceof ApiError) {
    if (e.status === 401) return 'Your session has ended: log in again.';
    if (e.status === 501) return `Not available on this server: ${e.message}`;
    return e.message;
  }
  return String(e && e.message ? e.message : e);
}

let dialogAction = null;

// fields: nodes for the body; onOk(form) may return a promise; a thrown
// error is shown in the dialog, which then stays open.
function openDialog({ title, body, ok, onOk, danger }) {
  const dlg = $('#dialog');
  fill($('#dialog-title'), title);
  fill($('#dialog-body'), ...body);
  fill($('#dialog-error'));
  const okBtn = $('#dialog-ok');
  okBtn.hidden = !onOk;
  okBtn.textContent = ok || 'OK';
  okBtn.className = danger ? 'danger' : 'primary';
  $('#dialog-cancel').textContent = onOk ? 'Cancel' : 'Close';
  dialogAction = onOk || null;
  dlg.showModal();
  const first = dlg.querySelector('#dialog-body input, #dialog-body select, #dialog-body textarea');
  (first || (onOk ? okBtn : $('#dialog-cancel'))).focus();
}

function setupDialog() {
  const dlg = $('#dialog');
  $('#dialog-cancel').addEventListener('click', () => dlg.close());
  $('#dialog-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!dialogAction) { dlg.close(); return; }
    const okBtn = $('#dialog-ok');
    okBtn.disabled = true;
    try {
      const next = await dialogAction($('#dialog-form'));
      if (next !== 'keep') dlg.close();
    } catch (e) {
      fill($('#dialog-error'), errorText(e));
    } finally {
      okBtn.disabled = false;
    }
  });
}

function field(id, labelText, input) {
  input.id = id;
  return [h('label', { for: id, text: labelText }), input];
}

function durationFields() {
  return [
    ...field('dlg-amount', 'Duration', h('input', { type: 'number', min: 1, max: 10080, value: 4, required: true, name: 'amount' })),
    ...field('dlg-unit', 'Unit', h('select', { name: 'unit' },
      h('option', { value: 'hours', text: 'hours' }), h('option', { value: 'minutes', text: 'minutes' }))),
  ];
}

function durationOf(form) {
  const n = Number(form.elements.amount.value);
  return form.elements.unit.value === 'minutes' ? { minutes: n } : { hours: n };
}

function showSecret(title, lines) {
  openDialog({
    title,
    body: [h('p', { text: 'Shown this once: copy it now.' }),
      ...lines.map(([k, v]) => h('p', {}, `${k}: `, h('span', { class: 'secret', text: v })))],
  });
}

// ---- login ----

async function start() {
  try {
    state.me = await get('/api/v1/me');
  } catch (e) {
    state.me = { authenticated: false };
    fill($('#login-error'), errorText(e));
  }
  if (state.me.authenticated) showApp(); else showLogin();
}

function showLogin() {
  $('#login-section').hidden = false;
  $('#app').hidden = true;
  $('#nav').hidden = true;
  $('#logout').hidden = true;
  fill($('#whoami'));
  if (state.es) { state.es.close(); state.es = null; }
  $('#login-name').focus();
}

function setupLogin() {
  $('#login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    fill($('#login-error'));
    const f = ev.target;
    try {
      await post('/api/v1/login', { name: f.elements.name.value, password: f.elements.password.value });
      f.reset();
      state.me = await get('/api/v1/me');
      showApp();
    } catch (e) {
      fill($('#login-error'), e.status === 401 ? 'Wrong name or password.' : errorText(e));
    }
  });
  $('#logout').addEventListener('click', async () => {
    try { await post('/api/v1/logout'); } catch (e) { /* the session is gone either way */ }
    state.me = { authenticated: false };
    showLogin();
  });
}

function showApp() {
  $('#login-section').hidden = true;
  $('#app').hidden = false;
  $('#nav').hidden = false;
  $('#logout').hidden = false;
  fill($('#whoami'), `${state.me.name || state.me.vm_id} (${state.me.role || state.me.kind})`);
  for (const el of document.querySelectorAll('.admin-only')) el.hidden = !isAdmin();
  connectEvents();
  refreshAll();
}

function refreshAll() {
  loadPool();
  loadHistory();
  loadRequests();
  loadCatalog();
}

function handleAuthError(e) {
  if (e instanceof ApiError && e.status === 401) {
    state.me = { authenticated: false };
    showLogin();
    return true;
  }
  return false;
}

// ---- the pool ----

async function loadPool() {
  try {
    state.pool = await get('/vms');
    renderPool();
  } catch (e) {
    if (!handleAuthError(e)) fill($('#pool-body'), h('p', { class: 'error', text: errorText(e) }));
  }
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(() => { loadPool(); loadHistory(); loadRequests(); }, 300);
}

async function act(promise, done) {
  try {
    const r = await promise;
    if (done) done(r);
    scheduleRefresh();
  } catch (e) {
    if (!handleAuthError(e)) toast(errorText(e));
  }
}

function bookDialog(vmId) {
  openDialog({
    title: `Book ${vmId}`, ok: 'Book', body: durationFields(),
    onOk: async (f) => {
      await post(`/api/v1/vms/${enc(vmId)}/booking`, durationOf(f));
      scheduleRefresh();
    },
  });
}

function renewDialog(vmId) {
  openDialog({
    title: `Renew ${vmId}`, ok: 'Renew', body: durationFields(),
    onOk: async (f) => {
      await post(`/api/v1/vms/${enc(vmId)}/booking/renew`, durationOf(f));
      scheduleRefresh();
    },
  });
}

function cancelDialog(vmId) {
  openDialog({
    title: `Cancel the booking of ${vmId}?`, ok: 'Cancel booking', danger: true,
    body: [h('p', { text: 'The VM becomes free for others at once.' })],
    onOk: async () => { await del(`/api/v1/vms/${enc(vmId)}/booking`); scheduleRefresh(); },
  });
}

function vmRow(vm) {
  const mine = state.me && vm.booked_by === state.me.name;
  const booked = !!vm.booked_by;
  const actions = [];
  if (!booked) actions.push(h('button', { type: 'button', class: 'primary', text: 'Book', 'aria-label': `Book ${vm.id}`, onclick: () => bookDialog(vm.id) }));
  if (booked && (mine || isAdmin())) {
    actions.push(h('button', { type: 'button', text: 'Renew', 'aria-label': `Renew ${vm.id}`, onclick: () => renewDialog(vm.id) }));
    actions.push(h('button', { type: 'button', text: 'Cancel', 'aria-label': `Cancel booking of ${vm.id}`, onclick: () => cancelDialog(vm.id) }));
  }
  if (isAdmin()) {
    if (vm.group !== null && vm.group !== undefined)
      actions.push(h('button', { type: 'button', class: 'ghost', text: 'Remove from group', 'aria-label': `Remove ${vm.id} from its group`,
        onclick: () => act(post('/remove-vm-from-group', { vm_id: vm.id })) }));
    actions.push(h('button', { type: 'button', class: 'ghost', text: 'Delete', 'aria-label': `Delete ${vm.id}`,
      onclick: () => openDialog({ title: `Delete ${vm.id}?`, ok: 'Delete', danger: true,
        body: [h('p', { text: 'The VM, its disks and sessions are removed.' })],
        onOk: async () => { await post('/delete-vm', { vm_id: vm.id }); scheduleRefresh(); } }) }));
  }
  const state_ = booked
    ? h('span', { class: 'state-booked', text: mine ? 'Booked by you' : `Booked by ${vm.booked_by}` })
    : h('span', { class: 'state-free', text: 'Free' });
  const until = booked && vm.expires_at
    ? [h('time', { class: 'countdown', datetime: vm.expires_at, dataset: { expires: vm.expires_at }, text: left(Date.parse(vm.expires_at) - Date.now()) }),
      h('br'), h('span', { class: 'muted', text: `until ${localTime(vm.expires_at)}` })]
    : [h('span', { class: 'muted', text: '—' })];
  return h('tr', {},
    h('th', { scope: 'row' }, h('button', { type: 'button', class: 'link', text: vm.id, 'aria-label': `Details of ${vm.id}`, onclick: () => vmDetail(vm.id) })),
    h('td', {}, state_),
    h('td', {}, ...until),
    h('td', {}, h('div', { class: 'actions' }, ...actions)));
}

function groupTable(caption, vms, group) {
  const head = h('div', { class: 'section-head' }, h('h3', { text: caption }));
  if (group && isAdmin()) {
    head.append(h('div', { class: 'tools' },
      h('button', { type: 'button', class: 'ghost', text: 'Add VMs', 'aria-label': `Add VMs to ${group.name}`, onclick: () => addToGroupDialog(group) }),
      h('button', { type: 'button', class: 'ghost', text: 'Delete group', 'aria-label': `Delete group ${group.name}`,
        onclick: () => openDialog({ title: `Delete group ${group.name}?`, ok: 'Delete', danger: true,
          body: [h('p', { text: 'Its VMs stay, without a group.' })],
          onOk: async () => { await post('/delete-group', { group_id: group.id }); scheduleRefresh(); } }) })));
  }
  const rows = vms.length
    ? vms.map(vmRow)
    : [h('tr', {}, h('td', { colspan: 4, class: 'muted', text: 'No VMs.' }))];
  return h('div', {}, head, h('div', { class: 'table-wrap' },
    h('table', {},
      h('caption', { class: 'muted', text: `${vms.length} VM${vms.length === 1 ? '' : 's'}` }),
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col', text: 'VM' }), h('th', { scope: 'col', text: 'Booking' }),
        h('th', { scope: 'col', text: 'Time left' }), h('th', { scope: 'col', text: 'Actions' }))),
      h('tbody', {}, ...rows))));
}

function renderPool() {
  const { vms, groups } = state.pool;
  const byGroup = new Map(groups.map((g) => [g.id, []]));
  const loose = [];
  for (const vm of vms) {
    if (vm.group !== null && vm.group !== undefined && byGroup.has(vm.group)) byGroup.get(vm.group).push(vm);
    else loose.push(vm);
  }
  const parts = [];
  for (const g of [...groups].sort((a, b) => String(a.name).localeCompare(String(b.name))))
    parts.push(groupTable(`Group: ${g.name}`, byGroup.get(g.id), g));
  if (loose.length || !groups.length) parts.push(groupTable('Not in a group', loose, null));
  fill($('#pool-body'), ...parts);
}

function tick() {
  const now = Date.now();
  for (const t of document.querySelectorAll('time[data-expires]'))
    t.textContent = left(Date.parse(t.dataset.expires) - now);
}

function newVmDialog() {
  const groups = state.pool ? state.pool.groups : [];
  openDialog({
    title: 'New VM', ok: 'Create',
    body: [...field('dlg-vmid', 'VM id', h('input', { name: 'vm_id', required: true, maxlength: 48, pattern: '[A-Za-z0-9][A-Za-z0-9._-]*' })),
      ...field('dlg-group', 'Group', h('select', { name: 'group' }, h('option', { value: '', text: 'No group' }),
        ...groups.map((g) => h('option', { value: g.id, text: g.name }))))],
    onOk: async (f) => {
      const g = f.elements.group.value;
      const r = await post('/add-vm', { id: f.elements.vm_id.value, group_id: g === '' ? null : Number(g) });
      scheduleRefresh();
      setTimeout(() => showSecret(`VM ${r.vm_id} created`, [['Password', r.password || '']]), 0);
    },
  });
}

function newGroupDialog() {
  openDialog({
    title: 'New group', ok: 'Create',
    body: [...field('dlg-gname', 'Name', h('input', { name: 'name', required: true, maxlength: 64 })),
      ...field('dlg-gvms', 'VM ids (comma separated, optional)', h('input', { name: 'vm_ids' }))],
    onOk: async (f) => {
      const ids = splitList(f.elements.vm_ids.value);
      await post('/groups', ids.length ? { name: f.elements.name.value, vm_ids: ids } : { name: f.elements.name.value });
      scheduleRefresh();
    },
  });
}

function addToGroupDialog(group) {
  openDialog({
    title: `Add VMs to ${group.name}`, ok: 'Add',
    body: field('dlg-addvms', 'VM ids (comma separated)', h('input', { name: 'vm_ids', required: true })),
    onOk: async (f) => {
      await post(`/groups/${enc(group.id)}/add-existing-vms`, { vm_ids: splitList(f.elements.vm_ids.value) });
      scheduleRefresh();
    },
  });
}

function splitList(s) {
  return s.split(',').map((x) => x.trim()).filter((x) => x.length);
}

// ---- a VM's detail ----

function fact(k, v) {
  return [h('dt', { text: k }), h('dd', { text: v === null || v === undefined || v === '' ? '—' : v })];
}

async function vmDetail(vmId) {
  let vm, mon = null;
  try {
    vm = await get(`/api/v1/vms/${enc(vmId)}`);
  } catch (e) {
    if (!handleAuthError(e)) toast(errorText(e));
    return;
  }
  try { mon = await get(`/api/v1/vms/${enc(vmId)}/monitor`); } catch (e) { mon = null; }
  const os = vm.os ? `${vm.os.name} ${vm.os.version || ''}`.trim() : null;
  const disks = (vm.disks || []).map((d) => `${d.id} (${d.size} GiB)`).join(', ');
  const b = vm.booking;
  const points = mon && Array.isArray(mon.history)
    ? mon.history.map((r) => ({ t: Date.parse(r.time || r.reported_at), v: Array.isArray(r.load) ? Number(r.load[0]) : Number(r.mem_used || 0) }))
      .filter((p) => !Number.isNaN(p.t) && !Number.isNaN(p.v))
    : [];
  openDialog({
    title: `VM ${vm.vm_id}`,
    body: [h('dl', { class: 'facts' },
      ...fact('Hostname', vm.hostname), ...fact('IP', (vm.ip || []).join(', ')), ...fact('OS', os),
      ...fact('Status', vm.status), ...fact('Access', vm.access), ...fact('Owner', vm.owner),
      ...fact('RAM', vm.ram ? `${vm.ram} MiB` : null), ...fact('CPUs', vm.cpu), ...fact('Disks', disks),
      ...fact('Booking', b ? `${b.user} until ${localTime(b.expires_at)}` : 'free'),
      ...fact('Last seen', localTime(vm.last_seen_at))),
    h('h3', { text: 'Load (1 min), last hour' }),
    lineChart(points, `Load of ${vm.vm_id}`, '')],
  });
}

// ---- history ----

async function loadHistory() {
  try {
    const r = await get('/api/v1/history?limit=50');
    const rows = (r.entries || []).map((e) => h('tr', {},
      h('td', {}, h('time', { datetime: e.time, text: localTime(e.time) })),
      h('td', { text: e.vm_id }), h('td', { text: e.action }), h('td', { class: 'optional', text: e.user }),
      h('td', { text: e.expires_at ? localTime(e.expires_at) : '—' }), h('td', { class: 'optional', text: e.by || '' })));
    fill($('#history-body'), rows.length ? h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ...['When', 'VM', 'What', 'Who', 'Until', 'By'].map((t, i) =>
        h('th', { scope: 'col', class: i === 3 || i === 5 ? 'optional' : null, text: t })))),
      h('tbody', {}, ...rows))) : h('p', { class: 'muted', text: 'No bookings yet.' }));
  } catch (e) {
    if (!handleAuthError(e)) fill($('#history-body'), h('p', { class: 'error', text: errorText(e) }));
  }
}

// ---- VM requests ----

async function loadRequests() {
  try {
    const r = await get('/api/v1/requests?limit=100');
    const rows = (r.requests || []).map(requestRow);
    fill($('#requests-body'), rows.length ? h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ...['#', 'By', 'What', 'Spec', 'State', 'Actions'].map((t) => h('th', { scope: 'col', text: t })))),
      h('tbody', {}, ...rows))) : h('p', { class: 'muted', text: 'No requests.' }));
  } catch (e) {
    if (!handleAuthError(e)) fill($('#requests-body'), h('p', { class: 'error', text: errorText(e) }));
  }
}

function requestRow(rq) {
  const actions = [];
  if (rq.state === 'pending' && isAdmin()) {
    actions.push(h('button', { type: 'button', class: 'primary', text: 'Approve', 'aria-label': `Approve request ${rq.id}`, onclick: () => approveDialog(rq) }));
    actions.push(h('button', { type: 'button', text: 'Reject', 'aria-label': `Reject request ${rq.id}`, onclick: () => rejectDialog(rq) }));
  }
  if (rq.state === 'pending' && state.me && rq.requester === state.me.name)
    actions.push(h('button', { type: 'button', class: 'ghost', text: 'Cancel', 'aria-label': `Cancel request ${rq.id}`,
      onclick: () => act(post(`/api/v1/requests/${enc(rq.id)}/cancel`)) }));
  const spec = `${rq.count || 1} × ${rq.cpu} CPU, ${rq.ram} MiB${(rq.disks || []).length ? `, disks ${rq.disks.join('+')} GiB` : ''}`;
  const stateText = rq.reason ? `${rq.state}: ${rq.reason}` : rq.state;
  return h('tr', {}, h('td', { text: rq.id }), h('td', { text: rq.requester }), h('td', { text: rq.description }),
    h('td', { text: spec }), h('td', { text: stateText }), h('td', {}, h('div', { class: 'actions' }, ...actions)));
}

function approveDialog(rq) {
  openDialog({
    title: `Approve request ${rq.id}`, ok: 'Approve',
    body: field('dlg-vmids', `Ids for the ${rq.count || 1} new VM(s), comma separated`, h('input', { name: 'vm_ids', required: true })),
    onOk: async (f) => {
      const r = await post(`/api/v1/requests/${enc(rq.id)}/approve`, { vm_ids: splitList(f.elements.vm_ids.value) });
      scheduleRefresh();
      setTimeout(() => showSecret(`Request ${rq.id} approved`, (r.vms || []).map((v) => [v.vm_id, v.password])), 0);
    },
  });
}

function rejectDialog(rq) {
  openDialog({
    title: `Reject request ${rq.id}`, ok: 'Reject', danger: true,
    body: field('dlg-reason', 'Reason', h('input', { name: 'reason', required: true, maxlength: 4096 })),
    onOk: async (f) => {
      await post(`/api/v1/requests/${enc(rq.id)}/reject`, { reason: f.elements.reason.value });
      scheduleRefresh();
    },
  });
}

function setupRequestForm() {
  $('#request-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const body = {
      description: f.elements.description.value,
      ram: Number(f.elements.ram.value),
      cpu: Number(f.elements.cpu.value),
      count: Number(f.elements.count.value || 1),
    };
    const disks = splitList(f.elements.disks.value).map(Number);
    if (disks.length) body.disks = disks;
    if (f.elements.os_id.value) body.os_id = Number(f.elements.os_id.value);
    try {
      const r = await post('/api/v1/requests', body);
      toast(`Request ${r.id} filed.`);
      f.elements.description.value = '';
      loadRequests();
    } catch (e) {
      if (!handleAuthError(e)) toast(errorText(e));
    }
  });
}

// ---- the OS catalog ----

async function loadCatalog() {
  try {
    const r = await get('/api/v1/os');
    state.os = r.os || [];
  } catch (e) {
    state.os = [];
    if (isAdmin() && !handleAuthError(e)) fill($('#catalog-body'), h('p', { class: 'error', text: errorText(e) }));
    return;
  }
  fill($('#rq-os'), h('option', { value: '', text: 'Any' }),
    ...state.os.map((o) => h('option', { value: o.id, text: `${o.name} ${o.version}` })));
  if (!isAdmin()) return;
  const rows = state.os.map((o) => h('tr', {}, h('td', { text: o.id }), h('td', { text: o.name }), h('td', { text: o.version }),
    h('td', { class: 'optional', text: o.description || '' }),
    h('td', {}, h('button', { type: 'button', class: 'ghost', text: 'Delete', 'aria-label': `Delete ${o.name} ${o.version}`,
      onclick: () => act(del(`/api/v1/os/${enc(o.id)}`), () => loadCatalog()) }))));
  fill($('#catalog-body'), rows.length ? h('div', { class: 'table-wrap' }, h('table', {},
    h('thead', {}, h('tr', {}, ...['#', 'Name', 'Version', 'Description', 'Actions'].map((t, i) =>
      h('th', { scope: 'col', class: i === 3 ? 'optional' : null, text: t })))),
    h('tbody', {}, ...rows))) : h('p', { class: 'muted', text: 'The catalog is empty.' }));
}

function setupCatalogForm() {
  $('#os-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const body = { name: f.elements.name.value, version: f.elements.version.value };
    for (const k of ['iso', 'qcow2', 'description']) if (f.elements[k].value) body[k] = f.elements[k].value;
    try {
      await post('/api/v1/os', body);
      f.reset();
      loadCatalog();
    } catch (e) {
      if (!handleAuthError(e)) toast(errorText(e));
    }
  });
}

function setupPasswordForm() {
  $('#password-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    try {
      await post('/api/v1/me/password', { password: f.elements.password.value, new_password: f.elements.new_password.value });
      f.reset();
      toast('Password changed.');
    } catch (e) {
      toast(errorText(e));
    }
  });
}

// ---- live events ----

function connectEvents() {
  if (state.es || typeof EventSource === 'undefined') return;
  const es = new EventSource('/api/v1/events');
  const onEvent = (e) => {
    let ev;
    try { ev = JSON.parse(e.data); } catch (x) { return; }
    if (ev.msg) toast(ev.msg);
    const t = String(ev.type || '');
    if (/^(booking|group|vm|request|os)\./.test(t) || t === 'events.truncated') scheduleRefresh();
    if (t === 'os.created' || t === 'os.deleted') loadCatalog();
  };
  es.onmessage = onEvent;
  es.addEventListener('truncated', onEvent);
  es.onerror = () => {
    // the browser reconnects with Last-Event-ID; a closed stream means the
    // session is gone or the server refused it
    if (es.readyState === EventSource.CLOSED) {
      state.es = null;
      setTimeout(async () => {
        try {
          state.me = await get('/api/v1/me');
          if (state.me.authenticated) connectEvents(); else showLogin();
        } catch (x) { /* try again on the next action */ }
      }, 5000);
    }
  };
  state.es = es;
}

// ---- start ----

setupTheme();
setupDialog();
setupLogin();
setupRequestForm();
setupCatalogForm();
setupPasswordForm();
$('#refresh').addEventListener('click', refreshAll);
$('#new-vm').addEventListener('click', newVmDialog);
$('#new-group').addEventListener('click', newGroupDialog);
setInterval(tick, 1000);
start();

