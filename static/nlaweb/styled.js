// Styles that depend on data, without inline style (the Content-Security-Policy allows none): the
// server writes the values into data attributes and this script sets them through the CSSOM, which
// the policy allows, on the page as loaded and on every fragment swapped in later (htmx, websocket).
// - data-heat="0.42" on a token: its --heat (the fidelity heatmap's tint, app.css).
// - <meta name="nlaweb-pinned-paragraph" content="<explanation id>:<paragraph index>"> on a share:
//   that paragraph of that explanation's text stands out (share.css .pinned-text).
(() => {
  "use strict";

  function pinnedParagraph() {
    const meta = document.querySelector('meta[name="nlaweb-pinned-paragraph"]');
    const [id, index] = (meta?.content ?? "").split(":");
    if (!id || index === undefined) return;
    const text = document.querySelector(`#panel [data-explanation-id="${CSS.escape(id)}"] [data-role="text"]`);
    const paragraph = text?.querySelectorAll(":scope > p")[Number(index)];
    paragraph?.classList.add("pinned-text");
  }

  function apply(root) {
    if (root.nodeType !== Node.ELEMENT_NODE) return;
    const heated = root.matches("[data-heat]") ? [root] : [];
    heated.push(...root.querySelectorAll("[data-heat]"));
    heated.forEach((el) => el.style.setProperty("--heat", el.dataset.heat));
  }

  function start() {
    apply(document.documentElement);
    pinnedParagraph();
    new MutationObserver((records) => {
      records.forEach((r) => r.addedNodes.forEach(apply));
      pinnedParagraph();
    }).observe(document.documentElement, { childList: true, subtree: true });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
