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
  // How many refreshes are on their way.
  loading: 0,
  // The live status poll of the request dialog, so that closing the dialog
  // or asking again stops it before it writes into the page.
  follow: null,
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

/** Shows `text` at the top of the page and, since a modal dialog hides the page, in the open dialog too. */
function notice(text, kind = 'error') {
  for (const box of [$('#notice'), ...$$('dialog[open] .dialog-notice')]) {
    box.textContent = text;
    box.className = `${box.id === 'notice' ? 'notice' : 'notice dialog-notice'} ${kind === 'info' ? 'info' : ''}`;
    box.hidden = !text;
  }
}

class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * Calls the API with the signed-in token and returns the response when it
 * is a success; throws ApiFailure with the API's own message otherwise.
 * `options`: `body` (sent as JSON), extra `headers`, an abort `signal`
 * (an aborted call throws the browser's AbortError, which callers drop).
 */
async function call(method, path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  // Signed out (here or in another tab) while something was still on its way.
  if (!token) throw new ApiFailure(401, 'SignedOut', 'you are signed out');
  const { body, signal } = options;
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiFailure(0, 'Unreachable', `the API did not answer: ${e.message}`);
  }
  if (response.ok) return response;
  const text = await response.text();
  let error = {};
  try { error = (JSON.parse(text) || {}).error || {}; } catch { error = {}; }
  throw new ApiFailure(response.status, error.code || String(response.status), error.message || text || response.statusText);
}

/** Calls the API (see `call`) and returns its JSON answer, or null for an empty one. */
async function api(method, path, body, options = {}) {
  const response = await call(method, path, { ...options, body });
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

const aborted = (e) => e && e.name === 'AbortError';

/** Runs an action, showing the API's message if it fails; a new action clears the last message. */
async function attempt(action, clear = true) {
  try {
    if (clear) notice('');
    return await action();
  } catch (e) {
    if (aborted(e)) return undefined;
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
/** The mark of a request opened without approval, or nothing. */
const breakGlassMark = (record) => (record.breakGlass ? el('span', { class: 'pill break-glass', title: 'Opened without approval (break-glass)' }, 'break-glass') : '');

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
  for (const box of $$('.dialog-notice', dialog)) box.hidden = true;
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

/** "https://idp/x/" and "https://idp/x" name the same issuer. */
const sameIssuer = (a, b) => typeof a === 'string' && typeof b === 'string'
  && a.replace(/\/+$/, '') === b.replace(/\/+$/, '');

async function discover(issuer) {
  const response = await fetch(`${issuer}/.well-known/openid-configuration`);
  if (!response.ok) throw new Error(`the identity provider's discovery document answered ${response.status}`);
  const discovery = await response.json();
  // OpenID Connect Discovery 1.0, 4.3: the document must name the issuer it was fetched from.
  if (!sameIssuer(discovery.issuer, issuer)) {
    throw new Error(`the identity provider's discovery document names the issuer ${discovery.issuer}, not ${issuer}`);
  }
  return discovery;
}

/**
 * The redirect URI registered for the console: the root of the API that
 * serves it (README, "Sign-in"), whatever address the page was opened at,
 * so that it is always the one the provider knows.
 */
const redirectUri = () => `${location.origin}/`;

/** OpenID Connect authorization code with PKCE: off to the provider. */
async function oidcStart(config) {
  const discovery = await discover(config.issuer);
  const verifier = randomText(48);
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
  const stateText = randomText(16);
  const nonce = randomText(16);
  const redirect = redirectUri();
  sessionStorage.setItem(PKCE_KEY, JSON.stringify({
    verifier, state: stateText, nonce, tokenEndpoint: discovery.token_endpoint, redirect,
  }));
  const query = new URLSearchParams({
    response_type: 'code',
    client_id: config.clientId,
    redirect_uri: redirect,
    scope: config.scope || 'openid',
    state: stateText,
    nonce,
    code_challenge: b64url(new Uint8Array(digest)),
    code_challenge_method: 'S256',
  });
  location.assign(`${discovery.authorization_endpoint}?${query}`);
}

/** The claims of a JWT (not its signature: the API's JWT authorizer checks that). */
function claimsOf(jwt) {
  const parts = String(jwt).split('.');
  if (parts.length !== 3) return null;
  try {
    const text = atob(parts[1].replace(/-/g, '+').replace(/_/g, '/'));
    const bytes = Uint8Array.from(text, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

/**
 * Why the ID token is not one for this sign-in (OpenID Connect Core 1.0,
 * 3.1.3.7), or null when it is: issued by the configured issuer, to this
 * client, with the nonce this tab sent, and not expired.
 */
function idTokenProblem(idToken, config, nonce, now = Date.now()) {
  const claims = claimsOf(idToken);
  if (!claims) return 'the ID token is not a JWT';
  if (!sameIssuer(claims.iss, config.issuer)) return `the ID token was issued by ${claims.iss}, not ${config.issuer}`;
  const audience = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!audience.includes(config.clientId)) return 'the ID token is not for this console (its audience)';
  if (audience.length > 1 && claims.azp !== config.clientId) return 'the ID token was issued to another client (azp)';
  if (!nonce || claims.nonce !== nonce) return 'the ID token does not carry the nonce of this sign-in';
  if (typeof claims.exp !== 'number' || claims.exp * 1000 < now - 60 * 1000) return 'the ID token has expired';
  return null;
}

/** Back from the provider: check the answer, trade the code for tokens, check the ID token. */
async function oidcFinish(config, params) {
  const saved = JSON.parse(sessionStorage.getItem(PKCE_KEY) || 'null');
  sessionStorage.removeItem(PKCE_KEY);
  // The code and state leave the address bar (and the history) at once.
  history.replaceState(null, '', location.pathname);
  if (params.get('error')) throw new Error(`sign-in failed: ${params.get('error_description') || params.get('error')}`);
  if (!saved || !params.get('state') || saved.state !== params.get('state')) {
    throw new Error('sign-in failed: the answer does not belong to this sign-in; try again');
  }
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
  // The ID token's audience is this client, which the API's JWT authorizer
  // accepts; it is the only token the page keeps (in this tab only).
  const token = tokens.id_token;
  if (!token) throw new Error('sign-in failed: the provider gave no ID token');
  const problem = idTokenProblem(token, config, saved.nonce);
  if (problem) throw new Error(`sign-in failed: ${problem}; try again`);
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
  stopFollowing();
  for (const dialog of $$('dialog[open]')) dialog.close();
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
  // While a refresh runs the page says so, for the browser test to wait on.
  state.loading += 1;
  document.body.dataset.loading = 'true';
  await attempt(async () => {
    state.vms = (await api('GET', '/v1/vms')).value || [];
    fillVmFilter();
    if (state.view === 'vms') renderVms();
    if (state.view === 'mine') await renderMine();
    if (state.view === 'activity') await renderActivity();
    await renderPending();
  }, false);
  state.loading -= 1;
  if (!state.loading) delete document.body.dataset.loading;
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
  stopFollowing();
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
  // Only a principal the VM's policy names for break-glass sees the choice.
  $('#break-glass-row').hidden = !(state.me.breakGlassOf || []).includes(vm.id);
  $('#break-glass').checked = false;
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
  if ($('#break-glass').checked) {
    if (!justification) return notice('Break-glass access needs a justification: say why it cannot wait for an approver.');
    body.breakGlass = true;
  }
  // The poll of an earlier request stops now; this one's starts only if
  // the dialog is still open for it when the API answers.
  stopFollowing();
  const controller = new AbortController();
  state.follow = controller;
  $('#request-submit').disabled = true;
  const record = await attempt(() => api('POST', '/v1/requests', body));
  if (controller.signal.aborted) return undefined;
  if (!record) {
    state.follow = null;
    $('#request-submit').disabled = false;
    return undefined;
  }
  showProgress(record, $('#request-status'));
  return followRequest(record, controller, $('#request-status'));
}

/** Stops the live status poll, if one runs: nothing it still had on its way reaches the page. */
function stopFollowing() {
  if (state.follow) state.follow.abort();
  state.follow = null;
}

/** Waits `ms`, or less when `signal` aborts (then throws its AbortError). */
function pause(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(new DOMException('the poll was stopped', 'AbortError'));
    }, { once: true });
  });
}

/**
 * Shows a request's status live until every port has settled, the dialog
 * closes, or another request starts (either aborts the poll: its pending
 * call and its wait, so no late answer overwrites the page).
 */
async function followRequest(first, controller, box) {
  const { signal } = controller;
  const { id } = first;
  const started = Date.now();
  let record = first;
  for (;;) {
    const settled = record.status === 'Denied' || portsOf(record).every((p) => p.status !== 'Initiating');
    if (settled || Date.now() - started > 10 * 60 * 1000) break;
    const wait = record.status === 'PendingApproval' ? 3000 : 1000;
    record = await attempt(async () => {
      await pause(wait, signal);
      return api('GET', `/v1/requests/${encodeURIComponent(id)}`, undefined, { signal });
    }, false);
    if (signal.aborted || !record) break;
    showProgress(record, box);
  }
  if (state.follow === controller) state.follow = null;
  if (!signal.aborted) await refresh();
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

/**
 * Where a request of mine stands, as the requestor sees it: waiting for an
 * approver (nothing is open yet, it can be withdrawn), open (ports
 * Initiated, with the time left; it can be revoked or extended), opening,
 * or over.
 */
function standing(record) {
  const ports = portsOf(record);
  const open = ports.filter((p) => p.status === 'Initiated');
  const opening = ports.filter((p) => p.status === 'Initiating');
  if (record.status === 'PendingApproval') return { key: 'pending', text: 'Waiting for approval', open: [] };
  if (record.status === 'Denied') return { key: 'denied', text: 'Denied', open: [] };
  if (open.length) return { key: 'open', text: `Open: ${open.map((p) => p.number).join(', ')}`, open };
  if (opening.length) return { key: 'opening', text: 'Opening', open: [] };
  return { key: 'closed', text: ports.some((p) => p.status === 'Failed') ? 'Failed' : 'Closed', open: [] };
}

function mineRow(record) {
  const now = standing(record);
  // Time left only for ports that are open: a pending request's end time is
  // a placeholder until it is approved.
  const end = now.open.map((p) => p.endTimeUtc).sort().pop();
  return el('tr', { dataset: { request: record.id, standing: now.key } },
    el('td', {}, nameOfVm(vmOf(record)), el('span', { class: 'sub' }, vmOf(record))),
    el('td', {}, portSummary(record)),
    el('td', { class: 'status' }, pill(record.status), breakGlassMark(record), el('span', { class: 'sub standing' }, now.text)),
    el('td', end ? { class: 'remaining', dataset: { end } } : { class: 'remaining' }, end ? remaining(end) : '—'),
    el('td', {}, when(record.startTimeUtc), record.justification ? el('span', { class: 'sub' }, record.justification) : null),
    el('td', { class: 'actions' },
      now.key === 'open' ? el('button', { type: 'button', class: 'extend link', onclick: () => extend(record) }, 'Extend') : '',
      // The API's revoke withdraws a request still waiting for approval.
      now.key === 'pending' ? el('button', { type: 'button', class: 'withdraw danger', onclick: () => revoke(record, true) }, 'Withdraw') : '',
      now.key === 'open' || now.key === 'opening'
        ? el('button', { type: 'button', class: 'revoke danger', onclick: () => revoke(record, false) }, 'Revoke') : ''));
}

async function revoke(record, withdraw) {
  const done = await attempt(() => api('POST', `/v1/requests/${encodeURIComponent(record.id)}/revoke`));
  if (done) {
    notice(done.warning ? done.warning : `Request ${record.id} ${withdraw ? 'withdrawn' : 'revoked'}.`, 'info');
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
  $('#break-glass').checked = Boolean(record.breakGlass) && !$('#break-glass-row').hidden;
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
      el('button', { type: 'button', class: 'approve primary', onclick: () => askDecision(record, 'approve') }, 'Approve'),
      el('button', { type: 'button', class: 'deny danger', onclick: () => askDecision(record, 'deny') }, 'Deny')))));
}

/** Asks the approver for the reason: optional to approve, required to deny (the requestor reads it). */
function askDecision(record, verb) {
  const dialog = $('#decision-dialog');
  const deny = verb === 'deny';
  dialog.dataset.request = record.id;
  dialog.dataset.verb = verb;
  $('#decision-title').textContent = deny ? 'Deny request' : 'Approve request';
  $('#decision-request').textContent = `${record.requestor} · ${nameOfVm(vmOf(record))} · ${record.id}`;
  $('#decision-reason-label').textContent = deny
    ? 'Reason (required; shown to the requestor)'
    : 'Reason (optional; kept in the request\'s history)';
  $('#decision-reason').value = '';
  $('#decision-reason').required = deny;
  $('#decision-submit').textContent = deny ? 'Deny' : 'Approve';
  $('#decision-submit').className = deny ? 'danger' : 'primary';
  openDialog(dialog);
  notice('');
}

/** Sends the decision; the dialog stays open with the API's message when it is refused. */
async function decide() {
  const dialog = $('#decision-dialog');
  const { request: id, verb } = dialog.dataset;
  const reason = $('#decision-reason').value.trim();
  if (verb === 'deny' && !reason) {
    notice('Say why you deny it: the requestor reads the reason.');
    return;
  }
  const body = reason ? { reason } : undefined;
  const done = await attempt(() => api('POST', `/v1/requests/${encodeURIComponent(id)}/${verb}`, body));
  if (!done) return;
  dialog.close();
  notice(`Request ${id} ${verb === 'approve' ? 'approved' : 'denied'}.`, 'info');
  await refresh();
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
    el('td', {}, pill(record.status), breakGlassMark(record)),
    el('td', {}, record.decidedBy || '—'),
    el('td', { class: 'justification' }, record.justification || '—'))));
  return undefined;
}

/** The file name the API gives in Content-Disposition, kept to safe characters. */
function fileNameOf(response, fallback) {
  const match = /filename="?([^";]+)"?/i.exec(response.headers.get('content-disposition') || '');
  const name = match ? match[1].replace(/[^A-Za-z0-9._-]/g, '_') : '';
  return /\.csv$/i.test(name) ? name : fallback;
}

/**
 * Saves the API's CSV for the activity filter. The call needs the token,
 * so it is fetched here and saved from a Blob of its bytes as they came
 * (a plain link could not send the token; decoding it as text would drop
 * the UTF-8 byte order mark that spreadsheets such as Excel need).
 */
async function downloadCsv() {
  const query = activityWindow();
  const saved = await attempt(async () => {
    const response = await call('GET', `/v1/audit.csv?${query}`);
    const name = fileNameOf(response, 'jitvm-audit.csv');
    let bytes = new Uint8Array(await response.arrayBuffer());
    const bom = [0xef, 0xbb, 0xbf];
    if (!bom.every((b, i) => bytes[i] === b)) bytes = new Uint8Array([...bom, ...bytes]);
    const url = URL.createObjectURL(new Blob([bytes], { type: 'text/csv;charset=utf-8' }));
    const link = el('a', { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    // The browser has taken the file once the click returns; the URL is
    // let go of a little later, as some browsers read it asynchronously.
    setTimeout(() => URL.revokeObjectURL(url), 60 * 1000);
    return name;
  });
  if (saved) notice(`Downloaded ${saved}.`, 'info');
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

async function editPolicy(vm, reloaded = false) {
  const dialog = $('#policy-dialog');
  dialog.dataset.vm = vm.id;
  $('#policy-vm').textContent = `${vmLabel(vm.id, vm.name)} · ${vm.id}`;
  $('#policy-result').replaceChildren();
  let policy = { ports: DEFAULT_PORTS, requesters: ['*'], approvers: [], closeStandingAccess: false };
  if (vm.status === 'Configured') {
    const stored = await attempt(() => api('GET', vmPath(vm.id)));
    if (!stored) return;
    policy = stored;
    // Saved back with If-Match, so another admin's change in between is
    // never overwritten unseen.
    dialog.dataset.version = String(stored.version);
  } else {
    delete dialog.dataset.version;
  }
  dialog.dataset.status = vm.status;
  dialog.dataset.name = vm.name || '';
  $('#policy-title').textContent = vm.status === 'Configured' ? 'Edit JIT policy' : 'Enable JIT';
  $('#policy-ports tbody').replaceChildren(...policy.ports.map(portEditor));
  $('#policy-requesters').value = (policy.requesters || []).join('\n');
  $('#policy-approvers').value = (policy.approvers || []).join('\n');
  $('#policy-close-standing').checked = Boolean(policy.closeStandingAccess);
  if (reloaded) {
    $('#policy-result').replaceChildren(el('div', { class: 'headline' },
      `Reloaded version ${policy.version}${policy.updatedBy ? `, saved by ${policy.updatedBy}` : ''}; make your change again.`));
  }
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
  const version = dialog.dataset.version;
  const headers = version ? { 'If-Match': `"${version}"` } : {};
  let changed = false;
  const saved = await attempt(async () => {
    try {
      return await api('PUT', vmPath(dialog.dataset.vm), body, { headers });
    } catch (e) {
      if (!(e instanceof ApiFailure) || e.status !== 412) throw e;
      changed = true;
      return undefined;
    }
  });
  if (changed) {
    const vm = { id: dialog.dataset.vm, name: dialog.dataset.name, status: dialog.dataset.status };
    notice('This policy was changed by someone else since you opened it; reload it to see their change, then make yours again.');
    $('#policy-result').replaceChildren(el('div', { class: 'headline error' },
      'Not saved: changed by someone else. ',
      el('button', { type: 'button', class: 'link reload-policy', onclick: () => editPolicy({ ...vm, status: 'Configured' }, true) }, 'Reload')));
    return;
  }
  if (!saved) return;
  dialog.dataset.version = String(saved.version);
  dialog.dataset.status = 'Configured';
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
  $('#decision-submit').addEventListener('click', decide);
  $('#request-dialog').addEventListener('close', stopFollowing);
  $('#activity-apply').addEventListener('click', refresh);
  $('#activity-csv').addEventListener('click', downloadCsv);
}

async function main() {
  const config = await loadConfig();
  wire(config);
  // The page asks for the code flow only: a token in the address's
  // fragment (the implicit flow) did not come from this page's sign-in.
  // It is dropped from the address and never used.
  if (/(^|[#&])(access_token|id_token|code|state)=/.test(location.hash)) {
    history.replaceState(null, '', `${location.pathname}${location.search}`);
    notice('A sign-in answer in the address fragment was ignored; sign in here.');
  }
  const params = new URLSearchParams(location.search);
  if (config.signIn === 'oidc' && (params.has('code') || params.has('state') || params.has('error'))) {
    await attempt(() => oidcFinish(config, params));
  }
  if (sessionStorage.getItem(TOKEN_KEY)) {
    await attempt(enter);
    if (!$('#app').hidden) return;
  }
  showSignIn(config);
}

main().catch((e) => notice(String(e.message || e)));
