// Live page: new and changed alerts arrive over Server-Sent Events; each one is fetched as a
// server-rendered row (so filters and markup live in one place, on the server). No libraries.
(function () {
  "use strict";

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) { el.textContent = d.toLocaleString(); el.title = el.getAttribute("datetime"); }
    });
  }
  localTimes(document);

  var body = document.getElementById("alerts-body");
  if (!body) { return; }
  var live = document.getElementById("live-state");
  var total = document.getElementById("alert-total");
  var query = new URLSearchParams(body.dataset.query || "");
  var onFirstPage = (body.dataset.page || "1") === "1";
  query.delete("page");
  query.set("next", window.location.pathname + window.location.search);

  function setLive(on, text) {
    live.textContent = text;
    live.className = "live " + (on ? "on" : "off");
  }

  function showAlert(alertId, status) {
    var url = body.dataset.fragment.replace("ALERT_ID", encodeURIComponent(alertId)) + "?" + query.toString();
    fetch(url, { credentials: "same-origin" }).then(function (resp) {
      var existing = document.getElementById("alert-" + alertId);
      if (resp.status === 204) {            // no longer matches the filters
        if (existing) { existing.remove(); }
        return null;
      }
      if (!resp.ok) { throw new Error("HTTP " + resp.status); }
      return resp.text().then(function (html) {
        var tpl = document.createElement("template");
        tpl.innerHTML = html.trim();
        var row = tpl.content.firstElementChild;
        localTimes(row);
        if (existing) {
          existing.replaceWith(row);
        } else if (onFirstPage) {
          var empty = body.querySelector("tr.empty");
          if (empty) { empty.remove(); }
          body.insertBefore(row, body.firstElementChild);
          row.classList.add("fresh");
          total.textContent = String(Number(total.textContent) + 1);
        }
      });
    }).catch(function (err) { console.warn("could not load alert", alertId, err); });
  }

  var stations = document.getElementById("stations-body");
  function refreshStations() {
    fetch(stations.dataset.src, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) { stations.innerHTML = html; localTimes(stations); } })
      .catch(function () {});
  }
  // "Online" also changes with the clock, not only with reports, so poll gently as well.
  setInterval(refreshStations, 10000);

  if (!window.EventSource) { setLive(false, "live updates unavailable"); return; }
  // After a reconnect, fetch what arrived while the stream was down (newest page only).
  function catchUp() {
    if (!onFirstPage) { return; }
    var q = new URLSearchParams(query); q.delete("next"); q.set("per_page", "50");
    fetch("/api/alerts?" + q.toString(), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : { alerts: [] }; })
      .then(function (data) {
        data.alerts.slice().reverse().forEach(function (a) {
          if (!document.getElementById("alert-" + a.alert_id)) { showAlert(a.alert_id, "created"); }
        });
      }).catch(function () {});
  }
  var wasDown = false;
  var busyPoll = null;
  var source = new EventSource(body.dataset.events);
  source.addEventListener("open", function () {
    if (busyPoll !== null) { clearInterval(busyPoll); busyPoll = null; }
    setLive(true, "live");
    if (wasDown) { wasDown = false; catchUp(); refreshStations(); }
  });
  // Turned away (the server holds a few live pages at most): poll instead until a later retry gets a place.
  source.addEventListener("busy", function () {
    setLive(false, "busy: refreshing every 15 s");
    if (busyPoll === null) { busyPoll = setInterval(function () { catchUp(); refreshStations(); }, 15000); }
  });
  source.addEventListener("error", function () {
    wasDown = true;
    if (busyPoll === null) { setLive(false, "reconnecting…"); }
  });
  source.addEventListener("alert", function (ev) {
    var msg = JSON.parse(ev.data);
    showAlert(msg.alert_id, msg.status);
  });
  var pending = null;
  source.addEventListener("station", function () {
    if (pending === null) { pending = setTimeout(function () { pending = null; refreshStations(); }, 1000); }
  });
})();
