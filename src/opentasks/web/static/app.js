// The opentasks dashboard's own behaviour, beside htmx (a file, not inline: the pages'
// Content-Security-Policy allows scripts from this server only).
(function () {
  "use strict";

  // Live regions (class "live") are polled by htmx every 2 s. Skip a poll while the browser tab
  // is hidden, and while the visitor is working inside the region (a ticked box, a focused
  // input), so nothing they chose or typed is replaced under them.
  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail.elt;
    if (!elt || !elt.classList || !elt.classList.contains("live")) {
      return;
    }
    var busy = elt.querySelector("input[type=checkbox]:checked") ||
      (document.activeElement && document.activeElement !== document.body && elt.contains(document.activeElement) &&
        document.activeElement.tagName === "INPUT");
    if (document.hidden || busy) {
      event.preventDefault();
    }
  });

  // "Select all" ticks every task of the page; the bar shows how many are ticked.
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!(box instanceof HTMLInputElement) || box.type !== "checkbox") {
      return;
    }
    var table = box.closest("table");
    if (box.classList.contains("select-all") && table) {
      table.querySelectorAll("input[name=task]").forEach(function (each) {
        each.checked = box.checked;
      });
    }
    var form = box.closest("form");
    var shown = form && form.querySelector(".selected-count");
    if (shown) {
      var ticked = form.querySelectorAll("input[name=task]:checked").length;
      shown.textContent = ticked ? ticked + " selected" : "";
    }
  });
})();
