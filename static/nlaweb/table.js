// The table of a message's explanations (server-rendered rows): the Table button shows or hides it
// below the message, a heading sorts the rows (numbers as numbers, empty cells last), a row click (or
// Enter) opens that token's explanation in the panel, which outlines the token. Open tables are
// fetched again when the thread is re-rendered (a finished explanation, a branch switch).
(() => {
  "use strict";
  const open = new Set(); // message ids whose table is shown

  const slotOf = (id) => document.querySelector(`[data-table-slot="${id}"]`);

  function load(id) {
    const slot = slotOf(id);
    const button = document.querySelector(`[data-role="show-table"][data-message-id="${id}"]`);
    if (!slot || !button) return open.delete(id);
    button.setAttribute("aria-expanded", "true");
    htmx.ajax("GET", button.dataset.tableUrl, { target: slot, swap: "innerHTML" });
  }

  function hide(id) {
    open.delete(id);
    slotOf(id)?.replaceChildren();
    document.querySelector(`[data-role="show-table"][data-message-id="${id}"]`)
      ?.setAttribute("aria-expanded", "false");
  }

  function sortBy(th) {
    const table = th.closest("table");
    const column = [...th.parentElement.children].indexOf(th);
    const numeric = th.dataset.sort === "num";
    const ascending = th.getAttribute("aria-sort") !== "ascending";
    const value = (row) => row.children[column].dataset.value;
    const rows = [...table.tBodies[0].rows];
    rows.sort((a, b) => {
      const x = value(a), y = value(b);
      if (x === "" || y === "") return (x === "") - (y === ""); // empty cells last either way
      const order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
      return ascending ? order : -order;
    });
    table.tBodies[0].append(...rows);
    table.querySelectorAll("th").forEach((h) => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }

  function openRow(row) {
    const token = document.querySelector(`#thread .tok[data-position="${row.dataset.position}"]`);
    row.closest("tbody").querySelectorAll("tr.current").forEach((r) => r.classList.remove("current"));
    row.classList.add("current");
    if (!token) return;
    token.scrollIntoView({ block: "nearest" });
    token.dispatchEvent(new MouseEvent("click", { bubbles: true })); // tokens.js explains it
  }

  document.addEventListener("click", (event) => {
    const show = event.target.closest?.('[data-role="show-table"]');
    if (show) {
      const id = show.dataset.messageId;
      if (open.has(id)) hide(id);
      else { open.add(id); load(id); }
      return;
    }
    const hider = event.target.closest?.('[data-role="hide-table"]');
    if (hider) return hide(hider.closest("[data-message-id]").dataset.messageId);
    const th = event.target.closest?.(".explanations-table th[data-sort]");
    if (th) return sortBy(th);
    const row = event.target.closest?.(".explanations-table tbody tr");
    if (row && !event.target.closest("a")) openRow(row);
  });
  document.addEventListener("keydown", (event) => {
    const row = event.target.closest?.(".explanations-table tbody tr");
    if (row && event.key === "Enter") openRow(row);
  });
  document.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target?.matches?.("[data-table-slot]")) return;
    open.forEach((id) => { if (!slotOf(id)?.firstElementChild) load(id); });
  });
})();
