// Tokens of the thread: a click explains one token, shift+click builds a selection that one
// "Explain N tokens" request explains (one worker job, one engine batch). Tokens are inline spans
// (role="button") so a message reads as prose; Enter or Space on a focused token clicks it.
// The selection lives in the DOM only: a class and aria-pressed on each token, and the hidden inputs
// of #selection-form (created with createElement, never innerHTML), so a re-rendered thread starts empty.
(() => {
  "use strict";
  const TOKEN = "#thread .tok[data-position]";

  const form = () => document.getElementById("selection-form");
  const selected = () => [...document.querySelectorAll(`${TOKEN}.selected`)];
  const part = (role) => form().querySelector(`[data-role="${role}"]`);

  function positionInput(token) {
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = "position";
    input.value = token.dataset.position;
    return input;
  }

  function render() {
    const tokens = selected();
    part("positions").replaceChildren(...tokens.map(positionInput));
    part("explain-selection").textContent =
      `Explain ${tokens.length} ${tokens.length === 1 ? "token" : "tokens"}`;
    form().hidden = tokens.length === 0;
  }

  function mark(token, on) {
    token.classList.toggle("selected", on);
    token.setAttribute("aria-pressed", String(on));
  }

  function toggle(token) {
    const on = !token.classList.contains("selected");
    const max = Number(form().dataset.maxPositions);
    const full = on && selected().length >= max;
    part("selection-note").textContent = full ? `At most ${max} tokens at a time.` : "";
    if (!full) mark(token, on);
    render();
  }

  function clear() {
    selected().forEach((token) => mark(token, false));
    part("selection-note").textContent = "";
    render();
  }

  function explainOne(token) {
    const one = document.getElementById("token-form");
    if (!one) return;
    one.querySelector('input[name="position"]').value = token.dataset.position;
    one.requestSubmit(); // htmx posts it (CSRF header from <body hx-headers>) into #panel
  }

  const tokenOf = (event) => event.target.closest?.(TOKEN);

  document.addEventListener("click", (event) => {
    const token = tokenOf(event);
    if (!token || !form()) return;
    event.preventDefault();
    if (event.shiftKey) toggle(token);
    else explainOne(token);
  });
  // Escape drops a shift+click selection wherever focus is (an editor's Escape is its own).
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || !form() || selected().length === 0) return;
    if (event.target.matches?.('[data-role="edit-text"]')) return;
    clear();
  });
  document.addEventListener("keydown", (event) => {
    const token = tokenOf(event);
    if (!token || (event.key !== "Enter" && event.key !== " ")) return;
    event.preventDefault();
    token.dispatchEvent(new MouseEvent("click", { bubbles: true, shiftKey: event.shiftKey }));
  });
  // Shift+mousedown would otherwise extend the page's text selection across the tokens.
  document.addEventListener("mousedown", (event) => {
    if (event.shiftKey && tokenOf(event)) event.preventDefault();
  }, true);
  document.addEventListener("click", (event) => {
    if (form() && event.target.closest?.('[data-role="clear-selection"]')) clear();
  });
  document.addEventListener("htmx:afterRequest", (event) => {
    if (event.detail.elt === form() && event.detail.successful) clear();
  });
  // An answer that re-renders a chip out of band (its tint changed) keeps it in the selection.
  document.addEventListener("htmx:oobAfterSwap", () => {
    if (!form()) return;
    const kept = new Set([...part("positions").querySelectorAll("input")].map((i) => i.value));
    document.querySelectorAll(TOKEN).forEach((token) => {
      if (kept.has(token.dataset.position)) mark(token, true);
    });
  });
})();
