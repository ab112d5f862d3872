// A running job's page follows its stages over Server-Sent Events (the job's event stream
// under /review, authorised by the session cookie): each row of #progress turns running,
// then computed or reused (a cache hit in the lineage). When the job ends the stream is
// closed and a link to the finished page appears; the page is not reloaded under the
// reader's feet. The spin set turns under the pointer.
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

  // The spin set: dragging across the image (or the arrow keys) steps through its frames,
  // one frame per 1/frames of the image's width; all frames are fetched on the first touch.
  function spin(img) {
    var frames = parseInt(img.dataset.frames, 10);
    var base = img.dataset.spin;
    var startX = null;
    var startFrame = 0;

    function show(frame) {
      frame = ((frame % frames) + frames) % frames;
      img.dataset.frame = String(frame);
      img.src = base + frame;
      img.alt = img.alt.replace(/frame \d+/, "frame " + (frame + 1));
    }

    function preload() {
      for (var i = 0; i < frames; i++) new Image().src = base + i;
      preload = function () {};
    }

    img.addEventListener("pointerdown", function (e) {
      preload();
      startX = e.clientX;
      startFrame = parseInt(img.dataset.frame, 10);
      img.setPointerCapture(e.pointerId);
      e.preventDefault();
    });
    img.addEventListener("pointermove", function (e) {
      if (startX === null) return;
      var step = img.clientWidth / frames;
      show(startFrame + Math.round((startX - e.clientX) / step));
    });
    ["pointerup", "pointercancel"].forEach(function (type) {
      img.addEventListener(type, function () { startX = null; });
    });
    img.addEventListener("keydown", function (e) {
      var by = { ArrowLeft: 1, ArrowRight: -1 }[e.key];
      if (!by) return;
      preload();
      e.preventDefault();
      show(parseInt(img.dataset.frame, 10) + by);
    });
  }

  function ready() {
    start();
    Array.prototype.forEach.call(document.querySelectorAll("img.spin"), spin);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", ready);
  } else {
    ready();
  }
})();
