// Sharing, on three kinds of page:
// - the shared page and its embed ([data-share-root]): a click (or Enter) on a tinted token shows the
//   explanation frozen into the link (server-rendered panel, GET, no GPU work); untinted tokens have
//   none and are not buttons. The server's answer outlines the open token and writes ?open=<explanation
//   id> in the URL (HX-Replace-Url), as on the owner's page; closing the section is its own request.
// - the owner's conversation page: the Share link carries the branch shown (?at=) and the open
//   explanations, so the branch and the token being read are what gets shared and pinned.
// - the list of shared links: copy buttons, and a confirmation before revoking.
(() => {
  "use strict";
  const root = () => document.querySelector("[data-share-root]");
  const TOKEN = "[data-share-root] .tok.explained[data-position]";

  function showPanel(token) {
    const url = root().dataset.panelBase.replace(/\/0$/, `/${token.dataset.position}`);
    htmx.ajax("GET", url, { source: token, target: "#panel", swap: "innerHTML" });
  }

  document.addEventListener("click", (event) => {
    const token = event.target.closest?.(TOKEN);
    if (token) {
      event.preventDefault();
      showPanel(token);
      return;
    }
    const share = event.target.closest?.('a[data-role="share"]');
    if (share) {
      const query = new URLSearchParams(location.search);
      const carried = ["at", "open"].filter((k) => query.get(k)).map((k) => `${k}=${query.get(k)}`);
      share.href = share.href.split("?")[0] + (carried.length ? `?${carried.join("&")}` : "");
      return;
    }
    const copy = event.target.closest?.("[data-copy]");
    if (copy) copyFrom(copy, document.querySelector(copy.dataset.copy));
  });

  document.addEventListener("keydown", (event) => {
    const token = event.target.closest?.(TOKEN);
    if (!token || (event.key !== "Enter" && event.key !== " ")) return;
    event.preventDefault();
    showPanel(token);
  });

  document.addEventListener("change", (event) => {
    if (!event.target.matches?.('[data-role="share-show-template"]')) return;
    root().classList.toggle("show-template", event.target.checked);
  });

  document.addEventListener("submit", (event) => {
    const message = event.target.dataset?.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });

  // The selected field is copied at once (execCommand, inside the click); the clipboard API is only
  // the fallback, as its promise can wait on a permission or on focus and leave the button unanswered.
  async function copyFrom(button, input) {
    if (!input) return;
    input.select();
    let copied = false;
    try { copied = document.execCommand("copy"); } catch { copied = false; }
    if (!copied && navigator.clipboard) {
      try { await navigator.clipboard.writeText(input.value); copied = true; } catch { copied = false; }
    }
    button.textContent = copied ? "Copied" : "Selected: press Ctrl+C";
  }
})();
