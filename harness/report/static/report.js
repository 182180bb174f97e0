// synfin report: folding areas, the two filters, copy buttons, fitting a drawing. No framework; works from file://.
(function () {
  "use strict";
  const body = document.body;
  document.addEventListener("click", function (e) {
    const fold = e.target.closest("button.fold");
    if (fold) {
      const area = fold.closest("section.area");
      fold.setAttribute("aria-expanded", String(!area.classList.toggle("collapsed")));
      return;
    }
    const fit = e.target.closest("button.fit");  // a drawing at its own size (scrolls) or fitted to the page
    if (fit) {
      const box = fit.closest("section").querySelector(".drawing");
      if (box) fit.textContent = box.classList.toggle("fit") ? "actual size" : "fit to width";
      return;
    }
    const copy = e.target.closest("button.copy");
    if (copy) {
      const code = copy.parentNode.querySelector("code");
      const done = function () { copy.textContent = "copied"; setTimeout(function () { copy.textContent = "copy"; }, 1200); };
      if (navigator.clipboard) {
        navigator.clipboard.writeText(code.textContent).then(done, function () { select(code); });
      } else {
        select(code);
      }
    }
  });
  function select(node) {  // without the clipboard API (some browsers on file://) the text is selected instead
    const range = document.createRange();
    range.selectNodeContents(node);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }
  function filter(id, cls) {  // a checkbox that sets a class on <body>, kept on reload by the browser
    const box = document.getElementById(id);
    if (!box) return;
    const apply = function () { body.classList.toggle(cls, box.checked); };
    box.addEventListener("change", apply);
    apply();
  }
  filter("only-deviations", "only-deviations");
  filter("only-changed", "only-changed");
  function foldAll(collapse) {
    document.querySelectorAll("section.area").forEach(function (area) {
      area.classList.toggle("collapsed", collapse);
      area.querySelector("button.fold").setAttribute("aria-expanded", String(!collapse));
    });
  }
  const fold = document.getElementById("fold-all"), unfold = document.getElementById("unfold-all");
  if (fold) fold.addEventListener("click", function () { foldAll(true); });
  if (unfold) unfold.addEventListener("click", function () { foldAll(false); });
})();
