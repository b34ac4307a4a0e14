// The message composer: Enter sends, Shift+Enter adds a line, and a live count of characters
// against the limit the server enforces (the textarea's maxlength).
(() => {
  "use strict";
  const area = () => document.querySelector("#composer textarea");

  function count() {
    const textarea = area();
    const shown = document.querySelector('#composer [data-role="count"]');
    if (!textarea || !shown) return;
    const max = textarea.maxLength > 0 ? textarea.maxLength : 0;
    shown.textContent = max ? `${textarea.value.length} / ${max}` : `${textarea.value.length}`;
    shown.classList.toggle("near-limit", max > 0 && textarea.value.length >= max * 0.9);
  }

  document.addEventListener("input", (event) => {
    if (event.target === area()) count();
  });
  // The composer and the in-place editor of a message: Enter sends or saves, Shift+Enter adds a
  // line, Escape cancels an edit (the thread is read again, unchanged).
  document.addEventListener("keydown", (event) => {
    const textarea = event.target;
    const editing = textarea.matches?.('[data-role="edit-text"]');
    if (textarea !== area() && !editing) return;
    if (editing && event.key === "Escape") {
      event.preventDefault();
      window.nlawebRefreshThread();
      return;
    }
    if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    if (textarea.value.trim()) textarea.form.requestSubmit();
  });
  document.addEventListener("click", (event) => {
    if (!event.target.closest?.('[data-role="cancel-edit"]')) return;
    window.nlawebRefreshThread();
  });
  document.addEventListener("DOMContentLoaded", count);
  document.addEventListener("htmx:afterSwap", count);
})();
