// The one small websocket script: listens to the conversation's frames and updates the page in place.
// Text always goes through textContent (never innerHTML), so model output cannot inject markup.
// Finished states are re-rendered by the server, so a reload shows exactly the same.
// The URL keeps what is open (?open=<explanation ids>&tpl=1), so a reload or a copied link shows the
// same panel; every explained token is tinted by its confidence.
(() => {
  "use strict";
  // A test may set window.NLAWEB_SAFETY_POLL_MS to prove that frames alone bring every result in.
  const SAFETY_POLL_MS = () => window.NLAWEB_SAFETY_POLL_MS || 3000;
  const TINTS = ["explained", "high", "medium", "low", "unscored", "pending"];
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
    socket.onclose = () => {
      document.body.dataset.ws = "closed";
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

  // The panel's finished sections tint their tokens, the open ones are outlined, a batch says how
  // many of its sections are finished, and the URL names what is open.
  // Sections and tokens are matched by their token prefix (data-prefix, a hash of the token ids up to
  // and including the token), never by position: after a branch switch the same position holds
  // another token, and a section of the other branch is closed rather than pinned onto it.
  function syncPage() {
    // Sections of another branch shown side by side (compare) are not this thread's tokens.
    const thread = new Set([...document.querySelectorAll("#thread .tok[data-prefix]")]
      .map((t) => t.dataset.prefix));
    const sections = [...document.querySelectorAll("#panel [data-explanation-id]")]
      .filter((s) => !s.closest(".compare-side"))
      .filter((s) => {
        if (!s.dataset.prefix || thread.size === 0 || thread.has(s.dataset.prefix)) return true;
        s.remove();
        return false;
      });
    const open = new Set(sections.map((s) => s.dataset.prefix));
    document.querySelectorAll("#thread .tok[data-prefix]").forEach((token) => {
      token.classList.toggle("open", open.has(token.dataset.prefix));
    });
    sections.forEach((s) => {
      const token = document.querySelector(`#thread .tok[data-prefix="${s.dataset.prefix}"]`);
      if (!token) return;
      const tint = s.dataset.status === "done" ? s.dataset.confidence || "unscored"
        : isUnfinished(s) ? "pending" : null;
      if (!tint) return;
      token.classList.remove(...TINTS);
      token.classList.add("explained", tint);
    });
    const status = document.querySelector('#panel [data-role="batch-status"]');
    if (status) {
      const finished = sections.filter((s) => !isUnfinished(s)).length;
      status.textContent = `${finished} of ${sections.length} finished`;
    }
    syncUrl(sections.map((s) => s.dataset.explanationId));
  }

  // Written by hand rather than with URLSearchParams, so the ids' commas stay readable in the link.
  function syncUrl(openIds) {
    const toggle = document.querySelector('[data-role="show-template"]');
    const thread = document.getElementById("thread");
    const parts = thread && thread.dataset.leaf ? [`at=${thread.dataset.leaf}`] : [];
    if (openIds.length) parts.push(`open=${openIds.join(",")}`);
    if (toggle && toggle.checked) parts.push("tpl=1");
    const target = location.pathname + (parts.length ? `?${parts.join("&")}` : "") + location.hash;
    if (target !== location.pathname + location.search + location.hash) {
      history.replaceState(history.state, "", target);
    }
  }

  function applyHeldStates() {
    document.querySelectorAll("#panel [data-explanation-id]").forEach((el) => {
      applyExplanation(el.dataset.explanationId);
    });
    const thread = document.getElementById("thread");
    if (thread && thread.dataset.generating) applyReply(thread.dataset.generating);
  }

  document.addEventListener("change", (event) => {
    if (!event.target.matches?.('[data-role="show-template"]')) return;
    root.classList.toggle("show-template", event.target.checked);
    syncPage();
  });
  document.addEventListener("click", (event) => {
    const close = event.target.closest?.('[data-role="close-section"]');
    if (!close) return;
    close.closest("[data-explanation-id]").remove();
    syncPage();
  });

  // A 503 (queue or database down) or another refused request: htmx does not swap error answers,
  // so say the server's sentence in a banner. The click or message was saved when the queue was
  // the problem, so the thread is read again.
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

  document.addEventListener("htmx:responseError", (event) => {
    const xhr = event.detail.xhr;
    let sentence = `The server could not answer (${xhr.status}); try again in a moment.`;
    try { sentence = JSON.parse(xhr.responseText).error || sentence; } catch { /* an HTML page */ }
    showProblem(sentence);
    if (root && xhr.status === 503) refreshThread();
  });
  document.addEventListener("htmx:afterRequest", (event) => {
    if (event.detail.successful) document.getElementById("problem")?.remove();
  });

  document.addEventListener("DOMContentLoaded", () => {
    root = document.querySelector("[data-conversation-ws]");
    if (!root) return;
    connect();
    syncPage();
    setTimeout(safetyPoll, SAFETY_POLL_MS());
  });
  document.addEventListener("htmx:afterSwap", () => {
    lastFrameAt = Date.now();
    if (!root) return;
    applyHeldStates();
    syncPage();
  });
})();
