// facemon edge sign-in: password, then poll the face check until it passes (go to the page) or fails (say why).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const CSRF = document.querySelector('meta[name="csrf-token"]').content;
  const POLL_MS = 300;

  function say(text, cls) {
    const answer = $("signin-answer");
    answer.className = cls || "";
    answer.textContent = text;
  }

  const PROGRESS_HINTS = {
    no_face: "look at the camera",
    several_faces: "only you in view, please",
    not_account_holder: "not matched yet; keep looking at the camera",
    no_blink: "blink once",
  };

  async function poll() {
    let body;
    try {
      const response = await fetch("/api/signin/progress", { cache: "no-store" });
      body = await response.json();
    } catch (err) {
      say("The edge did not answer (" + err + ").", "error");
      $("signin").disabled = false;
      return;
    }
    const p = body.progress || {};
    $("check-bar").value = p.agreeing || 0;
    $("check-count").textContent = String(p.agreeing || 0);
    $("check-blink").textContent = p.blinked ? "seen" : "not yet";
    if (body.state === "signed_in") {
      say("Face check passed: signed in.", "ok");
      window.location.assign("/video_feed_page");
      return;
    }
    if (body.state === "failed" || body.ok === false) {
      say("Refused: " + (p.message || body.reason || "the face check failed") + ".", "error");
      $("signin").disabled = false;
      return;
    }
    // While the check runs, the last frame's reason is a hint of what to do, not a refusal.
    const hint = PROGRESS_HINTS[p.reason] || "look at the camera and blink once";
    say("Checking your face (" + (p.agreeing || 0) + (p.needed ? " of " + p.needed : "") + " matching frames, blink " +
        (p.blinked ? "seen" : "not yet seen") + "): " + hint + ".", "");
    setTimeout(poll, POLL_MS);
  }

  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("signin").disabled = true;
    say("Checking the password…", "");
    try {
      const response = await fetch("/api/signin", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
        body: JSON.stringify({ username: $("username").value, password: $("password").value }),
      });
      const body = await response.json();
      $("password").value = "";
      if (body.state === "verifying") {
        $("check").hidden = false;
        say("Password accepted. Look at the camera and blink.", "");
        setTimeout(poll, POLL_MS);
      } else if (body.state === "signed_in") {
        window.location.assign("/video_feed_page");
      } else {
        say("Refused: " + (body.message || body.reason || "unknown reason") + ".", "error");
        $("signin").disabled = false;
      }
    } catch (err) {
      say("The edge did not answer (" + err + ").", "error");
      $("signin").disabled = false;
    }
  });
})();
