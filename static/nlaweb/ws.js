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

  function panel(explanationId) {
    return document.querySelector(`#panel [data-explanation-id="${explanationId}"]`);
  }

  function refreshPanel(el) {
    htmx.ajax("GET", el.dataset.panelUrl, { target: "#panel", swap: "innerHTML" });
  }

  function refreshThread() {
    htmx.ajax("GET", root.dataset.threadUrl, { target: "#thread", swap: "outerHTML" });
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

  const handlers = {
    "chat.delta": (f) => {
      const el = document.querySelector(`[data-streaming-message="${f.message_id}"]`);
      if (el) el.textContent = f.text;
    },
    "chat.done": () => refreshThread(),
    "chat.failed": () => refreshThread(),
    "explanation.progress": (f) => { const el = panel(f.explanation_id); if (el) showStage(el, f.stage, f.done, f.total); },
    "explanation.text": (f) => {
      const el = panel(f.explanation_id);
      const text = el && el.querySelector('[data-role="text"]');
      if (text) text.textContent = f.text;
      if (el) showStage(el, "verbalizing", 0, 0);
    },
    "explanation.done": (f) => { const el = panel(f.explanation_id); if (el) refreshPanel(el); },
    "explanation.failed": (f) => { const el = panel(f.explanation_id); if (el) refreshPanel(el); },
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

  // Frames sent before the socket or the panel existed are missed; if nothing arrived for a while,
  // ask the server for the current state of whatever is still unfinished.
  function safetyPoll() {
    if (Date.now() - lastFrameAt < SAFETY_POLL_MS) return;
    const running = document.querySelector('#panel [data-status="queued"], #panel [data-status="running"]');
    if (running) refreshPanel(running);
    const thread = document.getElementById("thread");
    if (thread && thread.dataset.generating) refreshThread();
  }

  document.addEventListener("DOMContentLoaded", () => {
    root = document.querySelector("[data-conversation-ws]");
    if (!root) return;
    connect();
    setInterval(safetyPoll, SAFETY_POLL_MS);
  });
  document.addEventListener("htmx:afterSwap", () => { lastFrameAt = Date.now(); });
})();
