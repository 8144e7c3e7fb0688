// The labelling page: show a task, take an answer (mouse or keys), load the next without a reload.

import { ApiError, el, request, showStatus, signOut, whoami } from "./common.js";

const $ = (id) => document.getElementById(id);
const LETTERS = "ABCDEFGHI";
const PAIR_KEYS = {
  1: "A", a: "A", ArrowLeft: "A",
  2: "B", b: "B", ArrowRight: "B",
  3: "tie", t: "tie",
  4: "both_bad", x: "both_bad",
  s: "skip",
};
const PAIR_HELP = "Keys: 1, A or ← A is better · 2, B or → B is better · 3 or T tie · 4 or X both bad · S skip · C comment";
const RANK_HELP = "Keys: 1–{n} rank best to worst · Enter submit · Backspace undo · Esc start over · X all bad · S skip · C comment";

// ranking: display positions, best first; the first `ranked` of them are the labeller's choice so far.
// media: response text -> the URL of its animation (a Gym segment), for the responses that have one.
const state = { task: null, media: {}, ranking: [], ranked: 0, busy: false, dragged: null };

async function showProgress() {
  const me = await whoami();
  $("who").textContent = me.name;
  $("admin-link").hidden = !me.admin;
  $("progress").textContent = `${me.judged} judged · ${me.remaining} left`;
}

async function loadNext() {
  const task = await request("GET", "/api/tasks/next");
  const media = task === null ? {} : (await request("GET", `/api/loop/tasks/${task.task_id}/media`)).media;
  state.task = task;
  state.media = media;
  if (task === null) {
    $("task").hidden = true;
    $("done").hidden = false;
    return;
  }
  $("done").hidden = true;
  render(task);
  $("task").hidden = false;
}

function render(task) {
  const pair = task.responses.length === 2;
  $("task").dataset.taskId = String(task.task_id);
  $("prompt").textContent = task.prompt;
  const cards = task.responses.map((text, position) => {
    const card = el("article", null, "response card");
    card.dataset.position = String(position);
    const head = el("header", null, "response-head");
    head.append(el("span", LETTERS[position], "letter"), el("kbd", String(position + 1)), el("span", "", "rank-badge"));
    card.append(head, Object.hasOwn(state.media, text) ? animation(state.media[text], text) : el("div", text, "text"));
    return card;
  });
  $("responses").replaceChildren(...cards);
  $("responses").dataset.count = String(task.responses.length);
  $("pair-actions").hidden = !pair;
  $("rank-actions").hidden = pair;
  $("keys").textContent = pair ? PAIR_HELP : RANK_HELP.replace("{n}", String(task.responses.length));
  $("comment").value = "";
  state.ranking = task.responses.map((_, position) => position);
  state.ranked = 0;
  if (!pair) renderRanking();
  if (document.activeElement instanceof HTMLElement) document.activeElement.blur();
}

// A response shown as its animation (a looping GIF), the text as its alternative and caption.
function animation(url, text) {
  const figure = el("figure", null, "animation");
  const image = document.createElement("img");
  image.src = url;
  image.alt = text;
  figure.append(image, el("figcaption", text, "caption"));
  return figure;
}

function renderRanking() {
  const items = state.ranking.map((position, index) => {
    const item = el("li", null, index < state.ranked ? "ranked" : "");
    item.draggable = true;
    item.dataset.position = String(position);
    item.append(el("span", LETTERS[position], "letter"), el("span", state.task.responses[position], "snippet"));
    item.addEventListener("dragstart", (event) => {
      state.dragged = position;
      event.dataTransfer.effectAllowed = "move";
      event.dataTransfer.setData("text/plain", LETTERS[position]);
    });
    item.addEventListener("dragover", (event) => event.preventDefault());
    item.addEventListener("drop", (event) => {
      event.preventDefault();
      moveTo(state.dragged, position);
    });
    return item;
  });
  $("ranking").replaceChildren(...items);
  for (const card of $("responses").children) {
    const index = state.ranking.indexOf(Number(card.dataset.position));
    card.querySelector(".rank-badge").textContent = index < state.ranked ? `#${index + 1}` : "";
  }
  $("submit-ranking").disabled = state.ranked < state.ranking.length;
}

// Drag and drop: the dragged response takes the place of the one it is dropped on; the order is then complete.
function moveTo(moving, target) {
  if (moving === null || moving === target) return;
  const to = state.ranking.indexOf(target);
  state.ranking.splice(state.ranking.indexOf(moving), 1);
  state.ranking.splice(to, 0, moving);
  state.ranked = state.ranking.length;
  renderRanking();
}

// Keys: the pressed response goes next in the ranking; the last one left needs no key.
function pick(position) {
  const at = state.ranking.indexOf(position);
  if (at < state.ranked) return;
  state.ranking.splice(at, 1);
  state.ranking.splice(state.ranked, 0, position);
  state.ranked += 1;
  if (state.ranked === state.ranking.length - 1) state.ranked = state.ranking.length;
  renderRanking();
}

function undo() {
  const n = state.ranking.length;
  state.ranked = state.ranked === n ? n - 2 : Math.max(0, state.ranked - 1);
  renderRanking();
}

function startOver() {
  state.ranking = state.task.responses.map((_, position) => position);
  state.ranked = 0;
  renderRanking();
}

async function submit(answer) {
  if (state.busy || state.task === null) return;
  state.busy = true;
  try {
    const taskId = state.task.task_id;
    await request("POST", "/api/judgements", { task_id: taskId, ...answer, comment: $("comment").value.trim() });
    showStatus(`Saved task ${taskId}.`);
    await Promise.all([loadNext(), showProgress()]);
  } catch (error) {
    showStatus(error.message, true);
    // 409: answered already (another tab, a retry): move on
    if (error instanceof ApiError && error.status === 409) await loadNext();
  } finally {
    state.busy = false;
  }
}

function submitRanking() {
  if (state.ranked === state.ranking.length) submit({ ranking: [...state.ranking] });
}

function rankAction(key) {
  const digit = Number(key);
  if (Number.isInteger(digit) && digit >= 1 && digit <= state.ranking.length) return () => pick(digit - 1);
  return { Enter: submitRanking, Backspace: undo, Escape: startOver, x: () => submit({ choice: "both_bad" }), s: () => submit({ choice: "skip" }) }[key];
}

function actionFor(key) {
  if (key === "c") return () => $("comment").focus();
  if (state.task.responses.length > 2) return rankAction(key);
  const choice = PAIR_KEYS[key];
  return choice && (() => submit({ choice }));
}

function onKey(event) {
  const target = event.target;
  if (target instanceof HTMLTextAreaElement || target instanceof HTMLInputElement) {
    if (event.key === "Escape") target.blur();
    return;
  }
  const activates = event.key === "Enter" || event.key === " ";
  if (activates && (target instanceof HTMLButtonElement || target instanceof HTMLAnchorElement)) return;
  if (state.task === null || state.busy || event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  const action = actionFor(key);
  if (action) {
    event.preventDefault();
    action();
  }
}

for (const button of document.querySelectorAll("[data-choice]")) {
  button.addEventListener("click", () => submit({ choice: button.dataset.choice }));
}
$("submit-ranking").addEventListener("click", submitRanking);
$("sign-out").addEventListener("click", signOut);
$("check-again").addEventListener("click", () => Promise.all([loadNext(), showProgress()]));
document.addEventListener("keydown", onKey);

Promise.all([showProgress(), loadNext()]).catch((error) => showStatus(error.message, true));
