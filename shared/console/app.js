// jitvm console. Plain modern JavaScript, no build step, nothing fetched
// from elsewhere. Every text that came from users or the API reaches the
// page through textContent or attribute setters, never as markup.

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

const TOKEN_KEY = 'jitvm.token';
const PKCE_KEY = 'jitvm.pkce';

const state = {
  me: null,
  vms: [],
  tab: 'Configured',
  view: 'vms',
  timers: [],
};

// ------------------------------------------------------------------ helpers

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function notice(text, kind = 'error') {
  const box = $('#notice');
  box.textContent = text;
  box.className = `notice ${kind === 'info' ? 'info' : ''}`;
  box.hidden = !text;
}

class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls the API with the signed-in token; throws ApiFailure with the API's own message. */
async function api(method, path, body) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  // Signed out (here or in another tab) while something was still on its way.
  if (!token) throw new ApiFailure(401, 'SignedOut', 'you are signed out');
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiFailure(0, 'Unreachable', `the API did not answer: ${e.message}`);
  }
  const text = await response.text();
  let data = null;
  if (text && (response.headers.get('content-type') || '').includes('json')) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    throw new ApiFailure(response.status, error.code || String(response.status), error.message || text || response.statusText);
  }
  return data === null ? text : data;
}

/** Runs an action, showing the API's message if it fails; a new action clears the last message. */
async function attempt(action, clear = true) {
  try {
    if (clear) notice('');
    return await action();
  } catch (e) {
    if (e instanceof ApiFailure && e.status === 401) {
      signOut('Your sign-in is no longer valid; sign in again.');
      return undefined;
    }
    notice(e instanceof ApiFailure ? `${e.message} (${e.code})` : String(e.message || e));
    return undefined;
  }
}

const vmPath = (vm) => `/v1/policies/${encodeURIComponent(vm)}`;

function vmLabel(id, name) {
  if (name) return name;
  const parts = String(id).split(/[/:]/);
  return parts[parts.length - 1] || id;
}

function cloudOf(id) {
  return String(id).startsWith('arn:') ? 'AWS' : 'Azure';
}

function when(time) {
  if (!time) return '—';
  const date = new Date(time);
  return Number.isNaN(date.getTime()) ? String(time) : date.toLocaleString();
}

/** "PT1H30M" → minutes. */
function minutesOf(iso) {
  const m = /^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?$/.exec(String(iso || ''));
  if (!m) return 0;
  return Number(m[1] || 0) * 60 + Number(m[2] || 0) + Math.floor(Number(m[3] || 0) / 60);
}

function isoOf(minutes) {
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  return `PT${h ? `${h}H` : ''}${m ? `${m}M` : ''}` || 'PT0M';
}

function durationText(minutes) {
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  return [h ? `${h} h` : '', m ? `${m} min` : ''].filter(Boolean).join(' ') || '0 min';
}

function remaining(endTime) {
  const left = Math.floor((new Date(endTime).getTime() - Date.now()) / 1000);
  if (!(left > 0)) return 'ended';
  const h = Math.floor(left / 3600);
  const m = Math.floor((left % 3600) / 60);
  const s = left % 60;
  return h ? `${h}h ${String(m).padStart(2, '0')}m` : `${m}m ${String(s).padStart(2, '0')}s`;
}

const pill = (status) => el('span', { class: `pill ${status}` }, status);

/** Why a port closed or failed (an open port's reason says nothing new). */
const ended = (port) => (port.status === 'Revoked' || port.status === 'Failed') && Boolean(port.statusReason);

function portsOf(record) {
  return (record.virtualMachines || []).flatMap((vm) => vm.ports || []);
}

function vmOf(record) {
  return ((record.virtualMachines || [])[0] || {}).id || '';
}

function portSummary(record) {
  return portsOf(record).map((p) => el('div', {},
    `${p.number}/${p.protocol} from ${p.allowedSourceAddressPrefix} `, pill(p.status),
    ended(p) ? ` ${p.statusReason}` : '',
    p.message ? el('span', { class: 'sub' }, p.message) : null));
}

function nameOfVm(id) {
  const vm = state.vms.find((v) => v.id === id);
  return vmLabel(id, vm && vm.name);
}

function emptyRow(table, columns, text) {
  $('tbody', table).replaceChildren(el('tr', {}, el('td', { colspan: columns, class: 'empty' }, text)));
}

function openDialog(dialog) {
  if (!dialog.open) dialog.showModal();
}

// ------------------------------------------------------------------ sign-in

async function loadConfig() {
  const response = await fetch('/console/config.json');
  return response.json();
}

function b64url(bytes) {
  let text = '';
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function randomText(size) {
  return b64url(crypto.getRandomValues(new Uint8Array(size)));
}

async function discover(issuer) {
  const response = await fetch(`${issuer}/.well-known/openid-configuration`);
  if (!response.ok) throw new Error(`the identity provider's discovery document answered ${response.status}`);
  return response.json();
}

/** OpenID Connect authorization code with PKCE: off to the provider. */
async function oidcStart(config) {
  const discovery = await discover(config.issuer);
  const verifier = randomText(48);
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
  const stateText = randomText(16);
  const redirect = `${location.origin}${location.pathname}`;
  sessionStorage.setItem(PKCE_KEY, JSON.stringify({
    verifier, state: stateText, tokenEndpoint: discovery.token_endpoint, redirect,
  }));
  const query = new URLSearchParams({
    response_type: 'code',
    client_id: config.clientId,
    redirect_uri: redirect,
    scope: config.scope || 'openid',
    state: stateText,
    code_challenge: b64url(new Uint8Array(digest)),
    code_challenge_method: 'S256',
  });
  location.assign(`${discovery.authorization_endpoint}?${query}`);
}

/** Back from the provider: trade the code for tokens. */
async function oidcFinish(config, params) {
  const saved = JSON.parse(sessionStorage.getItem(PKCE_KEY) || 'null');
  sessionStorage.removeItem(PKCE_KEY);
  history.replaceState(null, '', location.pathname);
  if (params.get('error')) throw new Error(`sign-in failed: ${params.get('error_description') || params.get('error')}`);
  if (!saved || saved.state !== params.get('state')) throw new Error('sign-in failed: the answer does not belong to this sign-in; try again');
  const response = await fetch(saved.tokenEndpoint, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code: params.get('code') || '',
      redirect_uri: saved.redirect,
      client_id: config.clientId,
      code_verifier: saved.verifier,
    }),
  });
  if (!response.ok) throw new Error(`sign-in failed: the token endpoint answered ${response.status}`);
  const tokens = await response.json();
  // The ID token's audience is this client, which the API's JWT authorizer accepts.
  const token = tokens.id_token || tokens.access_token;
  if (!token) throw new Error('sign-in failed: the provider gave no token');
  sessionStorage.setItem(TOKEN_KEY, token);
}

function showSignIn(config) {
  $('#app').hidden = true;
  $('#who').hidden = true;
  $('#signin').hidden = false;
  const oidc = config.signIn === 'oidc';
  $('#token-form').hidden = oidc;
  $('#oidc-signin').hidden = !oidc;
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.timers.forEach(clearInterval);
  state.timers = [];
  location.hash = '';
  loadConfig().then(showSignIn).catch(() => {});
  $('#app').hidden = true;
  $('#who').hidden = true;
  $('#signin').hidden = false;
  notice(message || '', 'info');
}

async function enter() {
  const me = await api('GET', '/v1/whoami');
  state.me = me;
  $('#signin').hidden = true;
  $('#app').hidden = false;
  $('#who').hidden = false;
  $('#me').textContent = me.principal;
  $('#roles').textContent = [me.admin && 'admin', me.auditor && 'auditor',
    (me.approverOf || []).length && 'approver'].filter(Boolean).join(' · ');
  $('#nav-pending').hidden = !(me.approverOf || []).length;
  $('#activity-csv').hidden = !(me.admin || me.auditor);
  await refresh();
}

// ------------------------------------------------------------------ views

function showView(view) {
  state.view = view;
  for (const button of $$('.views [data-view]')) button.classList.toggle('active', button.dataset.view === view);
  for (const section of $$('.view')) section.hidden = section.id !== `view-${view}`;
  return refresh();
}

async function refresh() {
  state.timers.forEach(clearInterval);
  state.timers = [];
  await attempt(async () => {
    state.vms = (await api('GET', '/v1/vms')).value || [];
    fillVmFilter();
    if (state.view === 'vms') renderVms();
    if (state.view === 'mine') await renderMine();
    if (state.view === 'activity') await renderActivity();
    await renderPending();
  }, false);
}

const COLUMNS = {
  Configured: ['Virtual machine', 'Cloud', 'Approved (7 days)', 'Last access', 'Last user', 'Connection details', ''],
  NotConfigured: ['Virtual machine', 'Cloud', ''],
  Unsupported: ['Virtual machine', 'Cloud', 'Reason'],
};

function renderVms() {
  for (const tab of Object.keys(COLUMNS)) {
    const button = $(`#tab-${tab}`);
    button.classList.toggle('active', tab === state.tab);
    $('.count', button).textContent = state.vms.filter((v) => v.status === tab).length;
  }
  const table = $('#vm-table');
  $('thead', table).replaceChildren(el('tr', {}, COLUMNS[state.tab].map((c) => el('th', {}, c))));
  const rows = state.vms.filter((v) => v.status === state.tab);
  $('#vms-hint').textContent = {
    Configured: 'VMs with JIT on: their ports stay closed until a request opens them.',
    NotConfigured: 'VMs without a JIT policy.',
    Unsupported: 'VMs JIT cannot protect, and why.',
  }[state.tab];
  if (!rows.length) return emptyRow(table, COLUMNS[state.tab].length, 'No virtual machines here.');
  $('tbody', table).replaceChildren(...rows.map(vmRow));
}

function vmCell(vm) {
  return el('td', {}, vmLabel(vm.id, vm.name), el('span', { class: 'sub' }, vm.id));
}

function vmRow(vm) {
  const me = state.me;
  const row = el('tr', { dataset: { vm: vm.id } }, vmCell(vm), el('td', {}, cloudOf(vm.id)));
  if (vm.status === 'Unsupported') {
    row.append(el('td', { class: 'reason' }, vm.reason || ''));
  } else if (vm.status === 'NotConfigured') {
    row.append(el('td', { class: 'actions' }, me.admin
      ? el('button', { type: 'button', class: 'enable-jit', onclick: () => editPolicy(vm) }, 'Enable JIT')
      : ''));
  } else {
    const details = (vm.openGrants || []).map((g) => el('div', {},
      `${g.number} ← ${g.allowedSourceAddressPrefix} · ${g.requestor} · until ${when(g.endTimeUtc)}`));
    if (vm.openGrantCount) details.push(el('div', {}, `${vm.openGrantCount} open`));
    const mayRequest = (me.requesterOf || []).includes(vm.id);
    row.append(
      el('td', {}, String(vm.approvedRequestsLast7Days ?? 0)),
      el('td', {}, when(vm.lastAccess)),
      el('td', {}, vm.lastUser || '—'),
      el('td', { class: 'connections' }, details.length ? details : '—'),
      el('td', { class: 'actions' },
        mayRequest ? el('button', { type: 'button', class: 'request-access primary', onclick: () => requestAccess(vm) }, 'Request access') : '',
        me.admin ? el('button', { type: 'button', class: 'edit-policy link', onclick: () => editPolicy(vm) }, 'Edit') : '',
        me.admin ? el('button', { type: 'button', class: 'disable-jit link', onclick: () => disableJit(vm) }, 'Disable') : ''));
  }
  return row;
}

// ------------------------------------------------------------------ request access

function requestAccess(vm) {
  const dialog = $('#request-dialog');
  dialog.dataset.vm = vm.id;
  $('#request-vm').textContent = `${vmLabel(vm.id, vm.name)} · ${vm.id}`;
  $('#request-ports').replaceChildren(...(vm.ports || []).map((p, i) => el('label', {},
    el('input', { type: 'checkbox', name: 'port', value: p.number, checked: i === 0, dataset: { max: minutesOf(p.maxRequestAccessDuration) } }),
    `${p.number}/${p.protocol}`)));
  $('#source-mine').checked = true;
  $('#source-cidr').disabled = true;
  $('#source-cidr').value = '';
  $('#justification').value = '';
  $('#request-status').replaceChildren();
  $('#request-submit').disabled = false;
  fillDurations();
  openDialog(dialog);
}

function fillDurations() {
  const chosen = $$('#request-ports input:checked').map((i) => Number(i.dataset.max));
  const max = chosen.length ? Math.min(...chosen) : 0;
  const choices = [15, 30, 60, 120, 180, 240, 360, 480, 720, 1440].filter((m) => m <= max);
  if (max && !choices.includes(max)) choices.push(max);
  $('#duration').replaceChildren(...choices.map((m) => el('option', { value: m, selected: m === Math.min(60, max) || choices.length === 1 }, durationText(m))));
}

async function submitRequest() {
  const dialog = $('#request-dialog');
  const ports = $$('#request-ports input:checked').map((i) => Number(i.value));
  if (!ports.length) return notice('Choose at least one port.');
  const duration = isoOf(Number($('#duration').value));
  const range = $('#source-range').checked;
  const source = $('#source-cidr').value.trim();
  if (range && !source) return notice('Give the IP range (such as 198.51.100.0/24), or choose My IP.');
  const body = {
    virtualMachines: [{
      id: dialog.dataset.vm,
      ports: ports.map((number) => ({ number, duration, ...(range ? { allowedSourceAddressPrefix: source } : {}) })),
    }],
  };
  const justification = $('#justification').value.trim();
  if (justification) body.justification = justification;
  const record = await attempt(() => api('POST', '/v1/requests', body));
  if (!record) return undefined;
  $('#request-submit').disabled = true;
  return followRequest(record.id, $('#request-status'));
}

/** Shows a request's status live until every port has settled. */
async function followRequest(id, box) {
  const started = Date.now();
  for (;;) {
    const record = await attempt(() => api('GET', `/v1/requests/${encodeURIComponent(id)}`));
    if (!record) return;
    showProgress(record, box);
    const ports = portsOf(record);
    const settled = record.status === 'Denied' || ports.every((p) => p.status !== 'Initiating');
    if (settled || Date.now() - started > 10 * 60 * 1000) {
      refresh();
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, record.status === 'PendingApproval' ? 3000 : 1000));
  }
}

function showProgress(record, box) {
  const lines = portsOf(record).map((p) => el('li', { dataset: { port: p.number } },
    `Port ${p.number}/${p.protocol} from ${p.allowedSourceAddressPrefix}: `, pill(p.status),
    p.status === 'Initiated' ? ` until ${when(p.endTimeUtc)}` : '',
    ended(p) ? ` (${p.statusReason})` : '',
    p.message ? el('span', { class: 'sub error' }, p.message) : null));
  const headline = {
    PendingApproval: 'Waiting for an approver.',
    Denied: 'Denied.',
    Approved: portsOf(record).every((p) => p.status === 'Initiated')
      ? `Open: connect to ${nameOfVm(vmOf(record))} now.` : 'Opening…',
  }[record.status] || record.status;
  box.replaceChildren(el('div', { class: 'headline' }, 'Request ', el('code', {}, record.id), ': ', pill(record.status), ` ${headline}`),
    el('ul', {}, lines));
}

// ------------------------------------------------------------------ my requests

async function renderMine() {
  const me = state.me.principal;
  const list = await api('GET', `/v1/requests?requestor=${encodeURIComponent(me)}&limit=100`);
  const table = $('#mine-table');
  const records = list.value || [];
  if (!records.length) return emptyRow(table, 6, 'You have made no requests yet.');
  $('tbody', table).replaceChildren(...records.map(mineRow));
  const tick = () => $$('#mine-table [data-end]').forEach((cell) => { cell.textContent = remaining(cell.dataset.end); });
  state.timers.push(setInterval(tick, 1000));
  return undefined;
}

function mineRow(record) {
  const open = portsOf(record).filter((p) => p.status === 'Initiated' || p.status === 'Initiating');
  const live = record.status === 'PendingApproval' || open.length > 0;
  const end = open.map((p) => p.endTimeUtc).sort().pop();
  return el('tr', { dataset: { request: record.id } },
    el('td', {}, nameOfVm(vmOf(record)), el('span', { class: 'sub' }, vmOf(record))),
    el('td', {}, portSummary(record)),
    el('td', { class: 'status' }, pill(record.status)),
    el('td', end ? { class: 'remaining', dataset: { end } } : { class: 'remaining' }, end ? remaining(end) : '—'),
    el('td', {}, when(record.startTimeUtc), record.justification ? el('span', { class: 'sub' }, record.justification) : null),
    el('td', { class: 'actions' },
      open.length ? el('button', { type: 'button', class: 'extend link', onclick: () => extend(record) }, 'Extend') : '',
      live ? el('button', { type: 'button', class: 'revoke danger', onclick: () => revoke(record) }, 'Revoke') : ''));
}

async function revoke(record) {
  const done = await attempt(() => api('POST', `/v1/requests/${encodeURIComponent(record.id)}/revoke`));
  if (done) {
    notice(done.warning ? done.warning : `Request ${record.id} revoked.`, 'info');
    await refresh();
  }
}

/** Extending asks again for the same ports and source, for the policy's maximum. */
function extend(record) {
  const vm = state.vms.find((v) => v.id === vmOf(record));
  if (!vm || vm.status !== 'Configured') return notice('The VM has no JIT policy any more.');
  requestAccess(vm);
  const ports = portsOf(record).map((p) => String(p.number));
  $$('#request-ports input').forEach((input) => { input.checked = ports.includes(input.value); });
  const source = (portsOf(record)[0] || {}).allowedSourceAddressPrefix;
  if (source) {
    $('#source-range').checked = true;
    $('#source-cidr').disabled = false;
    $('#source-cidr').value = source;
  }
  $('#justification').value = record.justification || '';
  fillDurations();
  return undefined;
}

// ------------------------------------------------------------------ approvals

async function renderPending() {
  const vms = (state.me.approverOf || []);
  if (!vms.length) return;
  const lists = await Promise.all(vms.map((vm) => api('GET', `/v1/requests?vm=${encodeURIComponent(vm)}&limit=100`)));
  const pending = lists.flatMap((l) => l.value || [])
    .filter((r) => r.status === 'PendingApproval' && r.requestor !== state.me.principal);
  $('#pending-count').textContent = pending.length || '';
  const table = $('#pending-table');
  if (!pending.length) return emptyRow(table, 6, 'Nothing is waiting for you.');
  $('tbody', table).replaceChildren(...pending.map((record) => el('tr', { dataset: { request: record.id } },
    el('td', {}, when(record.startTimeUtc)),
    el('td', {}, nameOfVm(vmOf(record)), el('span', { class: 'sub' }, vmOf(record))),
    el('td', {}, record.requestor),
    el('td', {}, portSummary(record)),
    el('td', { class: 'justification' }, record.justification || '—'),
    el('td', { class: 'actions' },
      el('button', { type: 'button', class: 'approve primary', onclick: () => decide(record, 'approve') }, 'Approve'),
      el('button', { type: 'button', class: 'deny danger', onclick: () => askDeny(record) }, 'Deny')))));
}

async function decide(record, verb, reason) {
  const body = verb === 'deny' && reason ? { reason } : undefined;
  const done = await attempt(() => api('POST', `/v1/requests/${encodeURIComponent(record.id)}/${verb}`, body));
  if (done) {
    notice(`Request ${record.id} ${verb === 'approve' ? 'approved' : 'denied'}.`, 'info');
    await refresh();
  }
}

function askDeny(record) {
  const dialog = $('#deny-dialog');
  dialog.dataset.request = record.id;
  $('#deny-reason').value = '';
  openDialog(dialog);
}

// ------------------------------------------------------------------ activity

function fillVmFilter() {
  const select = $('#activity-vm');
  const chosen = select.value;
  select.replaceChildren(el('option', { value: '' }, 'All VMs'),
    ...state.vms.filter((v) => v.status === 'Configured')
      .map((v) => el('option', { value: v.id, selected: v.id === chosen }, vmLabel(v.id, v.name))));
}

function activityWindow() {
  const since = $('#activity-since').value;
  const until = $('#activity-until').value;
  const query = new URLSearchParams();
  if ($('#activity-vm').value) query.set('vm', $('#activity-vm').value);
  if (since) query.set('since', new Date(since).toISOString());
  if (until) query.set('until', new Date(until).toISOString());
  return query;
}

async function renderActivity() {
  const query = activityWindow();
  query.set('limit', '200');
  const list = await api('GET', `/v1/requests?${query}`);
  const table = $('#activity-table');
  const records = list.value || [];
  if (!records.length) return emptyRow(table, 7, 'No activity in this window.');
  $('tbody', table).replaceChildren(...records.map((record) => el('tr', { dataset: { request: record.id } },
    el('td', {}, when(record.startTimeUtc)),
    el('td', {}, nameOfVm(vmOf(record)), el('span', { class: 'sub' }, vmOf(record))),
    el('td', {}, record.requestor),
    el('td', {}, portSummary(record)),
    el('td', {}, pill(record.status)),
    el('td', {}, record.decidedBy || '—'),
    el('td', { class: 'justification' }, record.justification || '—'))));
  return undefined;
}

async function downloadCsv() {
  const query = activityWindow();
  const csv = await attempt(() => api('GET', `/v1/audit.csv?${query}`));
  if (csv === undefined) return;
  const link = el('a', { href: URL.createObjectURL(new Blob([csv], { type: 'text/csv' })), download: 'jitvm-activity.csv' });
  document.body.append(link);
  link.click();
  link.remove();
}

// ------------------------------------------------------------------ policies

const DEFAULT_PORTS = [
  { number: 22, protocol: '*', allowedSourceAddressPrefixes: ['*'], maxRequestAccessDuration: 'PT3H' },
  { number: 3389, protocol: '*', allowedSourceAddressPrefixes: ['*'], maxRequestAccessDuration: 'PT3H' },
  { number: 5985, protocol: '*', allowedSourceAddressPrefixes: ['*'], maxRequestAccessDuration: 'PT3H' },
  { number: 5986, protocol: '*', allowedSourceAddressPrefixes: ['*'], maxRequestAccessDuration: 'PT3H' },
];

function portEditor(port) {
  const protocol = el('select', { class: 'port-protocol' },
    ['*', 'tcp', 'udp'].map((p) => el('option', { value: p, selected: p === port.protocol }, p === '*' ? 'Any' : p.toUpperCase())));
  const row = el('tr', {},
    el('td', {}, el('input', { type: 'number', class: 'port-number', min: 1, max: 65535, value: port.number })),
    el('td', {}, protocol),
    el('td', {}, el('input', { type: 'text', class: 'port-prefixes', spellcheck: 'false', value: (port.allowedSourceAddressPrefixes || ['*']).join(', ') })),
    el('td', {}, el('input', { type: 'number', class: 'port-max', min: 0.25, max: 24, step: 0.25, value: minutesOf(port.maxRequestAccessDuration) / 60 })),
    el('td', {}, el('button', { type: 'button', class: 'link remove-port', onclick: () => row.remove() }, 'Remove')));
  return row;
}

async function editPolicy(vm) {
  const dialog = $('#policy-dialog');
  dialog.dataset.vm = vm.id;
  $('#policy-vm').textContent = `${vmLabel(vm.id, vm.name)} · ${vm.id}`;
  $('#policy-result').replaceChildren();
  let policy = { ports: DEFAULT_PORTS, requesters: ['*'], approvers: [], closeStandingAccess: false };
  if (vm.status === 'Configured') {
    const stored = await attempt(() => api('GET', vmPath(vm.id)));
    if (!stored) return;
    policy = stored;
    dialog.dataset.version = stored.version ?? '';
  } else {
    delete dialog.dataset.version;
  }
  $('#policy-title').textContent = vm.status === 'Configured' ? 'Edit JIT policy' : 'Enable JIT';
  $('#policy-ports tbody').replaceChildren(...policy.ports.map(portEditor));
  $('#policy-requesters').value = (policy.requesters || []).join('\n');
  $('#policy-approvers').value = (policy.approvers || []).join('\n');
  $('#policy-close-standing').checked = Boolean(policy.closeStandingAccess);
  openDialog(dialog);
}

const lines = (text) => text.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);

async function savePolicy() {
  const dialog = $('#policy-dialog');
  const ports = $$('#policy-ports tbody tr').map((row) => ({
    number: Number($('.port-number', row).value),
    protocol: $('.port-protocol', row).value,
    allowedSourceAddressPrefixes: lines($('.port-prefixes', row).value),
    maxRequestAccessDuration: isoOf(Math.round(Number($('.port-max', row).value) * 60)),
  }));
  const body = {
    ports,
    requesters: lines($('#policy-requesters').value),
    approvers: lines($('#policy-approvers').value),
    closeStandingAccess: $('#policy-close-standing').checked,
  };
  const saved = await attempt(() => api('PUT', vmPath(dialog.dataset.vm), body));
  if (!saved) return;
  const exposures = saved.exposures || [];
  $('#policy-result').replaceChildren(el('div', { class: 'headline' }, `Saved: version ${saved.version}.`),
    exposures.length
      ? el('div', {}, body.closeStandingAccess ? 'Standing rules closed (restored when JIT is disabled):' : 'Standing rules still expose protected ports:',
        el('ul', { class: 'exposures' }, exposures.map((x) => el('li', {},
          `${x.firewall} rule ${x.rule}: ${x.source} can reach port ${x.port}${x.description ? ` (${x.description})` : ''}`))))
      : el('div', {}, 'No standing rule exposes these ports.'));
  await refresh();
}

async function disableJit(vm) {
  if (!window.confirm(`Disable JIT on ${vmLabel(vm.id, vm.name)}? Open grants close and what enabling did is undone.`)) return;
  const done = await attempt(() => api('DELETE', vmPath(vm.id)));
  if (done !== undefined) {
    notice(`JIT disabled on ${vmLabel(vm.id, vm.name)}.`, 'info');
    await refresh();
  }
}

// ------------------------------------------------------------------ wiring

function wire(config) {
  $('#token-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('#token').value.trim());
    $('#token').value = '';
    await attempt(enter);
  });
  $('#oidc-button').addEventListener('click', () => attempt(() => oidcStart(config)));
  $('#signout').addEventListener('click', () => signOut('Signed out.'));
  $('#refresh').addEventListener('click', refresh);
  for (const button of $$('.views [data-view]')) button.addEventListener('click', () => showView(button.dataset.view));
  for (const button of $$('.tabs [data-tab]')) {
    button.addEventListener('click', () => { state.tab = button.dataset.tab; renderVms(); });
  }
  for (const button of $$('dialog .close')) button.addEventListener('click', () => button.closest('dialog').close());
  $('#request-ports').addEventListener('change', fillDurations);
  for (const radio of $$('input[name=source]')) {
    radio.addEventListener('change', () => { $('#source-cidr').disabled = !$('#source-range').checked; });
  }
  $('#request-submit').addEventListener('click', submitRequest);
  $('#policy-add-port').addEventListener('click', () => $('#policy-ports tbody').append(portEditor(
    { number: '', protocol: 'tcp', allowedSourceAddressPrefixes: ['*'], maxRequestAccessDuration: 'PT3H' })));
  $('#policy-save').addEventListener('click', savePolicy);
  $('#deny-submit').addEventListener('click', async () => {
    const dialog = $('#deny-dialog');
    dialog.close();
    await decide({ id: dialog.dataset.request }, 'deny', $('#deny-reason').value.trim());
  });
  $('#activity-apply').addEventListener('click', refresh);
  $('#activity-csv').addEventListener('click', downloadCsv);
}

async function main() {
  const config = await loadConfig();
  wire(config);
  const params = new URLSearchParams(location.search);
  if (config.signIn === 'oidc' && (params.has('code') || params.has('error'))) {
    await attempt(() => oidcFinish(config, params));
  }
  if (sessionStorage.getItem(TOKEN_KEY)) {
    await attempt(enter);
    if (!$('#app').hidden) return;
  }
  showSignIn(config);
}

main().catch((e) => notice(String(e.message || e)));
