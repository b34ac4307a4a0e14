// The one small websocket script: listens to the conversation's frames and updates the page in place.
// Text always goes through textContent (never innerHTML), so model output cannot inject markup.
// Finished states are re-rendered by the server, so a reload shows exactly the same. The server also
// owns the page's state: its answers carry the tokens' tints and outlines (out-of-band swaps), the
// panel's count and the URL (HX-Replace-Url; nlaweb/thread/updates.py); this script computes none.
(() => {
  "use strict";
  // A test may set window.NLAWEB_SAFETY_POLL_MS to prove that frames alone bring every result in.
  const SAFETY_POLL_MS = () => window.NLAWEB_SAFETY_POLL_MS || 3000;
  let root = null;
  let socket = null;
  let backoff = 500;
  let lastFrameAt = 0;
  let everOpened = false;

  // A frame can arrive before the element it updates exists: the explain and send requests enqueue
  // their job before their response is swapped in, and a short job finishes first. So the latest state
  // of each explanation and reply is kept here and applied when htmx swaps new content in.
  const explanations = new Map(); // explanation id → {stage, text, finished}
  const replies = new Map(); // message id → {text, finished}

  function section(explanationId) {
    return document.querySelector(`#panel [data-explanation-id="${explanationId}"]`);
  }

  // Each refresh is its own htmx request with its own element as source: htmx keeps one request in
  // flight per source element and drops all but the last queued one, so refreshes that shared a
  // source (the body) lost every section but the last when several finished at once.
  function refreshSection(el) {
    htmx.ajax("GET", el.dataset.panelUrl, { source: el, target: el, swap: "outerHTML" });
  }

  // The thread of the branch on screen (its leaf), never whatever another tab made the head.
  function refreshThread() {
    const thread = document.getElementById("thread");
    if (!thread) return;
    const at = thread.dataset.leaf ? `?at=${thread.dataset.leaf}` : "";
    htmx.ajax("GET", root.dataset.threadUrl + at, { source: thread, target: thread, swap: "outerHTML" });
  }
  window.nlawebRefreshThread = () => refreshThread();

  const isUnfinished = (el) => el.dataset.status === "queued" || el.dataset.status === "running";

  // The stages and their order are the server's (workers.contracts.STAGES, rendered as the list).
  function showStage(el, stage) {
    const steps = [...el.querySelectorAll(".stages li")];
    const index = steps.findIndex((li) => li.dataset.stage === stage);
    steps.forEach((li, i) => {
      li.classList.toggle("done", i < index);
      li.classList.toggle("active", i === index);
    });
    const now = el.querySelector('[data-role="stage"]');
    if (now) now.textContent = stage;
    const bar = el.querySelector('[data-role="progress"]');
    if (bar && index >= 0) bar.value = index;
  }

  function applyExplanation(id) {
    const el = section(id);
    const state = explanations.get(id);
    if (!el || !state || !isUnfinished(el)) return;
    if (state.finished) {
      explanations.delete(id); // the server's section is the truth from here on
      refreshSection(el);
      return;
    }
    if (state.stage) showStage(el, state.stage);
    const place = el.querySelector('[data-role="place"]');
    if (place) place.textContent = state.stage && state.stage !== "queued" ? "" : state.place || place.textContent;
    const text = el.querySelector('[data-role="text"]');
    if (text && state.text) text.textContent = state.text;
  }

  function updateExplanation(id, change) {
    explanations.set(id, { ...(explanations.get(id) || {}), ...change });
    applyExplanation(id);
  }

  function applyReply(id) {
    const state = replies.get(id);
    const thread = document.getElementById("thread");
    if (!state || !thread) return;
    if (state.finished) {
      if (thread.dataset.generating === id) {
        replies.delete(id);
        refreshThread();
      }
      return;
    }
    const el = document.querySelector(`[data-streaming-message="${id}"]`);
    if (el) el.textContent = state.text;
  }

  function updateReply(id, change) {
    replies.set(id, { ...(replies.get(id) || {}), ...change });
    applyReply(id);
  }

  function finishReply(id) {
    replies.set(id, { finished: true }); // for a send response that is swapped in after this
    refreshThread(); // also brings another tab of this conversation up to date
  }

  const handlers = {
    "chat.delta": (f) => updateReply(f.message_id, { text: f.text }),
    "chat.done": (f) => finishReply(f.message_id),
    "chat.failed": (f) => finishReply(f.message_id),
    "explanation.progress": (f) => updateExplanation(f.explanation_id, { stage: f.stage }),
    "explanation.text": (f) => updateExplanation(f.explanation_id, { text: f.text }),
    "explanation.done": (f) => updateExplanation(f.explanation_id, { finished: true }),
    "explanation.failed": (f) => updateExplanation(f.explanation_id, { finished: true }),
    "explanation.queued": (f) => updateExplanation(f.explanation_id, { place: f.line }), // "2nd in line"
    // A whole-message run moved on: the server re-renders the thread with its tints and progress.
    "run.progress": () => refreshThread(),
  };

  // Whatever may have changed while the socket was down is read again from the server.
  function catchUp() {
    document.querySelectorAll('#panel [data-status="queued"], #panel [data-status="running"]')
      .forEach(refreshSection);
    const thread = document.getElementById("thread");
    if (thread && thread.dataset.generating) refreshThread();
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + root.dataset.conversationWs);
    socket.onopen = () => {
      backoff = 500;
      document.body.dataset.ws = "open";
      if (everOpened) catchUp(); // frames sent while it was closed are lost: re-read the rows
      everOpened = true;
    };
    socket.onmessage = (event) => {
      lastFrameAt = Date.now();
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      const handle = handlers[frame.type];
      if (handle) handle(frame);
    };
    // 4503: the server could not reach its database or Redis (nlaweb/middleware/socket_outage.py); like any
    // other close, it is tried again with backoff until the socket opens.
    socket.onclose = (event) => {
      document.body.dataset.ws = event.code === 4503 ? "unavailable" : "closed";
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 10000);
    };
  }

  // A frame can still be lost while the socket looks open; if nothing arrived for a while, ask the
  // server for the current state of whatever is still unfinished.
  function safetyPoll() {
    if (Date.now() - lastFrameAt >= SAFETY_POLL_MS()) catchUp();
    setTimeout(safetyPoll, SAFETY_POLL_MS());
  }

  function applyHeldStates() {
    document.querySelectorAll("#panel [data-explanation-id]").forEach((el) => {
      applyExplanation(el.dataset.explanationId);
    });
    const thread = document.getElementById("thread");
    if (thread && thread.dataset.generating) applyReply(thread.dataset.generating);
  }

  // Template tokens fold and unfold at once; the toggle's own request (hx-get) writes tpl= in the URL.
  document.addEventListener("change", (event) => {
    if (!event.target.matches?.('[data-role="show-template"]')) return;
    root.classList.toggle("show-template", event.target.checked);
  });

  // A refused request: htmx swaps no error answer, so its sentence goes in a banner. The server
  // names it (HX-Trigger "nlaweb:problem", nlaweb/middleware/htmx.py) and says when the thread is
  // to be read again (the click or message was saved though its job could not be sent).
  function showProblem(text) {
    let banner = document.getElementById("problem");
    if (!banner) {
      banner = document.createElement("p");
      banner.id = "problem";
      banner.className = "problem";
      banner.setAttribute("role", "alert");
      document.querySelector("main")?.prepend(banner);
    }
    banner.textContent = text;
  }

  document.addEventListener("nlaweb:problem", (event) => {
    showProblem(event.detail.message);
    if (root && event.detail.reread) refreshThread();
  });
  // An answer the server did not word (a proxy's 502, a lost connection).
  document.addEventListener("htmx:responseError", (event) => {
    const xhr = event.detail.xhr;
    if (!xhr.getResponseHeader("HX-Trigger")) {
      showProblem(`The server could not answer (${xhr.status}); try again in a moment.`);
    }
  });
  document.addEventListener("htmx:sendError", () => {
    showProblem("The server could not be reached; try again in a moment.");
  });
  document.addEventListener("htmx:afterRequest", (event) => {
    if (event.detail.successful) document.getElementById("problem")?.remove();
  });

  document.addEventListener("DOMContentLoaded", () => {
    root = document.querySelector("[data-conversation-ws]");
    if (!root) return;
    connect();
    setTimeout(safetyPoll, SAFETY_POLL_MS());
  });
  document.addEventListener("htmx:afterSwap", () => {
    lastFrameAt = Date.now();
    if (!root) return;
    applyHeldStates();
  });
})();
