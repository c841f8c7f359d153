// facemon edge page: polls /api/status, keeps the MJPEG <img> alive, and posts the Capture form.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const STATUS_EVERY_MS = 1000;
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const CSRF = csrfMeta ? csrfMeta.content : "";
  const FEED_RETRY_MS = 2000;

  function text(el, value) { el.textContent = value; }

  function renderFaces(faces) {
    const list = $("faces");
    list.replaceChildren();
    if (!faces || faces.length === 0) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "none";
      list.appendChild(li);
      return;
    }
    for (const face of faces) {
      const li = document.createElement("li");
      const who = face.name ? face.name : "unknown";
      const extra = [];
      if (typeof face.distance === "number") extra.push("distance " + face.distance.toFixed(2));
      if (face.liveness) extra.push(String(face.liveness));
      li.textContent = who + (extra.length ? " (" + extra.join(", ") + ")" : "");
      list.appendChild(li);
    }
  }

  function renderStatus(s) {
    const badge = $("link-badge");
    badge.className = "badge " + s.state;
    if (s.online) {
      text(badge, "recognizer online");
      text($("link-text"), "Online: " + s.recognizer + (s.server ? " (" + s.server + ")" : ""));
    } else {
      text(badge, s.state === "connecting" ? "recognizer connecting" : "recognizer offline");
      text($("link-text"), "Recognizer offline: " + (s.reason || "unknown reason") + ". Reconnecting by itself.");
    }
    text($("feed-note"), s.feed === "raw" ? "Recognizer offline: showing the raw camera feed." : "");
    text($("fps"), s.online ? String(s.fps) : "–");
    text($("latency"), s.online && s.latency_ms !== null ? String(Math.round(s.latency_ms)) : "–");
    text($("in-flight"), s.online ? s.in_flight + " / " + s.window : "–");
    text($("login"), s.login || "–");
    renderFaces(s.online ? s.faces : []);
  }

  async function pollStatus() {
    try {
      const response = await fetch("/api/status", { cache: "no-store" });
      if (response.status === 401 || response.status === 403) {  // signed out (here or elsewhere)
        window.location.assign("/signin");
        return;
      }
      renderStatus(await response.json());
    } catch (err) {
      const badge = $("link-badge");
      badge.className = "badge offline";
      text(badge, "edge unreachable");
      text($("link-text"), "The edge itself does not answer: " + err);
    } finally {
      setTimeout(pollStatus, STATUS_EVERY_MS);
    }
  }

  // An MJPEG <img> stops for good when its connection breaks (edge restart): reopen it.
  const feed = $("feed");
  feed.addEventListener("error", () => {
    setTimeout(() => { feed.src = "/video_feed?t=" + Date.now(); }, FEED_RETRY_MS);
  });

  const signout = $("signout");
  if (signout) {
    signout.addEventListener("click", async () => {
      await fetch("/api/signout", { method: "POST", headers: { "X-CSRF-Token": CSRF } });
      window.location.assign("/signin");
    });
  }

  const captureForm = $("capture-form");
  if (captureForm) captureForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const answer = $("capture-answer");
    const button = $("capture");
    const name = $("name").value;
    button.disabled = true;
    answer.className = "";
    text(answer, "Capturing…");
    try {
      const response = await fetch("/api/capture", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
        body: JSON.stringify({ name: name }),
      });
      const body = await response.json();
      if (body.ok) {
        answer.className = "ok";
        const n = typeof body.count === "number" && body.count > 0 ? " (" + body.count + " image(s) on file)" : "";
        text(answer, "Enrolled " + (body.name || name) + n + ".");
      } else {
        answer.className = "error";
        text(answer, "Not enrolled: " + (body.reason || "unknown reason") + ".");
      }
    } catch (err) {
      answer.className = "error";
      text(answer, "Not enrolled: the edge did not answer (" + err + ").");
    } finally {
      button.disabled = false;
    }
  });

  pollStatus();
})();
