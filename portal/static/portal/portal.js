"use strict";
// Live updates for the portal. One websocket to /ws/events/, authenticated by the session
// cookie (the server checks the Origin header). When an event concerns what the page shows
// (its body's data-watch-tasks / data-watch-collaborations), the page is fetched again and
// its [data-live-region] elements are swapped in: the server stays the only renderer, and
// whatever a lost event would have said, the next fetch shows anyway.
(() => {
  const ids = (text) => new Set((text || "").split(/\s+/).filter(Boolean).map(Number));
  const tasks = ids(document.body.dataset.watchTasks);
  const collaborations = ids(document.body.dataset.watchCollaborations);
  const indicator = document.getElementById("live-status");
  const REFRESH_DELAY_MS = 150;
  const MAX_RECONNECT_MS = 15000;

  function show(state, text) {
    if (!indicator) return;
    indicator.hidden = false;
    indicator.dataset.state = state;
    indicator.textContent = text;
  }

  function concerns(event) {
    switch (event.type) {
      case "task.updated":
      case "task.completed":
        return tasks.has(event.task.id) || collaborations.has(event.task.collaboration);
      case "run.updated":
        return tasks.has(event.run.task);
      case "run.log":
        return tasks.has(event.task);
      case "node.online":
      case "node.offline":
        return collaborations.has(event.node.collaboration);
      default:
        return false;
    }
  }

  let timer = null;
  let running = false;
  let again = false;

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, REFRESH_DELAY_MS);
  }

  async function refresh() {
    if (running) { again = true; return; }
    running = true;
    try {
      const response = await fetch(location.href, {credentials: "same-origin", headers: {"X-Requested-With": "fetch"}});
      if (response.redirected || !response.ok) {
        show("off", response.redirected ? "logged out" : "stale: reload");
        return;
      }
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const region of document.querySelectorAll("[data-live-region]")) {
        const replacement = fresh.getElementById(region.id);
        if (!replacement) continue;
        // Keep what the reader opened or closed: a refresh must not fold their log away.
        const folds = new Map([...region.querySelectorAll("details[id]")].map((d) => [d.id, d.open]));
        region.replaceWith(replacement);
        for (const [id, open] of folds) {
          const details = document.getElementById(id);
          if (details) details.open = open;
        }
      }
    } catch (error) {
      show("reconnecting", "reconnecting");
    } finally {
      running = false;
      if (again) { again = false; schedule(); }
    }
  }

  let backoff = 1000;
  let connectedBefore = false;

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ws/events/");
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (event.type === "hello") {
        show("live", "live");
        backoff = 1000;
        // Events sent while the socket was down are lost: catch up once.
        if (connectedBefore) schedule();
        connectedBefore = true;
      } else if (concerns(event)) {
        schedule();
      }
    };
    socket.onclose = (closed) => {
      if (closed.code === 4401 || closed.code === 4403) {
        show("off", "log in again for live updates");
        return;
      }
      show("reconnecting", "reconnecting");
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, MAX_RECONNECT_MS);
    };
  }

  // Forms that ask before they act (the kill button).
  document.addEventListener("submit", (event) => {
    const question = event.target.dataset && event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });

  // The new-task form offers only the organisations of the chosen collaboration.
  const collaboration = document.getElementById("id_collaboration");
  if (collaboration) {
    const filter = () => {
      for (const box of document.querySelectorAll("input[data-collaborations]")) {
        const member = box.dataset.collaborations.split(" ").includes(collaboration.value);
        const item = box.closest("label").parentElement;
        item.hidden = Boolean(collaboration.value) && !member;
        if (item.hidden) box.checked = false;
      }
    };
    collaboration.addEventListener("change", filter);
    filter();
  }

  if (tasks.size || collaborations.size) connect();
})();
