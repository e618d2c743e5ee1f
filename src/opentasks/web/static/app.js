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

  // The bulk bar of a form: how many tasks are ticked, and its "selected" buttons
  // (data-needs-selection) enabled only while at least one is. "Select all" shows a partial tick
  // while only some are.
  function syncSelection(form) {
    var boxes = form.querySelectorAll("input[name=task]");
    var ticked = form.querySelectorAll("input[name=task]:checked").length;
    var shown = form.querySelector(".selected-count");
    if (shown) {
      shown.textContent = ticked ? ticked + " selected" : "None selected";
      shown.classList.toggle("has-selection", ticked > 0);
    }
    form.querySelectorAll("[data-needs-selection]").forEach(function (button) {
      button.disabled = ticked === 0;
    });
    var all = form.querySelector("input.select-all");
    if (all) {
      all.checked = ticked > 0 && ticked === boxes.length;
      all.indeterminate = ticked > 0 && ticked < boxes.length;
    }
  }

  function syncEveryForm() {
    document.querySelectorAll("form").forEach(function (form) {
      if (form.querySelector(".selected-count")) {
        syncSelection(form);
      }
    });
  }

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
    if (form) {
      syncSelection(form);
    }
  });

  // On the first load, and whenever htmx puts new content in (a boosted page, a refreshed table).
  document.addEventListener("DOMContentLoaded", syncEveryForm);
  document.addEventListener("htmx:load", syncEveryForm);
})();
