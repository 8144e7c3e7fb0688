// The admin page: progress, agreement between labellers, export links.

import { el, request, showStatus, whoami } from "./common.js";

const $ = (id) => document.getElementById(id);

const percent = (rate) => (rate === null ? "–" : `${(100 * rate).toFixed(1)}%`);
const when = (seconds) => (seconds === null ? "–" : new Date(seconds * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC");

function row(cells) {
  const tr = el("tr");
  tr.append(...cells.map((cell) => el("td", String(cell))));
  return tr;
}

function stat(label, value, note) {
  const box = el("div", null, "stat card");
  box.append(el("div", String(value), "value"), el("div", label, "label"));
  if (note) box.append(el("div", note, "note"));
  return box;
}

function showProgress(progress) {
  $("stats").replaceChildren(
    stat("tasks", progress.tasks),
    stat("complete", progress.complete, `${progress.judgements_per_task} judgement(s) per task`),
    stat("judgements", progress.judgements),
    stat("skips", progress.skips),
    stat("in progress", progress.in_progress, "held by a labeller now"),
  );
  $("labelers").tBodies[0].replaceChildren(
    ...progress.labelers.map((l) =>
      row([l.name, l.admin ? "admin" : "labeller", l.judged, l.skipped, l.ties, l.both_bad, when(l.last_judged_at)]),
    ),
  );
}

function showAgreement(agreement) {
  $("agreement-summary").textContent =
    agreement.tasks === 0
      ? "No task has been judged by two labellers yet."
      : `${percent(agreement.rate)} agreement: ${agreement.agreed} of ${agreement.compared} response pairs, on ${agreement.tasks} task(s) judged by two or more labellers.`;
  $("agreement").tBodies[0].replaceChildren(
    ...agreement.by_pair.map((p) => row([p.labelers.join(" · "), p.tasks, p.compared, p.agreed, percent(p.rate)])),
  );
}

const figure = (summary, key, format) => (summary && typeof summary[key] === "number" ? format(summary[key]) : "–");

function showLoop(loop) {
  $("loop-card").hidden = loop.rounds.length === 0;
  const waiting = loop.rounds.filter((r) => r.waiting > 0 && r.summary === null);
  $("loop-waiting").textContent = waiting.length
    ? waiting.map((r) => `Round ${r.round} of ${r.run} waits for ${r.waiting} more judgement(s).`).join(" ")
    : "No round is waiting for judgements.";
  $("loop-rounds").tBodies[0].replaceChildren(
    ...loop.rounds.map((r) =>
      row([
        r.run,
        r.round,
        `${r.judged} of ${r.needed}`,
        r.waiting,
        figure(r.summary, "reward_model_accuracy", percent),
        figure(r.summary, "gold_score", (value) => value.toFixed(3)),
      ]),
    ),
  );
}

function updateExportLinks() {
  const query = new URLSearchParams();
  if ($("keep-ties").checked) query.set("keep_ties", "true");
  if ($("keep-both-bad").checked) query.set("keep_both_bad", "true");
  const suffix = query.size ? `?${query}` : "";
  $("export-comparisons").href = `/api/admin/export/comparisons.jsonl${suffix}`;
}

async function refresh() {
  const [me, progress, agreement, loop] = await Promise.all([
    whoami(),
    request("GET", "/api/admin/progress"),
    request("GET", "/api/admin/agreement"),
    request("GET", "/api/admin/loop"),
  ]);
  $("who").textContent = me.name;
  showProgress(progress);
  showAgreement(agreement);
  showLoop(loop);
  showStatus(`Updated ${new Date().toLocaleTimeString()}.`);
}

$("refresh").addEventListener("click", () => refresh().catch((error) => showStatus(error.message, true)));
$("keep-ties").addEventListener("change", updateExportLinks);
$("keep-both-bad").addEventListener("change", updateExportLinks);
refresh().catch((error) => showStatus(error.message, true));
