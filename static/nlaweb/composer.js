// The message composer: Enter sends, Shift+Enter adds a line, and a live count of characters
// against the limit the server enforces (data-max-chars; no maxlength, which would cut a paste: a
// longer message goes to the server, which refuses it with its sentence and keeps the text).
(() => {
  "use strict";
  const area = () => document.querySelector("#composer textarea");

  function count() {
    const textarea = area();
    const shown = document.querySelector('#composer [data-role="count"]');
    if (!textarea || !shown) return;
    const max = Number(textarea.dataset.maxChars) || 0;
    const length = textarea.value.length;
    shown.textContent = max ? `${length} / ${max}` : `${length}`;
    shown.classList.toggle("near-limit", max > 0 && length >= max * 0.9 && length <= max);
    shown.classList.toggle("over-limit", max > 0 && length > max);
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
    // A blank or whitespace-only message goes too: the server answers with the sentence saying
    // why nothing was sent (the browser's own "required" bubble would not say it for spaces).
    textarea.form.requestSubmit();
  });
  document.addEventListener("click", (event) => {
    if (!event.target.closest?.('[data-role="cancel-edit"]')) return;
    window.nlawebRefreshThread();
  });
  document.addEventListener("DOMContentLoaded", count);
  document.addEventListener("htmx:afterSwap", count);
})();
