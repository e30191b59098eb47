// The gateway's admin page: plain JavaScript, no dependencies, served from the binary.
//
// The API token lives in this tab's sessionStorage only. HTTP calls send it as a bearer header;
// WebSockets send it as the `bearer.TOKEN` subprotocol, never in a URL. Live state comes from
// `ws/events`; linking watches `ws/session/{id}` (the seed's socket), which keeps the QR codes
// coming while the page shows them.
//
// The page does not subscribe to `message.status`: a busy gateway makes several of those a
// second per message, for every session, and the page shows only the selected session's last
// twenty. It reads those every 2 s while the tab is visible instead, so its work stays the same
// however busy the gateway is.
'use strict';

const TOKEN_KEY = 'whatsapp-gateway.token';
const LANG_KEY = 'whatsapp-gateway.lang';

// ---------------------------------------------------------------------------------------------
// Words

const WORDS = {
  es: {
    skip: 'Ir al contenido', title: 'WhatsApp Gateway', language: 'Idioma', signOut: 'Salir',
    close: 'Cerrar', refresh: 'Actualizar', cancel: 'Cancelar', confirm: 'Confirmar',
    'login.title': 'Entrar', 'login.token': 'Token de la API',
    'login.hint': 'El token de API_STATIC_TOKEN (o de .api-token), o uno de API_TOKENS_FILE. Se guarda solo en esta pestaña.',
    'login.submit': 'Entrar', 'login.empty': 'Escriba el token.',
    'login.badProtocol': 'Este token tiene caracteres que un WebSocket no puede llevar; use uno de letras, dígitos y -._~',
    'sessions.title': 'Sesiones', 'sessions.empty': 'Todavía no hay sesiones. Cree una para vincular un número.',
    'create.title': 'Nueva sesión', 'create.id': 'Id (opcional; se genera si queda vacío)',
    'create.idHint': 'Letras, dígitos, _ y -; hasta 64.', 'create.description': 'Descripción',
    'create.submit': 'Crear y vincular', 'create.done': 'Sesión {id} creada.',
    'fact.reason': 'Motivo', 'fact.phone': 'Teléfono', 'fact.jid': 'JID', 'fact.pushName': 'Nombre',
    'fact.connectedAt': 'Conectado desde', 'fact.queue': 'En cola',
    'queue.value': '{n} mensajes ({size})',
    'act.link': 'Vincular con QR', 'act.restart': 'Reiniciar', 'act.logout': 'Cerrar sesión de WhatsApp',
    'act.delete': 'Eliminar',
    'ask.restart': '¿Reiniciar la sesión {id}? Se reconecta con las mismas credenciales.',
    'ask.logout': '¿Cerrar la sesión {id} en WhatsApp? El teléfono la desvincula y habrá que escanear de nuevo. Los mensajes en cola esperan.',
    'ask.delete': '¿Eliminar la sesión {id}? Se desvincula, se borran sus credenciales y fallan sus mensajes en cola. No se puede deshacer.',
    'ask.replay': '¿Reintentar esta entrega?', 'ask.replayAll': '¿Reintentar todas las entregas fallidas de {url}?',
    'done.restart': 'Sesión {id} reiniciada.', 'done.logout': 'Sesión {id} cerrada en WhatsApp.',
    'done.delete': 'Sesión {id} eliminada.', 'done.replay': '{n} entregas vuelven a la cola.',
    'status.disconnected': 'Desconectada', 'status.connecting': 'Conectando…', 'status.qr_ready': 'Esperando escaneo',
    'status.pairing_code': 'Esperando código', 'status.connected': 'Conectado', 'status.logged_out': 'Sesión cerrada',
    'status.error': 'Error',
    'link.help': 'En el teléfono: WhatsApp › Dispositivos vinculados › Vincular un dispositivo, y escanee el código.',
    'link.pairPhone': 'O vincule con un código para el número', 'link.pairSubmit': 'Pedir código',
    'link.stop': 'Dejar de vincular', 'link.waiting': 'Pidiendo un código QR a WhatsApp…',
    'link.scan': 'Escanee el código con el teléfono.', 'link.expires': 'Caduca en {s} s; luego aparece otro.',
    'link.expired': 'Caducó; esperando el siguiente…', 'link.qrAlt': 'Código QR para vincular la sesión {id}',
    'link.connected': '¡Conectado! {phone}', 'link.already': 'Ya estaba conectado.',
    'link.disconnected': 'La sesión se desconectó. Pulse «Vincular con QR» para intentarlo de nuevo.',
    'link.closed': 'La vinculación se detuvo. Pulse «Vincular con QR» para seguir.',
    'link.pairCode': 'Escriba este código en el teléfono: WhatsApp › Dispositivos vinculados › Vincular con el número de teléfono.',
    'link.passkey': 'WhatsApp pide confirmar con la llave de acceso (bloqueo de pantalla) en el teléfono. Confírmelo allí; si no pasa nada, vuelva a vincular.',
    'link.passkeyFailed': 'Falló la confirmación con llave de acceso. Vuelva a vincular con un código QR.',
    'link.unreachable': 'No se puede llegar a WhatsApp desde el servidor; se sigue intentando. Revise su red o firewall.',
    'send.title': 'Enviar una prueba', 'send.to': 'Número', 'send.text': 'Texto (o leyenda del PDF)',
    'send.file': 'PDF (opcional)', 'send.submit': 'Enviar', 'send.accepted': 'Aceptado: {id}',
    'send.needSomething': 'Escriba un texto o elija un PDF.', 'send.needTo': 'Escriba el número.',
    'out.title': 'Mensajes enviados', 'out.empty': 'Nada enviado todavía.',
    'in.title': 'Mensajes recibidos', 'in.empty': 'Nada recibido todavía.',
    'col.time': 'Hora', 'col.to': 'Para', 'col.from': 'De', 'col.content': 'Contenido', 'col.status': 'Estado',
    'msg.queued': 'En cola', 'msg.sending': 'Enviando', 'msg.sent': 'Enviado', 'msg.delivered': 'Entregado',
    'msg.read': 'Leído', 'msg.failed': 'Falló',
    'kind.image': 'imagen', 'kind.video': 'vídeo', 'kind.audio': 'audio', 'kind.document': 'documento',
    'kind.sticker': 'sticker', 'kind.location': 'ubicación', 'kind.contact': 'contacto', 'kind.reaction': 'reacción',
    'kind.other': 'otro',
    'webhooks.title': 'Webhooks',
    'webhooks.empty': 'No hay webhooks registrados. Registre uno aquí (o con POST /api/webhooks o WEBHOOK_URL).',
    'webhooks.all': 'todos', 'webhooks.allSessions': 'todas', 'webhooks.events': 'Eventos: {e}',
    'webhooks.sessions': 'Sesiones: {s}', 'webhooks.pending': '{n} pendientes',
    'webhooks.disabled': 'Desactivado: {why}', 'webhooks.dead': 'Entregas fallidas', 'webhooks.delete': 'Eliminar',
    'hook.title': 'Nuevo webhook', 'hook.url': 'URL que recibe los eventos (http o https)',
    'hook.events': 'Eventos (ninguno marcado: todos)', 'hook.sessions': 'Sesiones (ninguna marcada: todas)',
    'hook.submit': 'Registrar', 'hook.needUrl': 'Escriba la URL.',
    'hook.secretOnce': 'Guarde el secreto de este webhook ahora: no se vuelve a mostrar. Con él se comprueba la firma de cada entrega.',
    'hook.secretDone': 'Ya lo guardé',
    'ask.hookDelete': '¿Eliminar el webhook {url}? Deja de recibir eventos y se borran sus entregas pendientes y fallidas.',
    'done.hookCreate': 'Webhook {url} registrado.', 'done.hookDelete': 'Webhook {url} eliminado.',
    'dead.title': 'Entregas fallidas de {url}', 'dead.replay': 'Reintentar', 'dead.replayAll': 'Reintentar todas',
    'dead.empty': 'Ninguna entrega fallida.', 'dead.attempts': '{n} intentos',
    'live.on': 'En vivo', 'live.off': 'Reconectando…',
    'err.network': 'No se pudo contactar con el servidor: {why}',
  },
  en: {
    skip: 'Skip to content', title: 'WhatsApp Gateway', language: 'Language', signOut: 'Sign out',
    close: 'Close', refresh: 'Refresh', cancel: 'Cancel', confirm: 'Confirm',
    'login.title': 'Sign in', 'login.token': 'API token',
    'login.hint': 'The token from API_STATIC_TOKEN (or .api-token), or one from API_TOKENS_FILE. It is kept in this tab only.',
    'login.submit': 'Sign in', 'login.empty': 'Type the token.',
    'login.badProtocol': 'This token has characters a WebSocket cannot carry; use one of letters, digits and -._~',
    'sessions.title': 'Sessions', 'sessions.empty': 'No sessions yet. Create one to link a number.',
    'create.title': 'New session', 'create.id': 'Id (optional; generated when empty)',
    'create.idHint': 'Letters, digits, _ and -; up to 64.', 'create.description': 'Description',
    'create.submit': 'Create and link', 'create.done': 'Session {id} created.',
    'fact.reason': 'Reason', 'fact.phone': 'Phone', 'fact.jid': 'JID', 'fact.pushName': 'Name',
    'fact.connectedAt': 'Connected since', 'fact.queue': 'Queued',
    'queue.value': '{n} messages ({size})',
    'act.link': 'Link with QR', 'act.restart': 'Restart', 'act.logout': 'Log out of WhatsApp', 'act.delete': 'Delete',
    'ask.restart': 'Restart session {id}? It reconnects with the same credentials.',
    'ask.logout': 'Log session {id} out of WhatsApp? The phone unlinks it and it must be scanned again. Queued messages wait.',
    'ask.delete': 'Delete session {id}? It is unlinked, its credentials are erased and its queued messages fail. This cannot be undone.',
    'ask.replay': 'Retry this delivery?', 'ask.replayAll': 'Retry every failed delivery to {url}?',
    'done.restart': 'Session {id} restarted.', 'done.logout': 'Session {id} logged out of WhatsApp.',
    'done.delete': 'Session {id} deleted.', 'done.replay': '{n} deliveries are queued again.',
    'status.disconnected': 'Disconnected', 'status.connecting': 'Connecting…', 'status.qr_ready': 'Waiting for a scan',
    'status.pairing_code': 'Waiting for the code', 'status.connected': 'Connected', 'status.logged_out': 'Logged out',
    'status.error': 'Error',
    'link.help': 'On the phone: WhatsApp › Linked devices › Link a device, then scan the code.',
    'link.pairPhone': 'Or link with a code for the number', 'link.pairSubmit': 'Get a code',
    'link.stop': 'Stop linking', 'link.waiting': 'Asking WhatsApp for a QR code…',
    'link.scan': 'Scan the code with the phone.', 'link.expires': 'Expires in {s} s; another one follows.',
    'link.expired': 'Expired; waiting for the next one…', 'link.qrAlt': 'QR code to link session {id}',
    'link.connected': 'Connected! {phone}', 'link.already': 'It was already connected.',
    'link.disconnected': 'The session went down. Press “Link with QR” to try again.',
    'link.closed': 'Linking stopped. Press “Link with QR” to go on.',
    'link.pairCode': 'Type this code on the phone: WhatsApp › Linked devices › Link with phone number.',
    'link.passkey': 'WhatsApp asks you to confirm with the passkey (screen lock) on the phone. Confirm it there; if nothing happens, link again.',
    'link.passkeyFailed': 'The passkey confirmation failed. Link again with a QR code.',
    'link.unreachable': 'The server cannot reach WhatsApp; it keeps trying. Check its network or firewall.',
    'send.title': 'Send a test', 'send.to': 'Number', 'send.text': 'Text (or the PDF’s caption)',
    'send.file': 'PDF (optional)', 'send.submit': 'Send', 'send.accepted': 'Accepted: {id}',
    'send.needSomething': 'Type a text or choose a PDF.', 'send.needTo': 'Type the number.',
    'out.title': 'Sent messages', 'out.empty': 'Nothing sent yet.',
    'in.title': 'Received messages', 'in.empty': 'Nothing received yet.',
    'col.time': 'Time', 'col.to': 'To', 'col.from': 'From', 'col.content': 'Content', 'col.status': 'Status',
    'msg.queued': 'Queued', 'msg.sending': 'Sending', 'msg.sent': 'Sent', 'msg.delivered': 'Delivered',
    'msg.read': 'Read', 'msg.failed': 'Failed',
    'kind.image': 'image', 'kind.video': 'video', 'kind.audio': 'audio', 'kind.document': 'document',
    'kind.sticker': 'sticker', 'kind.location': 'location', 'kind.contact': 'contact', 'kind.reaction': 'reaction',
    'kind.other': 'other',
    'webhooks.title': 'Webhooks',
    'webhooks.empty': 'No webhooks registered. Register one here (or with POST /api/webhooks or WEBHOOK_URL).',
    'webhooks.all': 'all', 'webhooks.allSessions': 'all', 'webhooks.events': 'Events: {e}',
    'webhooks.sessions': 'Sessions: {s}', 'webhooks.pending': '{n} pending',
    'webhooks.disabled': 'Disabled: {why}', 'webhooks.dead': 'Failed deliveries', 'webhooks.delete': 'Delete',
    'hook.title': 'New webhook', 'hook.url': 'URL that receives the events (http or https)',
    'hook.events': 'Events (none checked: all)', 'hook.sessions': 'Sessions (none checked: all)',
    'hook.submit': 'Register', 'hook.needUrl': 'Type the URL.',
    'hook.secretOnce': 'Keep this webhook’s secret now: it is not shown again. It checks the signature of every delivery.',
    'hook.secretDone': 'I have kept it',
    'ask.hookDelete': 'Delete the webhook {url}? It stops receiving events, and its pending and failed deliveries are erased.',
    'done.hookCreate': 'Webhook {url} registered.', 'done.hookDelete': 'Webhook {url} deleted.',
    'dead.title': 'Failed deliveries to {url}', 'dead.replay': 'Retry', 'dead.replayAll': 'Retry all',
    'dead.empty': 'No failed deliveries.', 'dead.attempts': '{n} attempts',
    'live.on': 'Live', 'live.off': 'Reconnecting…',
    'err.network': 'Could not reach the server: {why}',
  },
};

let lang = pickLanguage();

function pickLanguage() {
  const saved = localStorage.getItem(LANG_KEY);
  if (saved && WORDS[saved]) return saved;
  const wanted = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || 'es'];
  for (const l of wanted) {
    const base = String(l).toLowerCase().split('-')[0];
    if (WORDS[base]) return base;
  }
  return 'es';
}

function t(key, vars) {
  let text = (WORDS[lang] && WORDS[lang][key]) || WORDS.en[key] || key;
  if (vars) for (const [k, v] of Object.entries(vars)) text = text.split('{' + k + '}').join(String(v));
  return text;
}

/** The page's own words for a message shown outside a render (a notice, a result, an error of
 * the page's): a key and its values, spelled again when the language changes. */
class Words {
  constructor(key, vars) { this.key = key; this.vars = vars; }
  toString() { return t(this.key, this.vars); }
}

function words(key, vars) { return new Words(key, vars); }

/** Element id → the Words it shows now. */
const spoken = new Map();

function applyLanguage() {
  document.documentElement.lang = lang;
  $('lang').value = lang;
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll('[data-i18n-label]')) el.setAttribute('aria-label', t(el.dataset.i18nLabel));
  for (const [id, shown] of spoken) $(id).textContent = String(shown);
  renderAll();
}

// ---------------------------------------------------------------------------------------------
// Small helpers

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function show(node, visible) { node.hidden = !visible; }

/** Shows `text` in element `id`: a string as it is, or Words that follow the language. */
function setText(id, text) {
  if (text instanceof Words) spoken.set(id, text);
  else spoken.delete(id);
  $(id).textContent = text ? String(text) : '';
}

function when(ms) {
  if (!ms) return '—';
  return new Date(ms).toLocaleString(lang === 'es' ? 'es' : 'en', { dateStyle: 'short', timeStyle: 'medium' });
}

function bytes(n) {
  if (n < 1024) return n + ' B';
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KiB';
  return (n / 1024 / 1024).toFixed(1) + ' MiB';
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

// ---------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  describe() { return this.code ? `${this.message} (${this.code})` : this.message; }
}

/** An error in words: the API's own message (in the page's language, see `api`) and code, or
 * the page's words for a network failure. */
function describe(error) {
  if (error instanceof ApiError) return error.describe();
  return words('err.network', { why: error && error.message ? error.message : String(error) });
}

/** Calls the API: `body` is JSON unless it is a FormData. Resolves to the parsed JSON (or null).
 * Error messages come in the page's language. */
async function api(method, path, body) {
  const headers = { Authorization: 'Bearer ' + state.token, Accept: 'application/json', 'Accept-Language': lang };
  const init = { method, headers, cache: 'no-store' };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (!response.ok) {
    const err = json && json.error;
    throw new ApiError(response.status, err && err.code, (err && err.message) || `HTTP ${response.status}`);
  }
  return json;
}

/** The ws:// or wss:// address of a path beside this page. */
function socketUrl(path) {
  const url = new URL(path, document.baseURI);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

function openSocket(path) {
  return new WebSocket(socketUrl(path), ['bearer.' + state.token]);
}

// A subprotocol is an RFC 7230 token.
const PROTOCOL_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

// ---------------------------------------------------------------------------------------------
// State

const state = {
  token: null,
  sessions: new Map(), // id → the API's session object
  selected: null,
  linking: null, // { id, socket, qr: {text, png, expiresAt}, phase, pairCode, note }
  events: null,
  eventsRetry: 1000,
  out: [], incoming: [],
  webhooks: [], dead: null, // { webhook, items }
  secret: null, // { id, url, value }: a new endpoint's secret, shown until the person has kept it
};

// ---------------------------------------------------------------------------------------------
// Toasts and confirmations

/** How long a notice stays on screen. An error stays until it is closed. */
const NOTICE_MS = 5000;

let toastTimer = null;
function toast(message, isError) {
  setText('toast-text', message);
  $('toast').classList.toggle('is-error', !!isError);
  show($('toast'), true);
  clearTimeout(toastTimer);
  toastTimer = isError ? null : setTimeout(hideToast, NOTICE_MS);
}

function hideToast() {
  clearTimeout(toastTimer);
  toastTimer = null;
  show($('toast'), false);
}

function confirmAction(question) {
  const dialog = $('confirm');
  setText('confirm-text', question);
  return new Promise((resolve) => {
    const done = (answer) => {
      $('confirm-ok').removeEventListener('click', ok);
      $('confirm-cancel').removeEventListener('click', cancel);
      dialog.removeEventListener('cancel', cancel);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const ok = () => done(true);
    const cancel = (e) => { if (e) e.preventDefault(); done(false); };
    $('confirm-ok').addEventListener('click', ok);
    $('confirm-cancel').addEventListener('click', cancel);
    dialog.addEventListener('cancel', cancel);
    dialog.showModal();
    $('confirm-cancel').focus();
  });
}

/** Runs an action with its button disabled; shows its error in `errorId` (and as a toast). */
async function busy(button, errorId, action) {
  if (button) button.disabled = true;
  if (errorId) setText(errorId, '');
  try {
    return await action();
  } catch (error) {
    const text = describe(error);
    if (errorId) setText(errorId, text);
    else toast(text, true);
    // The token stopped working (removed from the tokens file): back to the login, saying why.
    if (error instanceof ApiError && (error.status === 401 || error.code === 'INVALID_TOKEN') && state.token) signOut(text);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Login

async function signIn(token) {
  state.token = token;
  let list;
  try {
    list = await api('GET', 'api/sessions');
  } catch (error) {
    state.token = null;
    throw error;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  show($('login'), false);
  show($('app'), true);
  show($('signout'), true);
  keepSessions(list.sessions);
  renderSessions();
  connectEvents();
  loadWebhooks();
}

function signOut(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  stopLinking();
  if (state.events) { state.events.onclose = null; state.events.close(); state.events = null; }
  state.sessions.clear();
  state.selected = null;
  state.secret = null;
  renderSecret();
  show($('app'), false);
  show($('signout'), false);
  show($('login'), true);
  setText('live', '');
  $('token').value = '';
  setText('login-error', typeof why === 'string' || why instanceof Words ? why : '');
  $('token').focus();
}

// ---------------------------------------------------------------------------------------------
// Live events

const LIVE_TYPES = 'session.status,session.qr,session.connected,session.logged_out,message.received';
/** How often the selected session's sent messages and queue are read again, while the tab shows. */
const POLL_MS = 2000;

function connectEvents() {
  if (!state.token) return;
  let socket;
  try { socket = openSocket('ws/events?types=' + LIVE_TYPES); } catch (error) { toast(describe(error), true); return; }
  state.events = socket;
  socket.onopen = () => {
    state.eventsRetry = 1000;
    setText('live', words('live.on'));
    $('live').classList.add('is-on');
  };
  socket.onmessage = (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch (_) { return; }
    onEvent(event);
  };
  socket.onclose = () => {
    if (state.events !== socket) return;
    setText('live', words('live.off'));
    $('live').classList.remove('is-on');
    state.events = null;
    const wait = state.eventsRetry;
    state.eventsRetry = Math.min(wait * 2, 30000);
    setTimeout(() => { if (state.token && !state.events) { connectEvents(); refreshSessions(); } }, wait);
  };
}

function onEvent(event) {
  const id = event.sessionId;
  switch (event.event) {
    case 'session.qr':
      if (state.linking && state.linking.id === id && event.data) {
        showQr(event.data.qr, event.data.qrPng, event.data.expiresAt);
      }
      refreshSession(id);
      break;
    case 'session.status':
    case 'session.connected':
    case 'session.logged_out':
      refreshSession(id);
      break;
    case 'message.received':
      if (id === state.selected) refreshMessages();
      break;
    case 'lagged':
      refreshSessions();
      refreshMessages();
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------------------------------------
// Sessions

/** Keeps `session` unless the page holds a newer snapshot of it (by `updatedAt`): answers to
 * requests made at different times (a restart's answer, a refresh, the list) arrive in any
 * order, and the page must never step back to an older state. */
function keepSession(session) {
  const held = state.sessions.get(session.sessionId);
  if (held && held.updatedAt > session.updatedAt) return false;
  state.sessions.set(session.sessionId, session);
  return true;
}

/** The sessions of a full list: new ones and newer snapshots are kept, unlisted ones go. */
function keepSessions(list) {
  const listed = new Set(list.map((s) => s.sessionId));
  for (const id of [...state.sessions.keys()]) if (!listed.has(id)) state.sessions.delete(id);
  for (const session of list) keepSession(session);
}

const pendingRefresh = new Set();
const flushRefresh = debounce(async () => {
  const ids = [...pendingRefresh];
  pendingRefresh.clear();
  for (const id of ids) {
    try {
      keepSession(await api('GET', 'api/sessions/' + encodeURIComponent(id)));
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) state.sessions.delete(id);
      else continue;
    }
  }
  renderSessions();
}, 100);

function refreshSession(id) {
  if (!id) return;
  pendingRefresh.add(id);
  flushRefresh();
}

async function refreshSessions() {
  await busy($('sessions-refresh'), 'sessions-error', async () => {
    const list = await api('GET', 'api/sessions');
    keepSessions(list.sessions);
    renderSessions();
  });
}

function statusLabel(status) { return t('status.' + status); }

function renderSessions() {
  const list = $('session-list');
  // Re-rendering replaces the buttons: keep the keyboard focus on the same session.
  const focused = list.contains(document.activeElement) ? document.activeElement.dataset.session : null;
  list.replaceChildren();
  const ids = [...state.sessions.keys()].sort();
  for (const id of ids) {
    const s = state.sessions.get(id);
    const button = el('button', {
      type: 'button', class: 'session', 'data-session': id, 'data-status': s.status,
      'aria-current': id === state.selected ? 'true' : null,
      onclick: () => select(id),
    },
    el('span', { class: 'session-id', text: id }),
    el('span', { class: 'badge status-' + s.status, text: statusLabel(s.status) }),
    s.description ? el('span', { class: 'session-description', text: s.description }) : null);
    list.append(el('li', {}, button));
  }
  show($('sessions-empty'), ids.length === 0);
  renderChoices($('hook-sessions'), 'sessions', ids);
  if (focused) {
    const again = list.querySelector(`button[data-session="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
  if (state.selected && !state.sessions.has(state.selected)) {
    state.selected = null;
    stopLinking();
  }
  renderDetail();
}

function select(id) {
  if (state.selected !== id) {
    stopLinking();
    state.out = [];
    state.incoming = [];
    setText('send-result', '');
    setText('send-error', '');
    setText('detail-error', '');
  }
  state.selected = id;
  renderSessions();
  refreshMessages();
  $('detail-title').focus();
}

function renderDetail() {
  const s = state.selected && state.sessions.get(state.selected);
  show($('detail'), !!s);
  if (!s) return;
  $('detail').dataset.session = s.sessionId;
  $('detail').dataset.status = s.status;
  $('detail').dataset.connectedAt = s.connectedAt || '';
  setText('detail-title', s.sessionId);
  const badge = $('detail-status');
  badge.className = 'badge status-' + s.status;
  badge.textContent = statusLabel(s.status);
  setText('detail-description', s.description);
  setText('fact-reason', s.reason || '—');
  setText('fact-phone', s.me ? '+' + s.me.phone : '—');
  setText('fact-jid', s.me ? s.me.jid : '—');
  setText('fact-push-name', (s.me && s.me.pushName) || '—');
  setText('fact-connected-at', s.status === 'connected' ? when(s.connectedAt) : '—');
  setText('fact-queue', t('queue.value', { n: s.queue.pending, size: bytes(s.queue.bytes) }));
  $('fact-reason').classList.toggle('error', s.status === 'error' || s.status === 'logged_out');
  renderLinking();
  renderMessages();
}

async function createSession(event) {
  event.preventDefault();
  const id = $('create-id').value.trim();
  const description = $('create-description').value.trim();
  const body = {};
  if (id) body.sessionId = id;
  if (description) body.description = description;
  await busy($('create-submit'), 'create-error', async () => {
    const session = await api('POST', 'api/sessions', body);
    keepSession(session);
    $('create-id').value = '';
    $('create-description').value = '';
    toast(words('create.done', { id: session.sessionId }));
    select(session.sessionId);
    startLinking(session.sessionId);
  });
}

async function sessionAction(kind) {
  const id = state.selected;
  if (!id) return;
  if (!(await confirmAction(words('ask.' + kind, { id })))) return;
  const path = 'api/sessions/' + encodeURIComponent(id);
  await busy($('act-' + kind), 'detail-error', async () => {
    if (kind === 'delete') {
      await api('DELETE', path);
      stopLinking();
      state.sessions.delete(id);
      state.selected = null;
      renderSessions();
    } else {
      if (kind === 'logout') stopLinking();
      // A restart answers before the session has restarted: an older snapshot than the live
      // events may already have brought, and then it is not kept.
      const session = await api('POST', path + '/' + kind);
      if (session && session.sessionId) keepSession(session);
      renderSessions();
    }
    toast(words('done.' + kind, { id }));
  });
}

// ---------------------------------------------------------------------------------------------
// Linking

function startLinking(id) {
  stopLinking();
  let socket;
  try { socket = openSocket('ws/session/' + encodeURIComponent(id)); } catch (error) {
    setText('detail-error', describe(error));
    return;
  }
  const linking = { id, socket, qr: null, phase: 'waiting', pairCode: null, note: null };
  state.linking = linking;
  socket.onmessage = (message) => {
    let frame;
    try { frame = JSON.parse(message.data); } catch (_) { return; }
    if (state.linking !== linking) return;
    if (frame.event === 'qr') {
      // The image comes with the `session.qr` event; fetch it if that has not arrived.
      if (!linking.qr || linking.qr.text !== frame.data) setTimeout(() => fetchQr(linking, frame.data), 1500);
    } else if (frame.event === 'status') {
      if (frame.data === 'connected' || frame.data === 'already_connected') {
        linking.phase = frame.data === 'connected' ? 'connected' : 'already';
        refreshSession(id);
      } else if (frame.data === 'disconnected') {
        linking.phase = 'disconnected';
      }
    } else if (frame.event === 'error') {
      linking.note = frame.data;
    }
    renderLinking();
  };
  socket.onclose = (close) => {
    if (state.linking !== linking) return;
    linking.socket = null;
    if (linking.phase === 'waiting') {
      linking.phase = 'closed';
      if (close.code !== 1000 && close.code !== 1001 && close.reason) linking.note = close.reason;
    }
    renderLinking();
  };
  renderLinking();
}

async function fetchQr(linking, text) {
  if (state.linking !== linking || (linking.qr && linking.qr.text === text) || linking.phase !== 'waiting') return;
  try {
    const qr = await api('GET', 'api/sessions/' + encodeURIComponent(linking.id) + '/qr');
    if (state.linking === linking && linking.phase === 'waiting') {
      showQr(qr.qrText, qr.qr, qr.expiresAt);
      refreshSession(linking.id);
    }
  } catch (_) {
    // The live event or the next rotation will bring one.
  }
}

function stopLinking() {
  const linking = state.linking;
  state.linking = null;
  if (linking && linking.socket) {
    linking.socket.onclose = null;
    linking.socket.close(1000);
  }
  renderLinking();
}

function showQr(text, png, expiresAt) {
  const linking = state.linking;
  if (!linking || !text || !png || linking.phase !== 'waiting') return;
  linking.qr = { text, png, expiresAt: expiresAt || null };
  renderLinking();
}

function renderLinking() {
  const linking = state.linking && state.linking.id === state.selected ? state.linking : null;
  const selected = state.selected && state.sessions.get(state.selected);
  $('act-link').disabled = !selected || selected.status === 'connected' || (!!linking && linking.phase === 'waiting');
  show($('linking'), !!linking);
  if (!linking) return;
  const s = state.sessions.get(linking.id);
  const img = $('qr');
  const waiting = linking.phase === 'waiting';
  // The QR shows with the session's own word for it, qr_ready, from the same snapshot as the
  // badge: the page never shows a QR under "Connecting…", nor one the session has moved past.
  const showing = waiting && linking.qr && !linking.pairCode && !!s && s.status === 'qr_ready';
  show($('qr-box'), !!showing);
  show($('qr-help'), waiting && !linking.pairCode);
  show($('pair-form'), waiting && !linking.pairCode);
  show($('link-stop'), waiting);
  if (showing) {
    if (img.dataset.qr !== linking.qr.text) {
      img.src = linking.qr.png;
      img.dataset.qr = linking.qr.text;
    }
    img.alt = t('link.qrAlt', { id: linking.id });
  } else {
    img.removeAttribute('src');
    img.dataset.qr = '';
  }
  show($('pair-code'), waiting && !!linking.pairCode);
  $('pair-code').textContent = linking.pairCode || '';
  renderExpiry();

  const state_ = $('link-state');
  state_.classList.remove('is-ok', 'is-error');
  let said;
  if (linking.phase === 'connected' || linking.phase === 'already' || (s && s.status === 'connected')) {
    const phone = s && s.me ? '+' + s.me.phone : '';
    said = linking.phase === 'already' ? t('link.already') : t('link.connected', { phone });
    state_.classList.add('is-ok');
    show($('qr-box'), false);
    show($('qr-help'), false);
    show($('pair-form'), false);
    show($('pair-code'), false);
    show($('link-stop'), false);
  } else if (linking.phase === 'disconnected') {
    said = t('link.disconnected');
    state_.classList.add('is-error');
  } else if (linking.phase === 'closed') {
    said = t('link.closed') + (linking.note ? ' ' + linking.note : '');
    state_.classList.add('is-error');
  } else if (linking.pairCode) {
    said = t('link.pairCode');
  } else {
    said = showing ? t('link.scan') : t('link.waiting');
  }
  const hint = hintFor(s, linking.note);
  if (hint && linking.phase === 'waiting') {
    // After a passkey request the phone has scanned already: say only what to do now.
    said = hint.passkey ? hint.text : said + ' ' + hint.text;
    state_.classList.add('is-error');
  }
  state_.dataset.phase = linking.phase;
  state_.textContent = said;
}

/** Words a person can act on, for the problems the server reports in English. */
function hintFor(session, note) {
  const original = (session && session.reason) || note || '';
  const reason = [session && session.reason, note].filter(Boolean).join(' ').toLowerCase();
  if (!reason) return null;
  if (reason.includes('passkey linking failed')) return { passkey: true, text: t('link.passkeyFailed') };
  if (reason.includes('passkey')) return { passkey: true, text: t('link.passkey') };
  if (reason.includes('cannot reach whatsapp')) {
    return { passkey: false, text: t('link.unreachable') + (lang === 'en' ? '' : ` (${original})`) };
  }
  return note ? { passkey: false, text: note } : null;
}

function renderExpiry() {
  const linking = state.linking;
  const caption = $('qr-expiry');
  if (!linking || !linking.qr || !linking.qr.expiresAt) { caption.textContent = ''; return; }
  const left = Math.round((linking.qr.expiresAt - Date.now()) / 1000);
  caption.textContent = left > 0 ? t('link.expires', { s: left }) : t('link.expired');
}

async function requestPairingCode(event) {
  event.preventDefault();
  const linking = state.linking;
  if (!linking) return;
  const phone = $('pair-phone').value.trim();
  await busy($('pair-submit'), 'detail-error', async () => {
    const answer = await api('POST', 'api/sessions/' + encodeURIComponent(linking.id) + '/pairing-code', { phone });
    linking.pairCode = answer.code;
    renderLinking();
  });
}

// ---------------------------------------------------------------------------------------------
// Messages

const refreshMessages = debounce(async () => {
  const id = state.selected;
  if (!id) return;
  const base = 'api/sessions/' + encodeURIComponent(id) + '/messages?limit=20&direction=';
  try {
    const [out, incoming] = await Promise.all([api('GET', base + 'out'), api('GET', base + 'in')]);
    if (state.selected !== id) return;
    state.out = out.items;
    state.incoming = incoming.items;
    setText('messages-error', '');
  } catch (error) {
    setText('messages-error', describe(error));
  }
  renderMessages();
}, 150);

/** Longest text shown in a table cell, in characters. */
const CELL_CHARS = 100;

/** What a message carries, in a few words: its text (a sent one's `preview`), or its kind, file
 * name and caption; cut to fit a table cell. */
function content(m) {
  const parts = [];
  if (m.type && m.type !== 'text') parts.push('[' + t('kind.' + m.type) + ']');
  if (m.fileName) parts.push(m.fileName);
  const gist = m.text || m.preview || m.caption || m.summary;
  if (gist) parts.push(gist);
  return shorten(parts.join(' '), CELL_CHARS);
}

function shorten(text, chars) {
  const line = text.replace(/\s+/g, ' ').trim();
  const letters = [...line];
  return letters.length <= chars ? line : letters.slice(0, chars - 1).join('').trimEnd() + '…';
}

function renderMessages() {
  const outBody = $('out-table').querySelector('tbody');
  outBody.replaceChildren(...state.out.map((m) => el('tr', { 'data-message-id': m.messageId, 'data-status': m.status },
    el('td', { text: when(m.createdAt) }),
    el('td', { text: '+' + m.to }),
    el('td', { text: content(m) }),
    el('td', {},
      el('span', { class: 'badge msg-' + m.status, text: t('msg.' + m.status) }),
      m.lastError ? el('span', { class: 'error small', text: ' ' + m.lastError }) : null))));
  show($('out-empty'), state.out.length === 0);
  const inBody = $('in-table').querySelector('tbody');
  inBody.replaceChildren(...state.incoming.map((m) => el('tr', { 'data-message-id': m.messageId },
    el('td', { text: when(m.timestamp) }),
    el('td', { text: (m.from ? '+' + m.from : m.chat) + (m.pushName ? ' · ' + m.pushName : '') }),
    el('td', { text: content(m) }))));
  show($('in-empty'), state.incoming.length === 0);
}

async function sendTest(event) {
  event.preventDefault();
  const id = state.selected;
  if (!id) return;
  setText('send-result', '');
  const to = $('send-to').value.trim();
  const text = $('send-text').value;
  const file = $('send-file').files[0];
  if (!to) { setText('send-error', words('send.needTo')); $('send-to').focus(); return; }
  if (!file && !text.trim()) { setText('send-error', words('send.needSomething')); $('send-text').focus(); return; }
  let body;
  if (file) {
    body = new FormData();
    body.append('to', to);
    body.append('type', 'document');
    if (text.trim()) body.append('caption', text);
    body.append('file', file, file.name);
  } else {
    body = { to, type: 'text', text };
  }
  await busy($('send-submit'), 'send-error', async () => {
    const accepted = await api('POST', 'api/sessions/' + encodeURIComponent(id) + '/messages', body);
    setText('send-result', words('send.accepted', { id: accepted.messageId }));
    $('send-result').dataset.messageId = accepted.messageId;
    $('send-file').value = '';
    refreshMessages();
  });
}

// ---------------------------------------------------------------------------------------------
// Webhooks

async function loadWebhooks() {
  await busy($('webhooks-refresh'), 'webhooks-error', async () => {
    const list = await api('GET', 'api/webhooks');
    state.webhooks = list.items;
    renderWebhooks();
    if (state.dead) await loadDead(state.webhooks.find((w) => w.id === state.dead.webhook.id));
  });
}

function renderWebhooks() {
  const list = $('webhook-list');
  list.replaceChildren(...state.webhooks.map((w) => el('li', { 'data-webhook': w.id },
    el('span', { class: 'mono', text: w.url }),
    el('span', { class: 'hint', text: t('webhooks.events', { e: w.events ? w.events.join(', ') : t('webhooks.all') }) }),
    el('span', { class: 'hint', text: t('webhooks.sessions', { s: w.sessions ? w.sessions.join(', ') : t('webhooks.allSessions') }) }),
    el('span', { class: 'hint', text: t('webhooks.pending', { n: w.pending }) }),
    w.disabled ? el('span', { class: 'error', text: t('webhooks.disabled', { why: w.disabled }) }) : null,
    el('span', { class: 'row-actions' },
      el('button', { type: 'button', class: 'quiet', 'data-action': 'dead', text: t('webhooks.dead'), onclick: (e) => busy(e.currentTarget, 'webhooks-error', () => loadDead(w)) }),
      el('button', { type: 'button', class: 'danger', 'data-action': 'delete', text: t('webhooks.delete'), onclick: (e) => deleteWebhook(e.currentTarget, w) })))));
  show($('webhooks-empty'), state.webhooks.length === 0);
  renderSecret();
  renderDead();
}

/** The event types a webhook can ask for (the API's names). */
const EVENT_TYPES = ['session.status', 'session.qr', 'session.connected', 'session.logged_out', 'message.received', 'message.status'];

/** One checkbox per value in `fieldset`, keeping the ones that were checked. Rebuilt only when
 * the values change, so that a render never takes a checkbox from under the focus or a click. */
function renderChoices(fieldset, name, values) {
  show(fieldset, values.length > 0);
  const now = [...fieldset.querySelectorAll('input')].map((input) => input.value);
  if (now.length === values.length && now.every((value, i) => value === values[i])) return;
  const checked = new Set(checkedValues(fieldset));
  fieldset.replaceChildren(fieldset.querySelector('legend'), ...values.map((value) => {
    const box = el('input', { type: 'checkbox', name, value });
    box.checked = checked.has(value); // the state, not the default a form reset returns to
    return el('label', { class: 'choice' }, box, ' ' + value);
  }));
}

function checkedValues(fieldset) { return [...fieldset.querySelectorAll('input:checked')].map((input) => input.value); }

function renderSecret() {
  show($('hook-secret'), !!state.secret);
  setText('hook-secret-url', state.secret ? state.secret.url : '');
  setText('hook-secret-value', state.secret ? state.secret.value : '');
}

async function createWebhook(event) {
  event.preventDefault();
  const url = $('hook-url').value.trim();
  if (!url) { setText('hook-error', words('hook.needUrl')); $('hook-url').focus(); return; }
  const body = { url };
  const events = checkedValues($('hook-events'));
  const sessions = checkedValues($('hook-sessions'));
  if (events.length) body.events = events;
  if (sessions.length) body.sessions = sessions;
  await busy($('hook-submit'), 'hook-error', async () => {
    const created = await api('POST', 'api/webhooks', body);
    // The API shows the secret this once: it stays on screen until the person says it is kept.
    state.secret = { id: created.id, url: created.url, value: created.secret };
    renderSecret();
    $('hook-form').reset();
    toast(words('done.hookCreate', { url: created.url }));
    await loadWebhooks();
    $('hook-secret').focus();
  });
}

async function deleteWebhook(button, webhook) {
  if (!(await confirmAction(words('ask.hookDelete', { url: webhook.url })))) return;
  await busy(button, 'webhooks-error', async () => {
    await api('DELETE', 'api/webhooks/' + encodeURIComponent(webhook.id));
    if (state.dead && state.dead.webhook.id === webhook.id) state.dead = null;
    if (state.secret && state.secret.id === webhook.id) state.secret = null;
    toast(words('done.hookDelete', { url: webhook.url }));
    await loadWebhooks();
  });
}

async function loadDead(webhook) {
  if (!webhook) { state.dead = null; renderDead(); return; }
  const answer = await api('GET', 'api/webhooks/' + encodeURIComponent(webhook.id) + '/deliveries?status=failed&limit=50');
  state.dead = { webhook, items: answer.items };
  renderDead();
}

function renderDead() {
  show($('dead'), !!state.dead);
  if (!state.dead) return;
  const { webhook, items } = state.dead;
  setText('dead-title', t('dead.title', { url: webhook.url }));
  $('dead-replay-all').disabled = items.length === 0;
  $('dead-list').replaceChildren(...items.map((d) => el('li', { 'data-delivery': d.id },
    el('span', { text: `${d.event} · ${d.sessionId} · ${when(d.createdAt)}` }),
    el('span', { class: 'hint', text: t('dead.attempts', { n: d.attempts }) }),
    d.lastError ? el('span', { class: 'error small', text: d.lastError }) : null,
    el('button', { type: 'button', text: t('dead.replay'), onclick: (e) => replay(e.currentTarget, webhook, d) }))));
  show($('dead-empty'), items.length === 0);
}

async function replay(button, webhook, delivery) {
  const all = !delivery;
  if (!(await confirmAction(all ? words('ask.replayAll', { url: webhook.url }) : words('ask.replay')))) return;
  const base = 'api/webhooks/' + encodeURIComponent(webhook.id) + '/deliveries';
  await busy(button, 'webhooks-error', async () => {
    const answer = await api('POST', all ? base + '/retry' : base + '/' + delivery.id + '/retry');
    toast(words('done.replay', { n: answer && typeof answer.retried === 'number' ? answer.retried : 1 }));
    await loadWebhooks();
  });
}

// ---------------------------------------------------------------------------------------------
// Start

function renderAll() {
  if (!state.token) return;
  renderSessions();
  renderWebhooks();
}

function start() {
  $('lang').addEventListener('change', () => {
    lang = $('lang').value;
    localStorage.setItem(LANG_KEY, lang);
    applyLanguage();
  });
  $('toast-close').addEventListener('click', hideToast);
  $('login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = $('token').value.trim();
    if (!token) { setText('login-error', words('login.empty')); return; }
    if (!PROTOCOL_TOKEN.test(token)) { setText('login-error', words('login.badProtocol')); return; }
    await busy($('login-submit'), 'login-error', () => signIn(token));
  });
  $('signout').addEventListener('click', () => signOut());
  $('sessions-refresh').addEventListener('click', refreshSessions);
  $('create-form').addEventListener('submit', createSession);
  $('act-link').addEventListener('click', () => state.selected && startLinking(state.selected));
  $('act-restart').addEventListener('click', () => sessionAction('restart'));
  $('act-logout').addEventListener('click', () => sessionAction('logout'));
  $('act-delete').addEventListener('click', () => sessionAction('delete'));
  $('link-stop').addEventListener('click', stopLinking);
  $('pair-form').addEventListener('submit', requestPairingCode);
  $('send-form').addEventListener('submit', sendTest);
  $('webhooks-refresh').addEventListener('click', loadWebhooks);
  $('hook-form').addEventListener('submit', createWebhook);
  $('hook-secret-done').addEventListener('click', () => { state.secret = null; renderSecret(); });
  renderChoices($('hook-events'), 'events', EVENT_TYPES);
  $('dead-replay-all').addEventListener('click', (e) => state.dead && replay(e.currentTarget, state.dead.webhook, null));
  setInterval(renderExpiry, 1000);
  setInterval(() => {
    if (!state.token || !state.selected || document.visibilityState !== 'visible') return;
    refreshSession(state.selected);
    refreshMessages();
  }, POLL_MS);
  applyLanguage();

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    busy(null, 'login-error', () => signIn(saved)).then(() => { if (!state.token) sessionStorage.removeItem(TOKEN_KEY); });
  } else {
    $('token').focus();
  }
}

start();
