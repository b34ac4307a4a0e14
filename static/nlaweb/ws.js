// The one small websocket script: listens to the conversation's frames and updates the page in place.
// Text always goes through textContent (never innerHTML), so model output cannot inject markup.
// Finished states are re-rendered by the server (htmx.ajax), so a reload shows exactly the same.
(() => {
  "use strict";
  const STAGES = ["queued", "loading", "capturing", "verbalizing", "scoring"];
  const SAFETY_POLL_MS = 3000;
  let root = null;
  let socket = null;
  let backoff = 500;
  let lastFrameAt = 0;

  // A frame can arrive before the element it updates exists: the explain and send requests enqueue
  // their job before their response is swapped in, and a short job finishes first. So the latest state
  // of each explanation and reply is kept here and applied when htmx swaps new content in.
  const explanations = new Map(); // explanation id → {stage, done, total, text, finished}
  const replies = new Map(); // message id → {text, finished}

  function panel(explanationId) {
    return document.querySelector(`#panel [data-explanation-id="${explanationId}"]`);
  }

  // One section is re-rendered in place: the panel may hold several explanations of one request.
  function refreshSection(el) {
    htmx.ajax("GET", el.dataset.panelUrl, { target: el, swap: "outerHTML" });
  }

  function refreshThread() {
    htmx.ajax("GET", root.dataset.threadUrl, { target: "#thread", swap: "outerHTML" });
  }

  function isUnfinished(el) {
    return el.dataset.status === "queued" || el.dataset.status === "running";
  }

  function showStage(el, stage, done, total) {
    const index = STAGES.indexOf(stage);
    el.querySelectorAll(".stages li").forEach((li, i) => {
      li.classList.toggle("done", i < index);
      li.classList.toggle("active", i === index);
    });
    const now = el.querySelector('[data-role="stage"]');
    if (now) now.textContent = total ? `${stage} (${done}/${total})` : stage;
    const bar = el.querySelector('[data-role="progress"]');
    if (bar && index >= 0) bar.value = index;
  }

  function applyExplanation(id) {
    const el = panel(id);
    const state = explanations.get(id);
    if (!el || !state || !isUnfinished(el)) return;
    if (state.finished) {
      explanations.delete(id); // the server's panel is the truth from here on
      refreshSection(el);
      return;
    }
    if (state.stage) showStage(el, state.stage, state.done, state.total);
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
    "explanation.progress": (f) =>
      updateExplanation(f.explanation_id, { stage: f.stage, done: f.done, total: f.total }),
    "explanation.text": (f) => updateExplanation(f.explanation_id, { text: f.text }),
    "explanation.done": (f) => updateExplanation(f.explanation_id, { finished: true }),
    "explanation.failed": (f) => updateExplanation(f.explanation_id, { finished: true }),
  };

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + root.dataset.conversationWs);
    socket.onopen = () => { backoff = 500; document.body.dataset.ws = "open"; };
    socket.onmessage = (event) => {
      lastFrameAt = Date.now();
      const frame = JSON.parse(event.data);
      const handle = handlers[frame.type];
      if (handle) handle(frame);
    };
    socket.onclose = () => {
      document.body.dataset.ws = "closed";
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 10000);
    };
  }

  // Frames sent while the socket was down are missed; if nothing arrived for a while, ask the server
  // for the current state of whatever is still unfinished.
  function safetyPoll() {
    if (Date.now() - lastFrameAt < SAFETY_POLL_MS) return;
    document
      .querySelectorAll('#panel [data-status="queued"], #panel [data-status="running"]')
      .forEach(refreshSection);
    const thread = document.getElementById("thread");
    if (thread && thread.dataset.generating) refreshThread();
  }

  function applyHeldStates() {
    document.querySelectorAll("#panel [data-explanation-id]").forEach((el) => {
      applyExplanation(el.dataset.explanationId);
    });
    const thread = document.getElementById("thread");
    if (thread && thread.dataset.generating) applyReply(thread.dataset.generating);
  }

  document.addEventListener("DOMContentLoaded", () => {
    root = document.querySelector("[data-conversation-ws]");
    if (!root) return;
    connect();
    setInterval(safetyPoll, SAFETY_POLL_MS);
  });
  document.addEventListener("htmx:afterSwap", () => {
    lastFrameAt = Date.now();
    if (root) applyHeldStates();
  });
})();
