// The status page's only script: refresh in place, local times, and the
// write routes' buttons once a token is entered. Without it the page still
// reads (and a <noscript> refresh reloads it).
(() => {
  "use strict";
  const base = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
  const main = document.getElementById("main");
  const form = document.getElementById("token");
  const message = document.getElementById("message");
  const key = "tower-lb-admin-token";
  let token = sessionStorage.getItem(key) || "";
  let last = "";

  const authed = () => document.body.classList.toggle("authed", token !== "");
  const say = (text, ok) => {
    if (!message) return;
    message.textContent = text;
    message.className = ok ? "ok" : "down";
  };
  const localTimes = () => {
    for (const t of document.querySelectorAll("time[data-ms]")) {
      t.textContent = new Date(Number(t.dataset.ms)).toLocaleTimeString();
    }
  };
  for (const a of document.querySelectorAll("a[data-rel]")) a.href = base + a.dataset.rel;

  // Refresh: fetch the main part and swap it in one assignment, so the page
  // never blanks (no reload, no flicker); skipped while the tab is hidden.
  const refresh = async () => {
    if (document.hidden) return;
    try {
      const response = await fetch(base + "?part=main", { cache: "no-store" });
      if (!response.ok) return;
      const html = await response.text();
      if (html !== last) {
        last = html;
        main.innerHTML = html;
        localTimes();
      }
    } catch (_) {
      // The proxy restarting: the next refresh tries again.
    }
  };
  setInterval(refresh, 2000);
  localTimes();

  if (form) {
    authed();
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      token = form.elements.secret.value.trim();
      form.elements.secret.value = "";
      if (token) sessionStorage.setItem(key, token);
      authed();
      say(token ? "token kept for this tab" : "", true);
    });
    form.querySelector("button.leave").addEventListener("click", () => {
      token = "";
      sessionStorage.removeItem(key);
      authed();
      say("token forgotten", true);
    });
  }

  main.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button || !token) return;
    const backend = button.closest("[data-backend]").dataset.backend;
    const action = button.dataset.action;
    let query = "backend=" + encodeURIComponent(backend);
    if (action === "weight") {
      const value = prompt("New weight for " + backend, button.dataset.weight || "1");
      if (value === null) return;
      query += "&value=" + encodeURIComponent(value.trim());
    }
    if (action === "eject") {
      const value = prompt("Eject " + backend + " for how long? (e.g. 30s, 5m, 1h)", "5m");
      if (value === null) return;
      query += "&for=" + encodeURIComponent(value.trim());
    }
    let response;
    try {
      response = await fetch(base + "backends/" + action + "?" + query, {
        method: "POST",
        headers: { Authorization: "Bearer " + token },
      });
    } catch (error) {
      say(action + ": " + error, false);
      return;
    }
    let answer = {};
    try { answer = await response.json(); } catch (_) { /* not JSON */ }
    if (response.ok) {
      say(action + " " + backend + ": " + (answer.changed ? "done" : "nothing to change"), true);
    } else {
      say(action + " refused (" + response.status + "): " + (answer.error || response.statusText), false);
      if (response.status === 401) {
        token = "";
        sessionStorage.removeItem(key);
        authed();
      }
    }
    last = "";
    refresh();
  });
})();
