// The console's only script, served from the gateway itself (the Content-Security-Policy
// allows no other). Everything works without it except the live list and the local times.
"use strict";

// Timestamps in the viewer's own time zone.
function localTimes(root) {
  for (const time of root.querySelectorAll("time[datetime]")) {
    const at = new Date(time.dateTime);
    if (!Number.isNaN(at.getTime())) {
      time.textContent = at.toLocaleString();
      time.title = time.dateTime;
    }
  }
}

// Every destructive button asks first.
document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// The incident list follows the live feed: on every incident event it re-reads this page
// and swaps the list in. After a dropped connection it resumes from the last seq it saw.
function followIncidents(list) {
  const status = document.getElementById("live-status");
  let since = list.dataset.since;
  let retry = 500;
  let refreshing = null;

  function say(text) {
    if (status) status.textContent = text;
  }

  async function refresh() {
    const answer = await fetch(window.location.href, { credentials: "same-origin" });
    if (!answer.ok) return;
    const page = new DOMParser().parseFromString(await answer.text(), "text/html");
    const fresh = page.querySelector("[data-live-incidents]");
    if (fresh) {
      list.replaceChildren(...fresh.childNodes);
      localTimes(list);
    }
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const feed = new WebSocket(
      `${scheme}//${window.location.host}/console/feed?kinds=incident&since=${encodeURIComponent(since)}`,
    );
    feed.onopen = () => {
      retry = 500;
      say("Live updates: on");
    };
    feed.onmessage = (message) => {
      const frame = JSON.parse(message.data);
      if (frame.type === "event") {
        since = String(frame.seq);
        clearTimeout(refreshing);
        refreshing = setTimeout(refresh, 100);
      } else if (frame.resume_from !== undefined) {
        since = String(frame.resume_from);
      }
    };
    feed.onclose = () => {
      say("Live updates: reconnecting…");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
  }
  connect();
}

localTimes(document);
const liveList = document.querySelector("[data-live-incidents]");
if (liveList) followIncidents(liveList);
