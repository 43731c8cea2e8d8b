// chatapp: progressive enhancement only. Every feature works without this file.
// No inline scripts (CSP) and no hx-on (allowEval is off): behaviour is wired up here.
(function () {
  "use strict";

  var root = document.documentElement;
  var THEME_KEY = "chatapp-theme";
  var THEMES = ["system", "dark", "light"];
  var NEAR_BOTTOM_PX = 120;
  var FLASH_MS = 8000;

  // ---- theme: applied first, to keep the flash of the wrong theme short ---------------
  // The account's theme (Settings) comes as <html data-theme> from the server; the toggle
  // is this browser's override, kept in localStorage ("system" included).
  var accountTheme = root.dataset.theme || "system";

  function storedTheme() {
    try {
      var value = localStorage.getItem(THEME_KEY);
      return THEMES.indexOf(value) >= 0 ? value : accountTheme;
    } catch (e) {
      return accountTheme;
    }
  }

  function applyTheme(theme) {
    if (theme === "dark" || theme === "light") root.dataset.theme = theme;
    else delete root.dataset.theme;
  }

  var theme = storedTheme();
  applyTheme(theme);

  var THEME_ICONS = { system: "\u25D0", dark: "\u263E", light: "\u2600\uFE0E" };

  function labelThemeToggles() {
    var name = theme.charAt(0).toUpperCase() + theme.slice(1);
    document.querySelectorAll("[data-theme-toggle]").forEach(function (button) {
      button.hidden = false;
      button.textContent = THEME_ICONS[theme] + " " + name;
      button.setAttribute("aria-label", "Theme: " + name + ". Change theme");
      button.title = "Theme: " + name + " (click to change)";
    });
  }

  function cycleTheme() {
    theme = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length];
    try {
      localStorage.setItem(THEME_KEY, theme);
    } catch (e) { /* storage off: the choice lasts for this page only */ }
    applyTheme(theme);
    labelThemeToggles();
  }

  // Another tab changed the theme: follow it.
  window.addEventListener("storage", function (event) {
    if (event.key !== THEME_KEY && event.key !== null) return;
    theme = storedTheme();
    applyTheme(theme);
    labelThemeToggles();
  });

  // ---- helpers ---------------------------------------------------------------------
  function closest(node, selector) {
    return node && node.nodeType === 1 ? node.closest(selector) : null;
  }

  function isVisible(el) {
    return !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  }

  function navToggle() {
    return document.getElementById("nav-toggle");
  }

  function closeNav() {
    var toggle = navToggle();
    if (toggle && toggle.checked) {
      toggle.checked = false;
      return true;
    }
    return false;
  }

  // ---- scrolling: follow a streaming answer only if the reader is at the bottom -----
  var scroller = document.scrollingElement || root;
  var stickToBottom = true;

  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - window.innerHeight < NEAR_BOTTOM_PX;
  }

  function scrollToBottom() {
    scroller.scrollTop = scroller.scrollHeight;
    stickToBottom = true;
  }

  window.addEventListener("scroll", function () { stickToBottom = nearBottom(); }, { passive: true });

  function followStream() {
    if (stickToBottom && document.getElementById("conversation")) scrollToBottom();
  }

  // ---- flash messages --------------------------------------------------------------
  var flashTimer = null;

  function clearFlash() {
    var flash = document.getElementById("flash");
    if (flash) flash.textContent = "";
    clearTimeout(flashTimer);
    flashTimer = null;
  }

  function flashShown() {
    clearTimeout(flashTimer);
    flashTimer = setTimeout(clearFlash, FLASH_MS);
  }

  function showFlash(text, isError) {
    var flash = document.getElementById("flash");
    if (!flash) return;
    var box = document.createElement("div");
    box.className = "flash-message" + (isError ? " error" : "");
    box.textContent = text;
    flash.replaceChildren(box);
    flashShown();
  }

  // ---- copy buttons: code blocks (they arrive by SSE: delegated) and [data-copy] ----
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    return new Promise(function (resolve, reject) {  // plain http on a LAN: the old way
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      area.remove();
      if (ok) resolve(); else reject(new Error("copy failed"));
    });
  }

  function copyFrom(button, text) {
    var label = button._label || (button._label = button.textContent);
    copyText(text).then(function () {
      button.textContent = "Copied";
    }, function () {
      button.textContent = "Copy failed";
    }).then(function () {
      clearTimeout(button._copyTimer);
      button._copyTimer = setTimeout(function () { button.textContent = label; }, 1600);
    });
  }

  // ---- set-up of each page and of swapped-in content --------------------------------
  function setUp() {
    labelThemeToggles();
    document.querySelectorAll("button[data-copy][hidden]").forEach(function (button) { button.hidden = false; });
  }

  document.addEventListener("htmx:load", setUp);
  setUp();
  if (document.getElementById("conversation")) scrollToBottom();

  // Back/forward cache: never come back to an open phone menu.
  window.addEventListener("pageshow", function () { closeNav(); });

  // ---- clicks ----------------------------------------------------------------------
  document.addEventListener("click", function (event) {
    var target = event.target;
    // The thread tools (Rename, Settings) behave like popovers: a click elsewhere closes them.
    document.querySelectorAll("details.tool[open]").forEach(function (details) {
      if (!details.contains(target)) details.open = false;
    });
    var copy = closest(target, "div.code button.copy");
    var code = copy && copy.closest("div.code").querySelector("pre code");
    if (code) {
      copyFrom(copy, code.textContent);
      return;
    }
    copy = closest(target, "button[data-copy]");
    var source = copy && document.querySelector(copy.dataset.copy);
    if (source) {
      copyFrom(copy, "value" in source ? source.value : source.textContent);
      return;
    }
    if (closest(target, "[data-theme-toggle]")) {
      cycleTheme();
      return;
    }
    if (closest(target, "#flash")) {
      clearFlash();
      return;
    }
    var toggle = navToggle();
    if (toggle && toggle.checked) {
      // A thread link was chosen, or the click fell outside the open drawer.
      // (Labels of the checkbox toggle it themselves: leave those clicks alone.)
      if (closest(target, ".sidebar a") || !closest(target, ".sidebar, label[for=nav-toggle], #nav-toggle")) closeNav();
    }
  });

  // ---- keyboard --------------------------------------------------------------------
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.key === "Enter" && !event.shiftKey && !event.altKey && !event.isComposing && event.keyCode !== 229) {
      var area = closest(target, "[data-composer] textarea");
      if (area) {
        event.preventDefault();
        var form = area.form;
        if (!area.value.trim() || form.classList.contains("htmx-request")) return;
        form.requestSubmit();
        return;
      }
    }
    if (event.key === "Escape") {
      if (closeNav()) return;
      var details = closest(target, "details[open]");
      if (details) {  // leave a Rename/Settings/Edit form the way it was opened
        details.open = false;
        details.querySelector("summary").focus();
        return;
      }
      var stops = Array.prototype.filter.call(document.querySelectorAll("[data-stop]"), isVisible);
      if (stops.length) {
        event.preventDefault();
        stops[stops.length - 1].click();
      }
      return;
    }
    if ((event.ctrlKey || event.metaKey) && !event.altKey && (event.key === "k" || event.key === "K")) {
      var fields = Array.prototype.slice.call(document.querySelectorAll("input[type=search]"));
      var search = fields.filter(isVisible)[0] || fields[0];
      if (!search) return;
      event.preventDefault();
      var toggle = navToggle();
      if (!isVisible(search) && toggle && search.closest(".sidebar")) toggle.checked = true;  // phone menu
      search.focus();
      search.select();
    }
  });

  // Saving the account's theme in Settings ends this browser's override.
  document.addEventListener("submit", function (event) {
    if (!closest(event.target, ".theme-form")) return;
    try { localStorage.removeItem(THEME_KEY); } catch (e) { /* nothing stored */ }
  });

  // ---- htmx events -----------------------------------------------------------------
  // A tool popover (Rename, Settings, Folder...) closes once its form did its job
  // elsewhere; it stays open when the answer replaces something inside it (Share).
  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail.elt;
    var tool = closest(elt, "details.tool");
    if (tool) elt._closeTool = !tool.contains(event.detail.target) || elt.getAttribute("hx-swap") === "none";
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var elt = event.detail.elt;
    if (!event.detail.successful || !elt || elt.nodeType !== 1) return;
    var composer = closest(elt, "[data-composer]");
    if (composer) {
      var area = composer.querySelector("textarea");
      if (area && document.contains(area)) {
        area.value = "";
        area.focus();
      }
      scrollToBottom();
    }
    var tool = closest(elt, "details.tool");
    if (tool && elt._closeTool) tool.open = false;
    if (closest(elt, ".thread-settings")) showFlash("Settings saved.", false);
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail.target;
    if (target && target.id === "flash" && target.childElementCount) flashShown();
    else followStream();
  });

  document.addEventListener("htmx:sseMessage", followStream);

  // A `delta` event edits the open part of a streamed answer (chatapp/tail_delta.py):
  // "+<depth> <html>" appends inside the element reached by walking `depth` times to the last
  // child (0: after the last block); "= <html>" replaces the last block. The HTML is a piece of
  // the server's sanitised render, balanced, inside the answer's hx-disable wrapper.
  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    var holder = event.target;
    if (!holder.dataset || !holder.dataset.tail || !event.detail || event.detail.type !== "delta") return;
    event.preventDefault();  // nothing for htmx to swap
    var data = event.detail.data, space = data.indexOf(" "), html = data.slice(space + 1);
    var tail = document.getElementById(holder.dataset.tail);
    var element = tail && tail.firstElementChild;  // the wrapper
    if (data.charAt(0) === "=") {
      var last = element && element.lastElementChild;
      if (last) {
        while (last.nextSibling) last.parentNode.removeChild(last.nextSibling);  // whitespace
        last.outerHTML = html;
      }
    } else {
      var depth = parseInt(data.slice(1, space), 10);
      for (var i = 0; element && i < depth; i++) element = element.lastElementChild;
      // Missing only if this page missed an event; the next whole tail puts it right.
      if (element) element.insertAdjacentHTML("beforeend", html);
    }
    followStream();
  });
})();
