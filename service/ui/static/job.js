// A running job's page follows its stages over Server-Sent Events (the job's event stream
// under /review, authorised by the session cookie): each row of #progress turns running,
// then computed or reused (a cache hit in the lineage). When the job ends the stream is
// closed and a link to the finished page appears; the page is not reloaded under the
// reader's feet.
(function () {
  "use strict";

  var FINAL = ["job_finished", "job_failed", "job_cancelled"];
  var LABELS = { reused: "reused (cache hit)" };

  function start() {
    var table = document.getElementById("progress");
    if (!table || !window.EventSource) return;
    var status = document.getElementById("progress-status");
    var source = new EventSource(table.dataset.events);

    function mark(stage, state) {
      var rows = table.querySelectorAll("tr[data-stage]");
      for (var i = 0; i < rows.length; i++) {
        if (rows[i].dataset.stage === stage) {
          rows[i].dataset.state = state;
          rows[i].querySelector(".state").textContent = LABELS[state] || state;
        }
      }
    }

    function data(event) {
      try {
        return JSON.parse(event.data).data || {};
      } catch (e) {
        return {};
      }
    }

    source.addEventListener("stage_started", function (e) { mark(data(e).stage, "running"); });
    source.addEventListener("stage_retrying", function (e) { mark(data(e).stage, "retrying"); });
    source.addEventListener("stage_failed", function (e) { mark(data(e).stage, "failed"); });
    source.addEventListener("stage_finished", function (e) {
      var d = data(e);
      mark(d.stage, d.cache_hit ? "reused" : "computed");
    });
    FINAL.forEach(function (type) {
      source.addEventListener(type, function (e) {
        source.close();
        var d = data(e);
        table.dataset.final = type;
        status.textContent = type === "job_finished"
          ? "The job finished: " + String(d.verdict || "done").replace("_", " ") + "."
          : "The job ended: " + type.replace("job_", "") + ".";
        document.getElementById("progress-done").hidden = false;
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
