// The demo page: fetch POST /chat, then the browser's own EventSource reads the answer.
//
// Recovery is the browser's: when the connection drops, EventSource reconnects after the
// server's `retry:` delay and sends `Last-Event-ID`, and the server replays what was
// missed.  The page closes the EventSource on `complete` or `error` (else it would
// reconnect forever).  Model text only ever reaches the page through renderMarkdown,
// which builds Text nodes: it is never parsed as HTML.
//
// The page also follows its session through GET /sessions/{id}/events (one EventSource per
// session): a message sent from another tab or device, and its answer as it streams, show
// up here live.  Turns this tab sent itself are read from their own stream (above) and
// skipped on the session stream; a `reset` event (events were missed) reloads the session.
//
// The session list shows the sessions this browser started (their ids are remembered in
// localStorage), not every session on the server.  Where the server lists every session
// (`"scope": "all"`: no API_KEYS, or an admin key) a "Show all sessions" checkbox shows
// them all; with an ordinary key the server lists only that key's sessions (`"own"`), and
// those are shown as they are, without the checkbox.

import { renderMarkdown } from "./markdown.js";

const KEY_STORAGE = "quart-sse-demo:api-key";
const SESSION_STORAGE = "quart-sse-demo:session";
const MINE_STORAGE = "quart-sse-demo:my-sessions"; // a JSON array of the session ids this browser started
const MINE_LIMIT = 500; // the newest ids kept

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"),
  messages: $("messages"),
  conversation: $("conversation"),
  empty: $("empty"),
  composer: $("composer"),
  message: $("message"),
  send: $("send"),
  stop: $("stop"),
  sessionId: $("session-id"),
  model: $("model"),
  newSession: $("new-session"),
  clearSession: $("clear-session"),
  deleteSession: $("delete-session"),
  sessionList: $("session-list"),
  sessionListEmpty: $("session-list-empty"),
  showAllControl: $("show-all-control"),
  showAll: $("show-all-sessions"),
  showAllCount: $("show-all-count"),
  refreshSessions: $("refresh-sessions"),
  olderSessions: $("older-sessions"),
  changeKey: $("change-key"),
  toggleSessions: $("toggle-sessions"),
  scrim: $("scrim"),
  notice: $("notice"),
  auth: $("auth"),
  authForm: $("auth-form"),
  apiKey: $("api-key"),
  authError: $("auth-error"),
};

const state = {
  key: readStorage(KEY_STORAGE) ?? "",
  keyNeeded: false,
  sessionId: null,
  stream: null, // the answer being read: {source, streamId, answer}
  follow: null, // the session stream: {source, sessionId}
  ownStreams: new Set(), // the streams of the turns this tab sent (read by readAnswer)
  sending: null, // the text of a message being posted (its stream id not known yet)
  shown: new Set(), // streams whose user message the loaded history already shows
  others: new Map(), // stream id -> {answer, text, chunks} of turns sent elsewhere
  listed: null, // the server's last answer to GET /sessions: {sessions, count, scope, next}
  listing: 0, // the number of the newest GET /sessions asked, so that an older answer is not shown
};

// The ids of the sessions started here, also when storage is off (then for this page only).
const mineInMemory = new Set();

// ---------------------------------------------------------------- small helpers

function readStorage(name) {
  try {
    return localStorage.getItem(name);
  } catch {
    return null;
  }
}

function writeStorage(name, value) {
  try {
    if (value === null) localStorage.removeItem(name);
    else localStorage.setItem(name, value);
  } catch {
    /* storage may be off: the page still works, it just forgets */
  }
}

/** The ids of the sessions this browser started (localStorage, shared by its tabs). */
function readMine() {
  const ids = new Set(mineInMemory);
  try {
    const stored = JSON.parse(readStorage(MINE_STORAGE) ?? "[]");
    if (Array.isArray(stored)) for (const id of stored) if (typeof id === "string") ids.add(id);
  } catch {
    /* a damaged entry: start afresh */
  }
  return ids;
}

function writeMine(ids) {
  const list = [...ids].slice(-MINE_LIMIT);
  mineInMemory.clear();
  for (const id of list) mineInMemory.add(id);
  writeStorage(MINE_STORAGE, JSON.stringify(list));
}

function rememberSession(sessionId) {
  const ids = readMine();
  ids.delete(sessionId); // to the end: the newest last
  ids.add(sessionId);
  writeMine(ids);
}

function forgetSessions(sessionIds) {
  const ids = readMine();
  let changed = false;
  for (const id of sessionIds) changed = ids.delete(id) || changed;
  if (changed) writeMine(ids);
}

function make(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function seconds(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function clock(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const today = new Date().toDateString() === date.toDateString();
  return today
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { month: "short", day: "numeric" });
}

function setStatus(value) {
  ui.status.textContent = value;
  ui.status.dataset.state = value;
}

function notify(text, kind = "error") {
  if (!text) {
    ui.notice.hidden = true;
    ui.notice.textContent = "";
    return;
  }
  ui.notice.textContent = text;
  ui.notice.dataset.kind = kind;
  ui.notice.hidden = false;
}

class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** A JSON API call with the key (when there is one); throws APIError on a non-2xx answer. */
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new APIError(0, "network", "The server cannot be reached.");
  }
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    let message = error.message || `HTTP ${response.status}`;
    const retry = response.headers.get("Retry-After");
    if (retry) message += ` (try again in ${retry} s)`;
    if (response.status === 401) askForKey(Boolean(state.key));
    throw new APIError(response.status, error.code || "http", message);
  }
  return data;
}

// ---------------------------------------------------------------- the conversation

function scrollToEnd() {
  const c = ui.conversation;
  c.scrollTop = c.scrollHeight;
}

function nearEnd() {
  const c = ui.conversation;
  return c.scrollHeight - c.scrollTop - c.clientHeight < 80;
}

function updateEmpty() {
  ui.empty.hidden = ui.messages.childElementCount > 0;
}

function addUser(text, timestamp) {
  const item = make("article", "msg user");
  const bubble = make("div", "bubble");
  bubble.append(make("div", "user-text", text)); // textContent: shown exactly as typed
  if (timestamp) bubble.append(make("div", "msg-meta", clock(timestamp)));
  item.append(bubble);
  ui.messages.append(item);
  updateEmpty();
  return item;
}

/** An answer bubble: `.answer` holding `.answer-text` (Markdown) and `.answer-meta`. */
const RENDER_EVERY_MS = 100; // at most ~10 renders a second while an answer streams

class Answer {
  constructor() {
    this.el = make("article", "msg answer");
    const avatar = make("div", "avatar", "AI");
    avatar.setAttribute("aria-hidden", "true");
    const bubble = make("div", "bubble");
    this.body = make("div", "answer-text md");
    this.meta = make("div", "msg-meta answer-meta");
    bubble.append(this.body, this.meta);
    this.el.append(avatar, bubble);
    this.text = "";
    this.pending = false;
    this.renderedAt = 0;
    this.timer = null;
    ui.messages.append(this.el);
    updateEmpty();
  }

  /** Show `text`: rendered at most RENDER_EVERY_MS apart, so a burst of chunks costs one
   * render and a long answer is not re-rendered on every frame. */
  show(text) {
    this.text = text;
    if (this.pending) return;
    this.pending = true;
    const wait = Math.max(0, this.renderedAt + RENDER_EVERY_MS - performance.now());
    this.timer = setTimeout(() => requestAnimationFrame(() => this.render()), wait);
  }

  /** The answer has ended: show `text` now, with no render left waiting. */
  showNow(text) {
    this.text = text;
    clearTimeout(this.timer);
    this.render();
  }

  render() {
    this.pending = false;
    this.renderedAt = performance.now();
    const follow = nearEnd();
    this.body.replaceChildren(renderMarkdown(this.text));
    if (follow) scrollToEnd();
  }

  setState(value) {
    this.el.dataset.state = value;
  }

  setMeta(parts) {
    this.meta.replaceChildren(
      ...parts.filter(Boolean).map((part) =>
        typeof part === "string" ? make("span", "", part) : make("span", part.className, part.text),
      ),
    );
  }
}

function showHistory(messages) {
  ui.messages.replaceChildren();
  for (const message of messages) {
    if (message.role === "user") {
      addUser(message.content, message.timestamp);
    } else {
      const answer = new Answer();
      answer.text = message.content;
      answer.render();
      answer.setState(message.interrupted ? "interrupted" : "done");
      answer.setMeta([
        clock(message.timestamp),
        message.interrupted ? { className: "tag tag-warn", text: "interrupted" } : null,
      ]);
    }
  }
  updateEmpty();
  scrollToEnd();
}

// ---------------------------------------------------------------- streaming an answer

function streamUrl(eventsUrl) {
  const url = new URL(eventsUrl, window.location.href);
  if (state.key) url.searchParams.set("access_token", state.key);
  return url.toString();
}

/** Read one answer's stream with EventSource; resolves when the stream has ended. */
function readAnswer(eventsUrl, answer, startedAt) {
  const source = new EventSource(streamUrl(eventsUrl));
  const stream = { source, streamId: null, answer };
  state.stream = stream;
  updateControls();

  let text = "";
  let chunks = 0;
  let firstAt = null;
  let reconnects = 0;

  const live = () => {
    answer.setMeta([
      `${chunks} chunk${chunks === 1 ? "" : "s"}`,
      firstAt === null ? "waiting for the first chunk" : `first after ${seconds(firstAt - startedAt)}`,
      reconnects ? { className: "tag tag-warn", text: `connection dropped ×${reconnects}` } : null,
    ]);
  };

  return new Promise((resolve) => {
    const finish = (status) => {
      source.close();
      if (state.stream === stream) state.stream = null;
      setStatus(status);
      updateControls();
      resolve();
    };

    source.addEventListener("open", () => {
      if (state.stream === stream) setStatus("streaming");
    });

    source.addEventListener("session_info", (event) => {
      const info = JSON.parse(event.data);
      stream.streamId = info.stream_id;
      if (info.model) showModel(info.model);
    });

    source.addEventListener("chunk", (event) => {
      const data = JSON.parse(event.data);
      // Ids and chunk numbers only grow: anything already seen is a repeat, never shown twice.
      if (data.chunk_number <= chunks) return;
      chunks = data.chunk_number;
      if (firstAt === null) firstAt = performance.now();
      text += data.text;
      answer.show(text);
      answer.el.dataset.chunks = String(chunks);
      live();
    });

    source.addEventListener("complete", (event) => {
      const data = JSON.parse(event.data);
      answer.showNow(text);
      answer.setState("done");
      answer.el.dataset.chunks = String(chunks);
      answer.setMeta([
        `${data.total_chunks} chunks`,
        firstAt === null ? null : `first after ${seconds(firstAt - startedAt)}`,
        `${seconds(performance.now() - startedAt)} total`,
        data.finish_reason && data.finish_reason !== "stop"
          ? { className: "tag tag-warn", text: data.finish_reason }
          : null,
        reconnects ? { className: "tag", text: `resumed ×${reconnects}` } : null,
      ]);
      finish("idle");
      refreshSessions().catch(() => {});
    });

    source.addEventListener("error", (event) => {
      if (event instanceof MessageEvent && event.data) {
        // The server's own `error` event: the stream ends here.
        const data = JSON.parse(event.data);
        const cancelled = data.code === "cancelled";
        answer.showNow(text);
        answer.setState(cancelled ? "interrupted" : "error");
        answer.setMeta([
          `${chunks} chunk${chunks === 1 ? "" : "s"}`,
          `${seconds(performance.now() - startedAt)}`,
          { className: cancelled ? "tag tag-warn" : "tag tag-error", text: cancelled ? "stopped" : data.code },
        ]);
        if (!cancelled) notify(`The answer ended with an error: ${data.message}`);
        finish(cancelled ? "idle" : "error");
        refreshSessions().catch(() => {});
        return;
      }
      if (source.readyState === EventSource.CONNECTING) {
        // The connection dropped: the browser reconnects by itself with Last-Event-ID.
        reconnects += 1;
        if (state.stream === stream) setStatus("reconnecting");
        live();
        return;
      }
      // CLOSED: the browser gave up (an HTTP error answer such as 401 or 404).
      answer.setState("error");
      answer.setMeta([`${chunks} chunks`, { className: "tag tag-error", text: "stream lost" }]);
      notify("The stream could not be read to its end. The saved answer is shown once it is ready.");
      finish("error");
      if (state.sessionId) openSession(state.sessionId, { quiet: true }).catch(() => {});
    });
  });
}

function stopReading() {
  if (state.stream) {
    state.stream.source.close();
    state.stream = null;
  }
  setStatus("idle");
  updateControls();
}

async function send() {
  const text = ui.message.value;
  if (!text.trim() || state.stream || ui.send.disabled) return;
  notify(null);
  ui.send.disabled = true;
  const startedAt = performance.now();
  const userItem = addUser(text);
  ui.message.value = "";
  autosize();
  const answer = new Answer();
  answer.setState("waiting");
  answer.setMeta(["sending…"]);
  scrollToEnd();
  setStatus("streaming");
  let accepted;
  state.sending = text;
  try {
    accepted = await api("POST", "/chat", { message: text, session_id: state.sessionId });
  } catch (error) {
    state.sending = null;
    answer.el.remove();
    userItem.classList.add("failed");
    userItem.querySelector(".bubble").append(make("div", "msg-meta", `not sent: ${error.message}`));
    if (!ui.message.value) ui.message.value = text;
    autosize();
    notify(error.message);
    setStatus("error");
    updateControls();
    return;
  }
  state.sending = null;
  state.ownStreams.add(accepted.stream_id);
  answer.setState("streaming");
  const isNew = accepted.session_id !== state.sessionId;
  if (isNew) rememberSession(accepted.session_id); // started here by this first message
  setSession(accepted.session_id);
  if (isNew) refreshSessions().catch(() => {});
  await readAnswer(accepted.events_url, answer, startedAt);
}

// ---------------------------------------------------------------- following the session

function clearOthers() {
  for (const other of state.others.values()) clearTimeout(other.answer.timer);
  state.others.clear();
}

/** Follow `sessionId`'s session stream (none: stop following). */
function followSession(sessionId) {
  if (state.follow && state.follow.sessionId === sessionId) return;
  if (state.follow) state.follow.source.close();
  state.follow = null;
  clearOthers();
  if (!sessionId) return;
  const source = new EventSource(streamUrl(`/sessions/${encodeURIComponent(sessionId)}/events`));
  const follow = { source, sessionId };
  state.follow = follow;
  const mine = (data) => state.ownStreams.has(data.stream_id);
  const other = (data) => state.others.get(data.stream_id);

  source.addEventListener("user_message", (event) => {
    const data = JSON.parse(event.data);
    if (mine(data) || state.others.has(data.stream_id)) return;
    if (state.sending !== null && state.sending === data.message.content) {
      state.ownStreams.add(data.stream_id); // this tab's own message, posted a moment ago
      return;
    }
    if (!state.shown.has(data.stream_id) && !data.regenerate) {
      addUser(data.message.content, data.message.timestamp).dataset.from = "elsewhere";
    }
    const answer = new Answer();
    answer.el.dataset.from = "elsewhere";
    answer.setState(data.queued ? "waiting" : "streaming");
    answer.setMeta([data.queued ? "queued" : "sent from another tab"]);
    state.others.set(data.stream_id, { answer, text: "", chunks: 0 });
    scrollToEnd();
  });
  source.addEventListener("chunk", (event) => {
    const data = JSON.parse(event.data);
    const turn = other(data);
    if (!turn || data.chunk_number <= turn.chunks) return;
    turn.chunks = data.chunk_number;
    turn.text += data.text;
    turn.answer.setState("streaming");
    turn.answer.show(turn.text);
    turn.answer.el.dataset.chunks = String(turn.chunks);
  });
  source.addEventListener("complete", (event) => {
    const data = JSON.parse(event.data);
    const turn = other(data);
    if (!turn) return;
    turn.answer.showNow(turn.text);
    turn.answer.setState("done");
    turn.answer.setMeta([`${data.total_chunks} chunks`, "from another tab"]);
    state.others.delete(data.stream_id);
    refreshSessions().catch(() => {});
  });
  source.addEventListener("error", (event) => {
    if (!(event instanceof MessageEvent && event.data)) {
      if (source.readyState === EventSource.CLOSED && state.follow === follow) state.follow = null;
      return; // the browser reconnects by itself with Last-Event-ID
    }
    const data = JSON.parse(event.data);
    const turn = other(data);
    if (!turn) return;
    turn.answer.showNow(turn.text);
    turn.answer.setState(data.code === "cancelled" || data.code === "interrupted" ? "interrupted" : "error");
    turn.answer.setMeta([{ className: "tag tag-warn", text: data.code }]);
    state.others.delete(data.stream_id);
  });
  source.addEventListener("reset", () => {
    // Events were missed (the server no longer holds them): reload the session.
    if (state.follow === follow && !state.stream) openSession(sessionId, { quiet: true }).catch(() => {});
  });
}

// ---------------------------------------------------------------- sessions

function showModel(model) {
  ui.model.textContent = model;
  ui.model.hidden = !model;
}

function setSession(sessionId, { remember = true } = {}) {
  state.sessionId = sessionId;
  ui.sessionId.textContent = sessionId ?? "—";
  ui.sessionId.title = sessionId ?? "No session yet: the first message starts one";
  if (remember) writeStorage(SESSION_STORAGE, sessionId);
  followSession(sessionId);
  for (const button of ui.sessionList.querySelectorAll("button[data-session]")) {
    button.setAttribute("aria-current", String(button.dataset.session === sessionId));
  }
  updateControls();
}

function updateControls() {
  const reading = state.stream !== null;
  ui.send.disabled = reading;
  ui.stop.hidden = !reading;
  ui.clearSession.disabled = !state.sessionId;
  ui.deleteSession.disabled = !state.sessionId;
  ui.changeKey.hidden = !state.keyNeeded;
}

// Sessions asked for a page (the server's largest page: GET /sessions caps `limit` at 1000);
// older ones come a page at a time with "Show older sessions" (the listing's next_cursor).
const LIST_PAGE = 1000;

/** Ask the server for its newest sessions and show them; resolves to every session it listed. */
async function refreshSessions() {
  const asked = ++state.listing;
  const mineBefore = readMine();
  const data = await api("GET", `/sessions?limit=${LIST_PAGE}`);
  const sessions = Array.isArray(data.sessions) ? data.sessions : [];
  const scope = data.scope === "own" ? "own" : "all";
  const count = Number.isInteger(data.count) ? data.count : sessions.length;
  const next = typeof data.next_cursor === "string" ? data.next_cursor : null;
  if (scope === "all" && next === null) {
    // The server listed every session (one page holds them all): a remembered one that is
    // missing was deleted or has expired.  (Only ids remembered before asking: one started
    // meanwhile may be missing.)
    const listed = new Set(sessions.map((session) => session.session_id));
    forgetSessions([...mineBefore].filter((id) => !listed.has(id)));
  }
  if (asked === state.listing) {
    state.listed = { sessions, count, scope, next };
    renderSessions();
  }
  return sessions;
}

/** The next page of the listing, added below the sessions already shown. */
async function olderSessions() {
  const listed = state.listed;
  if (!listed || !listed.next) return;
  const asked = state.listing;
  const data = await api("GET", `/sessions?limit=${LIST_PAGE}&cursor=${encodeURIComponent(listed.next)}`);
  if (asked !== state.listing || state.listed !== listed) return; // a refresh came first
  const more = Array.isArray(data.sessions) ? data.sessions : [];
  const known = new Set(listed.sessions.map((session) => session.session_id));
  state.listed = {
    ...listed,
    sessions: listed.sessions.concat(more.filter((session) => !known.has(session.session_id))),
    next: typeof data.next_cursor === "string" ? data.next_cursor : null,
  };
  renderSessions();
}

/** The session list from the server's last answer: this browser's sessions, or all of them. */
function renderSessions() {
  if (!state.listed) return;
  const { scope } = state.listed;
  const mine = readMine();
  const all = scope === "own" || ui.showAll.checked;
  // "own": the server listed this key's sessions only, all of them the caller's
  const isMine = (session) => scope === "own" || mine.has(session.session_id);
  const sessions = state.listed.sessions
    .filter((session) => all || isMine(session))
    .sort((a, b) => (a.last_activity < b.last_activity ? 1 : -1));

  ui.showAllControl.hidden = scope !== "all";
  ui.olderSessions.hidden = !state.listed.next;
  ui.showAllCount.textContent = `(${state.listed.count})`;
  ui.sessionList.dataset.scope = scope;
  ui.sessionList.dataset.showing = all ? "all" : "mine";
  ui.sessionList.dataset.total = String(state.listed.count);
  ui.sessionList.replaceChildren(
    ...sessions.map((session) => {
      const item = make("li");
      const button = make("button", "session-item");
      button.type = "button";
      button.dataset.session = session.session_id;
      button.dataset.mine = String(isMine(session));
      button.setAttribute("aria-current", String(session.session_id === state.sessionId));
      button.title = session.session_id;
      const head = make("span", "session-item-head");
      head.append(make("span", "session-item-id", session.session_id.slice(0, 8)));
      if (!isMine(session)) {
        head.append(make("span", "tag tag-other", "not started here"));
      }
      button.append(
        head,
        make(
          "span",
          "session-item-meta",
          `${session.message_count} message${session.message_count === 1 ? "" : "s"} · ${clock(session.last_activity)}`,
        ),
      );
      item.append(button);
      return item;
    }),
  );
  ui.sessionListEmpty.textContent = all
    ? "No sessions yet. Send a message to start one."
    : "No sessions started in this browser yet. Send a message to start one.";
  ui.sessionListEmpty.hidden = sessions.length > 0;
}

/** Show a session's history; if an answer is being generated in it, read that stream. */
async function openSession(sessionId, { quiet = false } = {}) {
  let data;
  try {
    data = await api("GET", `/sessions/${encodeURIComponent(sessionId)}`);
  } catch (error) {
    if (error instanceof APIError && error.status === 404) {
      forgetSessions([sessionId]); // deleted or expired meanwhile
      refreshSessions().catch(() => {});
    }
    throw error;
  }
  if (!quiet) stopReading();
  state.shown = new Set([data.generating, data.queued].filter(Boolean));
  clearOthers();
  setSession(data.session_id);
  showModel(data.model);
  showHistory(data.messages);
  if (data.generating && !state.stream) {
    state.ownStreams.add(data.generating);
    const answer = new Answer();
    answer.setState("streaming");
    setStatus("streaming");
    readAnswer(`/streams/${encodeURIComponent(data.generating)}/events`, answer, performance.now());
  }
}

async function newSession() {
  stopReading();
  const data = await api("POST", "/sessions/new");
  rememberSession(data.session_id);
  setSession(data.session_id);
  showModel(data.model);
  ui.messages.replaceChildren();
  updateEmpty();
  await refreshSessions();
  ui.message.focus();
}

async function clearSession() {
  if (!state.sessionId) return;
  stopReading();
  await api("POST", `/sessions/${encodeURIComponent(state.sessionId)}/clear`);
  ui.messages.replaceChildren();
  updateEmpty();
  notify("Session cleared: its history is forgotten.", "info");
  await refreshSessions();
}

async function deleteSession() {
  if (!state.sessionId) return;
  stopReading();
  const gone = state.sessionId;
  await api("DELETE", `/sessions/${encodeURIComponent(gone)}`);
  forgetSessions([gone]);
  setSession(null);
  ui.messages.replaceChildren();
  updateEmpty();
  notify(`Session ${gone.slice(0, 8)} deleted.`, "info");
  await refreshSessions();
}

async function stopAnswer() {
  const stream = state.stream;
  if (!stream || !stream.streamId) return;
  await api("POST", `/streams/${encodeURIComponent(stream.streamId)}/cancel`);
  // the stream itself ends with an `error` event of code `cancelled`
}

// ---------------------------------------------------------------- the API key

function askForKey(refused) {
  state.keyNeeded = true;
  updateControls();
  ui.authError.hidden = !refused;
  ui.apiKey.value = "";
  if (!ui.auth.open) ui.auth.showModal();
}

async function useKey(key) {
  state.key = key.trim();
  writeStorage(KEY_STORAGE, state.key || null);
  ui.auth.close();
  await start();
}

// ---------------------------------------------------------------- wiring

function autosize() {
  ui.message.style.height = "auto";
  ui.message.style.height = `${Math.min(ui.message.scrollHeight, 200)}px`;
}

function guard(action) {
  return (event) => {
    if (event) event.preventDefault();
    action().catch((error) => {
      if (error instanceof APIError && error.status === 401) return; // the key dialog is up
      notify(error.message);
    });
  };
}

function toggleSidebar(open) {
  document.body.classList.toggle("sidebar-open", open);
  ui.toggleSessions.setAttribute("aria-expanded", String(open));
  ui.scrim.hidden = !open;
}

ui.composer.addEventListener("submit", guard(send));
ui.message.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});
ui.message.addEventListener("input", autosize);
ui.stop.addEventListener("click", guard(stopAnswer));
ui.newSession.addEventListener("click", guard(async () => {
  toggleSidebar(false);
  await newSession();
}));
ui.clearSession.addEventListener("click", guard(clearSession));
ui.deleteSession.addEventListener("click", guard(deleteSession));
ui.refreshSessions.addEventListener("click", guard(refreshSessions));
ui.olderSessions.addEventListener("click", guard(olderSessions));
ui.showAll.addEventListener("change", guard(async () => {
  renderSessions(); // at once from the last list, then a fresh one
  await refreshSessions();
}));
window.addEventListener("storage", (event) => {
  if (event.key === MINE_STORAGE) renderSessions(); // a session started in another tab
});
ui.changeKey.addEventListener("click", () => askForKey(false));
ui.sessionList.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-session]");
  if (!button) return;
  toggleSidebar(false);
  notify(null);
  guard(() => openSession(button.dataset.session))();
});
ui.toggleSessions.addEventListener("click", () => toggleSidebar(!document.body.classList.contains("sidebar-open")));
ui.scrim.addEventListener("click", () => toggleSidebar(false));
ui.authForm.addEventListener("submit", (event) => {
  event.preventDefault();
  useKey(ui.apiKey.value).catch((error) => notify(error.message));
});

async function start() {
  setStatus("idle");
  notify(null);
  let sessions;
  try {
    sessions = await refreshSessions();
  } catch (error) {
    if (!(error instanceof APIError && error.status === 401)) notify(error.message);
    return;
  }
  const saved = readStorage(SESSION_STORAGE);
  if (saved && sessions.some((session) => session.session_id === saved)) await openSession(saved);
  else if (saved && state.listed && state.listed.next) {
    // Older than the first page: open it by its id (a 404 forgets it).
    await openSession(saved).catch(() => setSession(null));
  } else setSession(null);
  document.body.dataset.ready = "true";
}

setSession(null, { remember: false });
ui.showAll.checked = false; // each visit starts with this browser's own sessions
updateEmpty();
start().catch((error) => notify(error.message));
