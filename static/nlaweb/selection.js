// Shift+click on token chips builds a selection that one "Explain N tokens" request explains (one
// worker job, one engine batch); a plain click still explains its one token at once. The selection
// lives in the DOM only: a class and aria-pressed on each chip, and the hidden inputs of
// #selection-form (created with createElement, never innerHTML), so a re-rendered thread starts empty.
(() => {
  "use strict";
  const CHIP = '#thread .tok[name="position"]';

  const form = () => document.getElementById("selection-form");
  const selected = () => [...document.querySelectorAll(`${CHIP}.selected`)];
  const part = (role) => form().querySelector(`[data-role="${role}"]`);

  function positionInput(chip) {
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = "position";
    input.value = chip.value;
    return input;
  }

  function render() {
    const chips = selected();
    part("positions").replaceChildren(...chips.map(positionInput));
    part("explain-selection").textContent =
      `Explain ${chips.length} ${chips.length === 1 ? "token" : "tokens"}`;
    form().hidden = chips.length === 0;
  }

  function mark(chip, on) {
    chip.classList.toggle("selected", on);
    chip.setAttribute("aria-pressed", String(on));
  }

  function toggle(chip) {
    const on = !chip.classList.contains("selected");
    const max = Number(form().dataset.maxPositions);
    const full = on && selected().length >= max;
    part("selection-note").textContent = full ? `At most ${max} tokens at a time.` : "";
    if (!full) mark(chip, on);
    render();
  }

  function clear() {
    selected().forEach((chip) => mark(chip, false));
    part("selection-note").textContent = "";
    render();
  }

  const shiftChip = (event) => event.shiftKey && form() && event.target.closest?.(CHIP);

  // Capture phase: decided before the chip's own click submits #token-form.
  document.addEventListener("click", (event) => {
    const chip = shiftChip(event);
    if (!chip) return;
    event.preventDefault(); // selects instead of explaining
    toggle(chip);
  }, true);
  // Shift+mousedown would otherwise extend the page's text selection across the chips.
  document.addEventListener("mousedown", (event) => {
    if (shiftChip(event)) event.preventDefault();
  }, true);
  document.addEventListener("click", (event) => {
    if (form() && event.target.closest?.('[data-role="clear-selection"]')) clear();
  });
  document.addEventListener("htmx:afterRequest", (event) => {
    if (event.detail.elt === form() && event.detail.successful) clear();
  });
})();
