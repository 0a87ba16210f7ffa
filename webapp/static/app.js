// Case viewer and keyboard-first grading. No framework: one file, loaded on every page.
"use strict";

(function () {
  const started = performance.now();

  // --- Viewer: linked zoom and pan, brightness/contrast, red-free, Grad-CAM overlay ---------
  const view = { scale: 1, x: 0, y: 0, brightness: 100, contrast: 100, redfree: false, overlay: false, opacity: 50 };
  const photos = () => Array.from(document.querySelectorAll("img.photo"));
  const overlays = () => Array.from(document.querySelectorAll("img.overlay"));

  function apply() {
    const transform = `translate(${view.x}px, ${view.y}px) scale(${view.scale})`;
    for (const img of photos().concat(overlays())) img.style.transform = transform;
    for (const img of photos()) {
      img.style.filter = `brightness(${view.brightness}%) contrast(${view.contrast}%)`;
      const wanted = `/images/${img.dataset.id}.png${view.redfree ? "?view=redfree" : ""}`;
      if (img.getAttribute("src") !== wanted) img.setAttribute("src", wanted);
    }
    for (const img of overlays()) {
      if (view.overlay && !img.getAttribute("src")) img.setAttribute("src", img.dataset.src);
      img.classList.toggle("hidden", !view.overlay);
      img.style.opacity = String(view.opacity / 100);
    }
  }

  function zoom(factor) { view.scale = Math.min(16, Math.max(0.1, view.scale * factor)); apply(); }
  function reset() { Object.assign(view, { scale: 1, x: 0, y: 0, brightness: 100, contrast: 100 });
    for (const input of document.querySelectorAll("input[data-tool=brightness], input[data-tool=contrast]")) input.value = "100";
    apply(); }

  document.addEventListener("click", (event) => {
    const tool = event.target.closest("[data-tool]");
    if (!tool || tool.tagName !== "BUTTON") return;
    if (tool.dataset.tool === "zoom-in") zoom(1.25);
    if (tool.dataset.tool === "zoom-out") zoom(0.8);
    if (tool.dataset.tool === "reset") reset();
  });
  document.addEventListener("input", (event) => {
    const tool = event.target.dataset ? event.target.dataset.tool : undefined;
    if (tool === "brightness" || tool === "contrast" || tool === "opacity") { view[tool] = Number(event.target.value); apply(); }
    if (tool === "redfree" || tool === "overlay") { view[tool] = event.target.checked; apply(); }
  });
  let drag = null;
  document.addEventListener("mousedown", (event) => {
    if (event.target.closest(".frame")) { drag = { x: event.clientX - view.x, y: event.clientY - view.y }; event.preventDefault(); }
  });
  document.addEventListener("mousemove", (event) => { if (drag) { view.x = event.clientX - drag.x; view.y = event.clientY - drag.y; apply(); } });
  document.addEventListener("mouseup", () => { drag = null; });
  document.addEventListener("wheel", (event) => {
    if (!event.target.closest(".frame")) return;
    event.preventDefault(); zoom(event.deltaY < 0 ? 1.1 : 0.9);
  }, { passive: false });

  // --- Grading form ------------------------------------------------------------------------
  const forms = () => Array.from(document.querySelectorAll("#grade-form fieldset.eye-form, #other-fields fieldset.eye-form"));
  let active = 0;

  function setState(fieldset, state) {
    fieldset.querySelector("[data-state]").value = state;
    const reason = fieldset.querySelector("[data-reason]");
    const label = { "": "not graded yet", normal: "normal", findings: "findings", ungradable: "ungradable" }[state];
    fieldset.querySelector("[data-state-label]").textContent = label + (state === "ungradable" && reason.value ? ` (${reason.value})` : "");
    if (state !== "findings") for (const box of fieldset.querySelectorAll("input[type=checkbox]")) box.checked = false;
  }

  function activate(index) {
    const all = forms();
    if (!all.length) return;
    active = (index + all.length) % all.length;
    all.forEach((f, i) => f.classList.toggle("active", i === active));
  }

  document.addEventListener("click", (event) => {
    const fieldset = event.target.closest("fieldset.eye-form");
    if (!fieldset) return;
    activate(forms().indexOf(fieldset));
    if (event.target.matches("[data-normal]")) setState(fieldset, "normal");
    if (event.target.matches("[data-ungradable]")) { setState(fieldset, "ungradable"); fieldset.querySelector("[data-reason]").focus(); }
  });
  document.addEventListener("change", (event) => {
    const fieldset = event.target.closest("fieldset.eye-form");
    if (!fieldset) return;
    if (event.target.matches("input[type=checkbox]")) {
      const any = fieldset.querySelectorAll("input[type=checkbox]:checked").length > 0;
      fieldset.querySelector("[data-state]").value = any ? "findings" : "";
      fieldset.querySelector("[data-state-label]").textContent = any ? "findings" : "not graded yet";
    }
    if (event.target.matches("[data-reason]") && event.target.value) setState(fieldset, "ungradable");
  });
  // Arbitration: "Another decision" shows the eye fields (the radio is outside any fieldset).
  document.addEventListener("change", (event) => {
    if (event.target.name !== "choice") return;
    const other = document.getElementById("other-fields");
    if (other) other.classList.toggle("hidden", !event.target.matches("[data-other]"));
  });

  const gradeForm = document.getElementById("grade-form");
  if (gradeForm) {
    activate(0);
    gradeForm.addEventListener("submit", (event) => {
      const ungraded = forms().filter((f) => !f.querySelector("[data-state]").value);
      if (ungraded.length) {
        const eyes = ungraded.map((f) => f.dataset.eye).join(" and ");
        if (!window.confirm(`Nothing recorded for eye ${eyes}. Submit it as normal?`)) { event.preventDefault(); return; }
        for (const f of ungraded) setState(f, "normal");
      }
      gradeForm.querySelector("[name=reading_ms]").value = String(Math.round(performance.now() - started));
    });
  }

  document.addEventListener("keydown", (event) => {
    const typing = event.target.closest("input[type=text], input[type=password], input:not([type]), textarea, select");
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    if (key === "=" || key === "+") { zoom(1.25); return; }
    if (key === "-") { zoom(0.8); return; }
    if (key === "0") { reset(); return; }
    if (key === "g" || key === "G") { const box = document.querySelector("input[data-tool=redfree]"); if (box) { box.checked = !box.checked; view.redfree = box.checked; apply(); } return; }
    if (key === "h" || key === "H") { const box = document.getElementById("overlay-toggle"); if (box) { box.checked = !box.checked; view.overlay = box.checked; apply(); } return; }
    const start = document.getElementById("start-reading");
    if (start && key === "Enter") { start.click(); return; }
    const next = document.getElementById("next-case");
    if (next && (key === "j" || key === "J")) { next.click(); return; }
    if (!gradeForm) return;
    const fieldset = forms()[active];
    if (key === "Tab" || key === "e" || key === "E") { event.preventDefault(); activate(active + (event.shiftKey ? -1 : 1)); return; }
    if (key === "n" || key === "N") { setState(fieldset, "normal"); return; }
    if (key === "u" || key === "U") { setState(fieldset, "ungradable"); fieldset.querySelector("[data-reason]").focus(); return; }
    if (key === "Enter") { event.preventDefault(); gradeForm.requestSubmit(); return; }
    if (key === "j" || key === "J") { window.location.href = `/cases/next?after=${document.location.pathname.split("/").pop()}`; return; }
    if (key === "k" || key === "K") { window.history.back(); return; }
    if (/^[1-9]$/.test(key)) {
      const box = fieldset.querySelector(`input[data-key="${key}"]`);
      if (box) { box.checked = !box.checked; box.dispatchEvent(new Event("change", { bubbles: true })); }
    }
  });
})();
