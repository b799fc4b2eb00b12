// Recalculate: POST the calculation, poll its run until it ends, then reload
// the page with ?done=<run id> so the server shows the new figures and how
// the run ended. Also: the segment filter submits on change.
"use strict";

(function () {
  const POLL_MS = 1000;
  const TIMEOUT_MS = 15 * 60 * 1000;

  function say(text) {
    const el = document.getElementById("recalc-status");
    if (el) el.textContent = text;
  }

  function reloadWith(runId) {
    const url = new URL(window.location.href);
    url.searchParams.set("done", String(runId));
    url.searchParams.delete("run"); // show the new run's scores, not the pinned list's
    url.hash = "";
    window.location.assign(url.toString());
  }

  async function readJson(response) {
    try {
      return await response.json();
    } catch (err) {
      return { detail: "HTTP " + response.status };
    }
  }

  async function poll(statusUrl, started) {
    const response = await fetch(statusUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    const run = await readJson(response);
    if (!response.ok) throw new Error(run.detail || "HTTP " + response.status);
    if (run.status === "succeeded" || run.status === "failed") {
      reloadWith(run.id);
      return;
    }
    if (Date.now() - started > TIMEOUT_MS) throw new Error("run " + run.id + " is still " + run.status);
    const seconds = Math.round((Date.now() - started) / 1000);
    say("Run " + run.id + " " + run.status + "… " + seconds + " s");
    window.setTimeout(() => poll(statusUrl, started).catch(fail), POLL_MS);
  }

  let button = null;

  function fail(err) {
    say("Could not recalculate: " + err.message);
    if (button) button.disabled = false;
  }

  async function recalculate() {
    button.disabled = true;
    say("Starting…");
    const response = await fetch(button.dataset.url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      credentials: "same-origin",
      body: "{}",
    });
    const run = await readJson(response);
    if (!response.ok) throw new Error(run.detail || "HTTP " + response.status);
    say((run.created ? "Run " : "Already running: run ") + run.id + " " + run.status + "…");
    await poll(run.status_url, Date.now());
  }

  document.addEventListener("DOMContentLoaded", () => {
    button = document.getElementById("recalculate");
    if (button) button.addEventListener("click", () => recalculate().catch(fail));
    const select = document.getElementById("segment");
    if (select && select.form) select.addEventListener("change", () => select.form.submit());
  });
})();
