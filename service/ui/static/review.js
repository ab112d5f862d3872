// Keyboard shortcuts of the review UI (served as a file: the CSP allows no inline script).
// j/k move through the queue's cards, Enter opens one; on a job page a/r go to the approve
// or reject form (a decision still needs its button, so a stray key press decides nothing);
// x ticks the focused card for the bulk approval; ? opens the help.
(function () {
  "use strict";

  function typing(event) {
    var t = event.target;
    return t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
  }

  function cards() {
    return Array.prototype.slice.call(document.querySelectorAll(".card .card-link"));
  }

  function move(step) {
    var links = cards();
    if (!links.length) return;
    var at = links.indexOf(document.activeElement);
    var next = at < 0 ? (step > 0 ? 0 : links.length - 1) : Math.min(links.length - 1, Math.max(0, at + step));
    links.forEach(function (l) { l.closest(".card").classList.remove("selected"); });
    links[next].closest(".card").classList.add("selected");
    links[next].focus();
  }

  function goToForm(kind) {
    var form = document.getElementById("form-" + kind);
    if (!form) return;
    form.scrollIntoView({ block: "center" });
    form.querySelector("select, textarea, button").focus();
  }

  function tick() {
    var card = document.activeElement && document.activeElement.closest(".card");
    var box = card && card.querySelector("input.pick");
    if (box) box.checked = !box.checked;
  }

  function tickAll() {
    var boxes = document.querySelectorAll("input.pick");
    var all = Array.prototype.every.call(boxes, function (b) { return b.checked; });
    Array.prototype.forEach.call(boxes, function (b) { b.checked = !all; });
  }

  function help() {
    var dialog = document.getElementById("help");
    if (dialog && !dialog.open) dialog.showModal();
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event)) return;
    var actions = {
      j: function () { move(1); },
      k: function () { move(-1); },
      a: function () { goToForm("approve"); },
      r: function () { goToForm("reject"); },
      x: tick,
      "?": help,
    };
    var action = actions[event.key];
    if (action) {
      event.preventDefault();
      action();
    }
  });

  document.addEventListener("click", function (event) {
    if (!event.target.closest) return;
    if (event.target.closest(".help-button")) help();
    if (event.target.closest(".pick-all")) tickAll();
  });
})();
