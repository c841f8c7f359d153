// facemon edge page: polls /api/status, keeps the MJPEG <img> alive, and posts the Capture form.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const STATUS_EVERY_MS = 500;  // the face list follows the picture within half a second
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const CSRF = csrfMeta ? csrfMeta.content : "";
  const FEED_RETRY_MS = 2000;

  function text(el, value) { el.textContent = value; }

  // What the recognizer's liveness word means to a person reading the list.
  const LIVENESS = {
    unknown: "liveness: checking",
    off: "liveness off",
    live: "live (blinked)",
    no_blink: "no blink: possible photo",
    eyes_closed: "eyes closed",
  };

  function faceLabel(face) {
    if (face.state === "known" && face.name) return face.name;
    if (face.state === "unknown") return "unknown person";
    if (face.state === "unsure") {  // someone enrolled is near, nobody accepted: never a stranger
      return face.candidate ? "not sure (looks like " + face.candidate + ")" : "not sure";
    }
    return "identifying…";
  }

  function timeOfDay(epochSeconds) {
    return new Date(epochSeconds * 1000).toLocaleTimeString();
  }

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
      const extra = [];
      if (typeof face.distance === "number") extra.push("distance " + face.distance.toFixed(2));
      if (face.liveness) extra.push(LIVENESS[face.liveness] || "liveness: " + face.liveness);
      li.textContent = faceLabel(face) + (extra.length ? " (" + extra.join(", ") + ")" : "");
      list.appendChild(li);
    }
  }

  function renderStatus(s) {
    const badge = $("link-badge");
    badge.className = "badge " + s.state;
    if (s.online) {
      text(badge, "recognizer online");
      const alerts = s.alerts === "disk_full" ? " Alerts: the recognizer's disk is full; alerts are held in memory." :
        s.alerts === "degraded" ? " Alerts: the recognizer cannot store alerts on disk; they are held in memory." : "";
      text($("link-text"), "Online: " + s.recognizer + (s.server ? " (" + s.server + ")" : "") + "." + alerts);
      $("link-text").className = alerts ? "warn" : "";
    } else {
      text(badge, s.state === "connecting" ? "recognizer connecting" : "recognizer offline");
      text($("link-text"), "Recognizer offline: " + (s.reason || "unknown reason") + ". Reconnecting by itself.");
      $("link-text").className = "";
    }
    const camera = s.camera || {};
    const lost = camera.state === "lost";
    const cameraBadge = $("camera-badge");
    cameraBadge.className = "badge " + (camera.state || "unknown");
    text(cameraBadge, lost ? "camera lost" : camera.state === "ok" ? "camera ok" : "camera starting");
    if (lost) {
      text($("feed-note"), "Camera lost since " + timeOfDay(camera.since) + ": " + (camera.error || "no frames") +
        ". The picture and face list are not live.");
    } else {
      // raw while online: the recognizer is busy for a moment (e.g. enrolling a Capture), not offline
      text($("feed-note"), s.feed !== "raw" ? "" : s.online
        ? "The recognizer is busy and has not answered for a moment: showing the raw camera feed."
        : "Recognizer offline: showing the raw camera feed.");
    }
    const live = s.online && !lost;
    text($("fps"), live ? String(s.fps) : "–");
    text($("latency"), live && s.latency_ms !== null ? String(Math.round(s.latency_ms)) : "–");
    text($("in-flight"), s.online ? s.in_flight + " / " + s.window : "–");
    text($("login"), s.login || "–");
    renderFaces(live ? s.shown_faces : []);
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

  function clearCaptureAnswer() {
    const answer = $("capture-answer");
    answer.className = "";
    text(answer, "");
    $("capture-crop").hidden = true;
    $("confirm-lookalike").hidden = true;
  }

  function showCrop(body, caption) {
    const figure = $("capture-crop");
    if (!body.crop_jpeg) { figure.hidden = true; return; }
    $("capture-crop-img").src = "data:image/jpeg;base64," + body.crop_jpeg;
    text($("capture-crop-text"), caption);
    figure.hidden = false;
  }

  const nameBox = $("name");
  if (nameBox) nameBox.addEventListener("input", clearCaptureAnswer);  // an old answer must not linger

  async function capture(name, confirmLookalike) {
    const answer = $("capture-answer");
    const button = $("capture");
    button.disabled = true;
    clearCaptureAnswer();
    text(answer, "Capturing…");
    try {
      const response = await fetch("/api/capture", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
        body: JSON.stringify({ name: name, confirm_lookalike: confirmLookalike || "" }),
      });
      const body = await response.json();
      if (body.ok) {
        answer.className = "ok";
        const n = typeof body.count === "number" && body.count > 0 ? " (" + body.count + " image(s) on file)" : "";
        text(answer, "Enrolled " + (body.name || name) + n + ".");
        showCrop(body, "Enrolled as " + (body.name || name) + ": check this is the right face.");
      } else if (body.code === "looks_like" && body.lookalike) {
        // Refused: this face is already someone else's. Only a deliberate second click enrols it anyway.
        const other = body.lookalike.name;
        answer.className = "error";
        text(answer, "Not enrolled: looks like " + other + " (" + body.lookalike.distance.toFixed(2) + ").");
        showCrop(body, "This face is within the recognizer's accept distance of " + other + ".");
        const confirm = $("confirm-lookalike");
        text(confirm, "Enrol as " + name + " anyway: I checked, this is not " + other);
        confirm.onclick = () => capture(name, other);
        confirm.hidden = false;
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
  }

  const captureForm = $("capture-form");
  if (captureForm) captureForm.addEventListener("submit", (event) => {
    event.preventDefault();
    capture($("name").value, "");
  });

  pollStatus();
})();
