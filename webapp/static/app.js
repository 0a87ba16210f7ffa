// Case viewer and keyboard-first grading. No framework: one file, loaded on every page.
"use strict";

(function () {
  const started = performance.now();

  // --- Viewer: every photograph fitted to its pane and centred; zoom (about the cursor) and
  // pan linked between the panes, relative to that fit, so both eyes show at the same scale
  // whatever their pixel size or encoding; the Grad-CAM overlay is given its photograph's box.
  const view = { zoom: 1, x: 0, y: 0, brightness: 100, contrast: 100, redfree: false, overlay: false, opacity: 50 };
  const photos = () => Array.from(document.querySelectorAll("img.photo"));
  const overlays = () => Array.from(document.querySelectorAll("img.overlay"));

  function fit(img) {  // scale that fits the photograph in its frame, and the frame's size
    const frame = img.closest(".frame");
    const w = img.naturalWidth, h = img.naturalHeight, W = frame.clientWidth, H = frame.clientHeight;
    return { w, h, W, H, s: w && h ? Math.min(W / w, H / h) : 1 };
  }

  function place(img, box) {
    if (!box.w) return;
    const s = box.s * view.zoom;
    const left = (box.W - box.w * s) / 2 + view.x, top = (box.H - box.h * s) / 2 + view.y;
    img.style.width = `${box.w}px`; img.style.height = `${box.h}px`;
    img.style.transform = `translate(${left}px, ${top}px) scale(${s})`;
  }

  function apply() {
    for (const img of photos()) {
      const box = fit(img);
      place(img, box);
      for (const over of img.closest(".frame").querySelectorAll("img.overlay")) place(over, box);
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

  // Zoom by ``factor`` keeping the point at (cx, cy) of ``img``'s frame where it is.
  function zoomAt(img, cx, cy, factor) {
    const zoom = Math.min(16, Math.max(0.25, view.zoom * factor));
    const box = fit(img);
    if (box.w) {
      const s = box.s * view.zoom, s2 = box.s * zoom;
      const left = (box.W - box.w * s) / 2 + view.x, top = (box.H - box.h * s) / 2 + view.y;
      view.x = cx - ((cx - left) / s) * s2 - (box.W - box.w * s2) / 2;
      view.y = cy - ((cy - top) / s) * s2 - (box.H - box.h * s2) / 2;
    }
    view.zoom = zoom;
    apply();
  }
  function zoom(factor) {
    const img = photos()[0];
    if (!img) return;
    const frame = img.closest(".frame");
    zoomAt(img, frame.clientWidth / 2, frame.clientHeight / 2, factor);
  }
  function reset() { Object.assign(view, { zoom: 1, x: 0, y: 0, brightness: 100, contrast: 100 });
    for (const input of document.querySelectorAll("input[data-tool=brightness], input[data-tool=contrast]")) input.value = "100";
    apply(); }

  document.addEventListener("load", (event) => { if (event.target.matches && event.target.matches("img.photo")) apply(); }, true);
  window.addEventListener("resize", apply);
  document.addEventListener("DOMContentLoaded", apply);
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
    const frame = event.target.closest(".frame");
    if (!frame) return;
    event.preventDefault();
    const img = frame.querySelector("img.photo"), rect = frame.getBoundingClientRect();
    zoomAt(img, event.clientX - rect.left, event.clientY - rect.top, event.deltaY < 0 ? 1.1 : 1 / 1.1);
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
    if (state !== "ungradable") reason.value = "";
    fieldset.dataset.graded = state;
  }

  // After an eye is settled (normal, or ungradable with its reason): on to the next eye not
  // graded yet, so a normal visit is N, N, Enter.
  function advance() {
    const all = forms();
    for (let step = 1; step < all.length; step++) {
      const i = (active + step) % all.length;
      if (!all[i].querySelector("[data-state]").value) { activate(i); return; }
    }
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
    if (event.target.matches("[data-ungradable]")) setState(fieldset, "ungradable");
    // A mouse click leaves no focus on the button, so Enter then submits; a keyboard press
    // (detail 0) keeps it where the person put it.
    if (event.target.matches("button") && event.detail > 0) event.target.blur();
  });
  document.addEventListener("change", (event) => {
    const fieldset = event.target.closest("fieldset.eye-form");
    if (!fieldset) return;
    if (event.target.matches("input[type=checkbox]")) {
      const any = fieldset.querySelectorAll("input[type=checkbox]:checked").length > 0;
      fieldset.querySelector("[data-state]").value = any ? "findings" : "";
      fieldset.querySelector("[data-state-label]").textContent = any ? "findings" : "not graded yet";
      fieldset.dataset.graded = any ? "findings" : "";
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
      if (ungraded.length) {  // never saved as normal: the reader must say what they saw
        event.preventDefault();
        const eyes = ungraded.map((f) => f.dataset.eye).join(" and ");
        let note = gradeForm.querySelector(".form-error");
        if (!note) {
          note = document.createElement("p");
          note.className = "form-error field-error";
          note.setAttribute("role", "alert");
          gradeForm.prepend(note);
        }
        note.textContent = `Nothing recorded for eye ${eyes}: mark it normal (N), tick its findings, or ungradable (U).`;
        activate(forms().indexOf(ungraded[0]));
        return;
      }
      gradeForm.querySelector("[name=reading_ms]").value = String(Math.round(performance.now() - started));
    });
  }

  // Keys. Tab, Shift+Tab and Enter on a link or button keep their browser meaning; letters
  // and digits act only when no text field or list has the focus; Enter submits the read
  // from anywhere else on the case page.
  const reasonKeys = (fieldset) => Array.from(fieldset.querySelectorAll("[data-reason] option")).filter((o) => o.value);
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return;
    const key = event.key, target = event.target;
    const typing = target.closest("textarea, select, input[type=text], input[type=password], input[type=search], input:not([type])");
    const control = target.closest("a[href], button, summary");
    if (key === "Enter") {
      if (control || (typing && target.tagName === "TEXTAREA")) return;
      if (gradeForm && (!typing || gradeForm.contains(target))) { event.preventDefault(); gradeForm.requestSubmit(); return; }
      const start = document.getElementById("start-reading");
      if (start && !typing) start.click();
      return;
    }
    if (typing || key === "Tab") return;
    if (key === "=" || key === "+") { zoom(1.25); return; }
    if (key === "-") { zoom(0.8); return; }
    if (key === "0") { reset(); return; }
    if (key === "g" || key === "G") { const box = document.querySelector("input[data-tool=redfree]"); if (box) { box.checked = !box.checked; view.redfree = box.checked; apply(); } return; }
    if (key === "h" || key === "H") { const box = document.getElementById("overlay-toggle"); if (box) { box.checked = !box.checked; view.overlay = box.checked; apply(); } return; }
    const next = document.getElementById("next-case");
    if (next && (key === "j" || key === "J")) { next.click(); return; }
    if (!gradeForm) return;
    const fieldset = forms()[active];
    if (key === "e" || key === "E") { activate(active + (event.shiftKey ? -1 : 1)); return; }
    if (key === "n" || key === "N") { setState(fieldset, "normal"); advance(); return; }
    if (key === "u" || key === "U") { setState(fieldset, "ungradable"); return; }
    if (key === "j" || key === "J") { window.location.href = `/cases/next?after=${document.location.pathname.split("/").pop()}`; return; }
    if (key === "k" || key === "K") { window.history.back(); return; }
    if (/^[1-9]$/.test(key)) {
      if (fieldset.querySelector("[data-state]").value === "ungradable") {  // U then the reason's number
        const option = reasonKeys(fieldset)[Number(key) - 1];
        if (option) { fieldset.querySelector("[data-reason]").value = option.value; setState(fieldset, "ungradable"); advance(); }
        return;
      }
      const box = fieldset.querySelector(`input[data-key="${key}"]`);
      if (box) { box.checked = !box.checked; box.dispatchEvent(new Event("change", { bubbles: true })); }
    }
  });

  // Leaving a case unread hands it back at once, so a colleague can take it (the lease is
  // only the fallback for a browser that never says goodbye).
  const release = document.querySelector("[data-release]");
  if (release) {
    let submitted = false;
    if (gradeForm) gradeForm.addEventListener("submit", (event) => { if (!event.defaultPrevented) submitted = true; });
    window.addEventListener("pagehide", () => {
      if (submitted) return;
      const body = new FormData();
      body.append("csrf_token", release.dataset.csrf);
      navigator.sendBeacon(release.dataset.release, body);
    });
  }
})();
