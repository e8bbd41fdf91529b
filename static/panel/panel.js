// The panel's behaviours: poll parts while the page is visible (ETag: an unchanged part costs a 304),
// update rows and messages in place (focus kept, news said through aria-live), call the JSON API with
// the CSRF header, tell the owner when a chat needs a person. No framework, no build step.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);

// Every error the owner reads is Portuguese and says what to do; the API's own errors already are.
async function api(method, url, body) {
  let response;
  try {
    response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf()},
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new Error("Sem conexão com o painel. Confira a internet e tente de novo.");
  }
  if (response.status === 401) { location.reload(); throw new Error("Sua sessão expirou: entre de novo."); }
  let data = {};
  try { data = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) {
    const error = new Error(response.status === 403
      ? "A página expirou. Recarregue a página e tente de novo."
      : data.error || `O painel não conseguiu fazer isso agora (erro ${response.status}). Tente de novo.`);
    error.data = data;
    error.field = data.field;
    throw error;
  }
  return data;
}

function showTimes(root) {
  const today = new Date().toDateString();
  root.querySelectorAll("time[data-at]").forEach((el) => {
    const at = new Date(Number(el.dataset.at) * 1000);
    const hm = at.toLocaleTimeString("pt-BR", {hour: "2-digit", minute: "2-digit"});
    el.textContent = el.dataset.format === "time" || at.toDateString() === today
      ? hm : at.toLocaleDateString("pt-BR", {day: "2-digit", month: "2-digit"}) + " " + hm;
    el.dateTime = at.toISOString();
  });
  root.querySelectorAll("[data-until]").forEach((el) => {
    const left = Math.max(Math.ceil(Number(el.dataset.until) - Date.now() / 1000), 0);
    el.textContent = `em ${left} s`;
  });
}

function announce(text) {
  const box = $("announce");
  if (!box || !text) return;
  box.textContent = "";
  setTimeout(() => { box.textContent = text; }, 50);
}

function say(el, text, bad) {
  el.textContent = text;
  el.classList.toggle("error", Boolean(bad));
}

const parse = (html) => {
  const template = document.createElement("template");
  template.innerHTML = html;
  return template.content;
};

// Put `fresh` where `old` is unless they are the same; focus stays on the element with the same id.
function swap(old, fresh) {
  if (old.isEqualNode(fresh)) return false;
  const focused = old.contains(document.activeElement) ? document.activeElement.id : null;
  old.replaceWith(fresh);
  if (focused && $(focused)) $(focused).focus();
  showTimes(fresh);
  return true;
}

// Children keyed by `attr`: changed ones swapped, new ones inserted in order, gone ones removed.
function sync(list, freshList, attr, onNew) {
  const old = new Map([...list.children].filter((c) => c.dataset[attr]).map((c) => [c.dataset[attr], c]));
  const wanted = [...freshList.children];
  let at = 0;
  wanted.forEach((node) => {
    const key = node.dataset[attr];
    let current = key ? old.get(key) : null;
    if (current) {
      old.delete(key);
      if (!current.isEqualNode(node)) { swap(current, node); current = node; }
    } else {
      current = node;
      showTimes(node);
      if (key && onNew) onNew(node);
    }
    if (list.children[at] !== current) list.insertBefore(current, list.children[at] || null);
    at += 1;
  });
  while (list.children.length > at) list.lastElementChild.remove();
}

// --- polling ---------------------------------------------------------------------------------------

const pollers = [];

function poller(el, url, apply) {
  const state = {el, url, etag: null, busy: false, apply};
  state.run = async () => {
    if (state.busy || document.visibilityState !== "visible") return;
    state.busy = true;
    try {
      const headers = state.etag ? {"If-None-Match": state.etag} : {};
      const response = await fetch(state.url(), {credentials: "same-origin", headers, cache: "no-store"});
      if (response.status === 401 || response.redirected) { location.reload(); return; }
      if (response.status === 404 && el.id === "thread") { location.href = "/panel/"; return; }
      if (response.status !== 200) return;
      state.etag = response.headers.get("ETag");
      apply(parse(await response.text()));
    } catch (e) { /* offline for a moment: the next poll tries again */ }
    finally { state.busy = false; }
  };
  state.reset = () => { state.etag = null; return state.run(); };
  pollers.push(state);
  return state;
}

function startPolling() {
  const every = 3000;
  setInterval(() => pollers.forEach((p) => p.run()), every);
  setInterval(() => showTimes(document), 1000);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") pollers.forEach((p) => p.run());
  });
}

// --- the inbox: rows in place, the count in the title, a sound and a notification ---------------

const baseTitle = document.title;
let needsSeen = null; // ids of chats known to need a person (null: not yet loaded)

function beep() {
  try {
    const audio = new (window.AudioContext || window.webkitAudioContext)();
    const tone = audio.createOscillator();
    const gain = audio.createGain();
    tone.frequency.value = 880;
    gain.gain.setValueAtTime(0.2, audio.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.6);
    tone.connect(gain).connect(audio.destination);
    tone.start();
    tone.stop(audio.currentTime + 0.6);
  } catch (e) { /* no sound available */ }
}

function needsPerson(rows) {
  const now = new Set();
  rows.querySelectorAll('li[data-state="needs_person"]').forEach((li) => now.add(li.dataset.cid));
  if (needsSeen !== null) {
    const fresh = [...now].filter((cid) => !needsSeen.has(cid));
    if (fresh.length) {
      const li = rows.querySelector(`li[data-cid="${fresh[0]}"]`);
      const name = li.querySelector(".name").textContent;
      const why = li.querySelector(".state").textContent.trim();
      announce(`Precisa de você: ${name} (${why})`);
      beep();
      if ("Notification" in window && Notification.permission === "granted") {
        const note = new Notification(`Precisa de você: ${name}`, {body: why, tag: fresh[0], lang: "pt-BR"});
        note.onclick = () => { window.focus(); location.href = li.querySelector("a").href; };
      }
    }
  }
  needsSeen = now;
}

function setTitle(summary) {
  const needs = Number(summary.dataset.needs || 0);
  document.title = needs ? `(${needs}) ${baseTitle}` : baseTitle;
}

function inbox() {
  const box = $("inbox");
  if (!box) return;
  const query = () => new URL(box.dataset.poll, location.origin);
  const partUrl = () => {
    const url = query();
    url.searchParams.set("limit", String(Math.min(Math.max(box.querySelectorAll("li[data-cid]").length, 50), 200)));
    return url.toString();
  };
  const apply = (fresh) => {
    const list = box.querySelector("#chats");
    sync(list, fresh.querySelector("#chats"), "cid", (row) => {
      if (needsSeen !== null) announce(`Conversa atualizada: ${row.querySelector(".name").textContent}`);
    });
    const summary = fresh.querySelector("#inbox-summary");
    swap(box.querySelector("#inbox-summary"), summary);
    setTitle(box.querySelector("#inbox-summary"));
    needsPerson(list);
    const more = box.querySelector("#more");
    const freshMore = fresh.querySelector("#more");
    if (!more && freshMore && box.querySelectorAll("li[data-cid]").length <= 50) box.appendChild(freshMore);
  };
  const poll = poller(box, partUrl, apply);
  setTitle(box.querySelector("#inbox-summary"));
  needsPerson(box.querySelector("#chats"));

  box.addEventListener("click", async (event) => {
    const more = event.target.closest("#more");
    if (!more) return;
    event.preventDefault();
    more.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(more.dataset.part, {credentials: "same-origin"});
      if (!response.ok) throw new Error();
      const fresh = parse(await response.text());
      const list = box.querySelector("#chats");
      const first = fresh.querySelector("#chats li[data-cid]");
      fresh.querySelectorAll("#chats li[data-cid]").forEach((li) => {
        if (!list.querySelector(`li[data-cid="${li.dataset.cid}"]`)) { showTimes(li); list.appendChild(li); }
      });
      const next = fresh.querySelector("#more");
      if (next) more.replaceWith(next); else more.remove();
      if (first) $(`chat-${first.dataset.cid}`).focus();
      announce("Mais conversas carregadas.");
    } catch (e) { say(more, "Não deu para carregar agora. Toque para tentar de novo."); }
  });

  const search = $("q");
  const form = search && search.form;
  let timer = null;
  const live = () => {
    const url = query();
    url.searchParams.delete("cursor");
    if (search.value.trim()) url.searchParams.set("q", search.value.trim()); else url.searchParams.delete("q");
    box.dataset.poll = url.pathname + url.search;
    const page = new URL(location.href);
    if (search.value.trim()) page.searchParams.set("q", search.value.trim()); else page.searchParams.delete("q");
    page.searchParams.delete("cursor");
    history.replaceState(null, "", page);
    document.querySelectorAll(".chips a").forEach((a) => {
      const chip = new URL(a.href);
      if (search.value.trim()) chip.searchParams.set("q", search.value.trim()); else chip.searchParams.delete("q");
      a.href = chip;
    });
    box.querySelector("#chats").replaceChildren();
    const more = box.querySelector("#more");
    if (more) more.remove();
    poll.reset().then(() => announce(box.querySelector("#inbox-summary").textContent.trim()));
  };
  if (form && !$("thread")) {
    form.addEventListener("submit", (event) => { event.preventDefault(); clearTimeout(timer); live(); });
    search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(live, 350); });
  }

  const notify = $("notify");
  if (notify && "Notification" in window && Notification.permission === "default") {
    notify.hidden = false;
    notify.addEventListener("click", async () => {
      const answer = await Notification.requestPermission();
      notify.hidden = true;
      announce(answer === "granted" ? "Pronto: você será avisado quando alguém precisar de você."
        : "Avisos do navegador não permitidos; o título da página e o som continuam avisando.");
    });
  }
}

// --- one conversation -------------------------------------------------------------------------------

function conversation() {
  const thread = $("thread");
  if (!thread) return;
  const cid = thread.dataset.cid;
  const atBottom = () => window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  const who = {customer: "Cliente", bot: "Bot", human: "Pessoa"};
  const apply = (fresh) => {
    const bottom = atBottom();
    swap(thread.querySelector("#now"), fresh.querySelector("#now"));
    sync(thread.querySelector("#messages"), fresh.querySelector("#messages"), "id", (li) => {
      const text = li.querySelector(".text");
      announce(`${who[li.dataset.from] || ""}: ${text ? text.textContent : "mídia"}`);
    });
    if (bottom) window.scrollTo(0, document.body.scrollHeight);
  };
  poller(thread, () => thread.dataset.poll, apply);

  const actionStatus = $("action-status");
  thread.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-action]");
    if (!button) return;
    button.disabled = true;
    try {
      await api("POST", `/panel/api/chats/${cid}/${button.dataset.action}`);
      say(actionStatus, {pause: "Você assumiu: o bot está pausado nesta conversa.",
        resume: "O bot voltou a responder esta conversa.", stop: "O bot não responde mais esta conversa."}
        [button.dataset.action]);
      await Promise.all(pollers.map((p) => p.reset()));
    } catch (e) { say(actionStatus, e.message, true); button.disabled = false; }
  });

  $("reveal").addEventListener("click", async () => {
    try {
      const chat = await api("GET", `/panel/api/chats/${cid}?reveal=1`);
      $("number").textContent = chat.number;
      $("reveal").hidden = true;
    } catch (e) { say(actionStatus, e.message, true); }
  });

  const form = $("reply-form");
  const box = $("reply-text");
  const status = $("reply-status");
  const send = async () => {
    if (!box.value.trim()) { say(status, "Escreva a mensagem antes de enviar.", true); return; }
    $("reply-send").disabled = true;
    say(status, "Enviando…");
    try {
      await api("POST", `/panel/api/chats/${cid}/reply`, {text: box.value});
      box.value = "";
      say(status, "Enviada. O bot está pausado nesta conversa.");
    } catch (e) {
      if (e.data && e.data.uncertain) { box.value = ""; say(status, e.message, true); }
      else say(status, e.message.startsWith("Não foi enviada") ? e.message : "Não foi enviada: " + e.message, true);
    } finally {
      $("reply-send").disabled = false;
      await Promise.all(pollers.map((p) => p.reset()));  // the thread, and the list beside it
    }
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); send(); });

  // quick replies: "/" opens them; arrows choose, Enter or a tap puts the text in the box
  const list = $("quick-list");
  let quick = null;
  let active = -1;
  const close = () => { list.hidden = true; list.replaceChildren(); active = -1; box.removeAttribute("aria-activedescendant"); };
  const choose = (item) => { box.value = item.text; close(); box.focus(); };
  const mark = () => {
    [...list.children].forEach((li, i) => li.setAttribute("aria-selected", String(i === active)));
    if (active >= 0) box.setAttribute("aria-activedescendant", list.children[active].id);
  };
  const open = async (prefix) => {
    if (quick === null) {
      try { quick = await api("GET", "/panel/api/quick-replies"); } catch (e) { quick = []; }
    }
    const found = quick.filter((q) => q.shortcut.startsWith(prefix));
    list.replaceChildren();
    if (!quick.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "Nenhuma resposta rápida ainda: crie em Persona.";
      list.appendChild(li);
    }
    found.forEach((item, i) => {
      const li = document.createElement("li");
      li.id = `quick-${i}`;
      li.setAttribute("role", "option");
      li.innerHTML = "<strong></strong> <span></span>";
      li.querySelector("strong").textContent = "/" + item.shortcut;
      li.querySelector("span").textContent = item.text;
      li.addEventListener("mousedown", (event) => { event.preventDefault(); choose(item); });
      li.item = item;
      list.appendChild(li);
    });
    active = found.length ? 0 : -1;
    list.hidden = false;
    mark();
  };
  box.addEventListener("input", () => {
    const typed = box.value.match(/^\/([\w-]*)$/);
    if (typed) open(typed[1].toLowerCase()); else close();
  });
  box.addEventListener("keydown", (event) => {
    const options = [...list.querySelectorAll('[role="option"]')];
    if (!list.hidden && options.length && (event.key === "ArrowDown" || event.key === "ArrowUp")) {
      event.preventDefault();
      active = (active + (event.key === "ArrowDown" ? 1 : options.length - 1)) % options.length;
      mark();
      return;
    }
    if (!list.hidden && event.key === "Escape") { event.preventDefault(); close(); return; }
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!list.hidden && active >= 0 && options[active]) choose(options[active].item);
      else send();
    }
  });
  box.addEventListener("blur", () => setTimeout(() => { if (document.activeElement !== box) close(); }, 150));

  $("suggest").addEventListener("click", async () => {
    const button = $("suggest");
    button.disabled = true;
    say(status, "Pedindo uma sugestão ao Gemini…");
    try {
      const draft = await api("POST", `/panel/api/chats/${cid}/suggest`);
      box.value = draft.text;
      box.focus();
      say(status, "Sugestão do Gemini na caixa: revise e envie. Nada foi enviado ainda.");
    } catch (e) { say(status, e.message, true); }
    finally { button.disabled = false; }
  });

  const forget = $("forget");
  forget.addEventListener("click", async () => {
    if (!confirm("Apagar tudo o que o bot guarda deste cliente?")) return;
    try {
      await api("POST", `/panel/api/chats/${cid}/forget`);
      location.href = forget.dataset.back;
    } catch (e) { say($("forget-status"), "Não foi apagado: " + e.message, true); }
  });
  window.scrollTo(0, document.body.scrollHeight);
}

// --- persona and quick replies ----------------------------------------------------------------------

function personaPage() {
  const name = $("persona-name");
  const text = $("persona-text");
  const status = $("persona-status");
  const load = async () => {
    try {
      const prompt = await api("GET", `/panel/api/prompts/${encodeURIComponent(name.value)}`);
      text.value = prompt.text;
      text.placeholder = name.value === "system" ? "" : "Vazio: esta instância usa o texto system.";
      $("persona-overridden").hidden = !prompt.overridden;
      say(status, "");
    } catch (e) { say(status, e.message, true); }
  };
  name.addEventListener("change", load);
  load();
  $("persona-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("PUT", `/panel/api/prompts/${encodeURIComponent(name.value)}`, {text: text.value});
      say(status, "Salvo. Vale a partir da próxima resposta.");
    } catch (e) { say(status, "Não foi salvo: " + e.message, true); }
  });
  tryIt("try", name, () => ({prompt: text.value}));

  const quick = $("quick-text");
  const quickStatus = $("quick-status");
  api("GET", "/panel/api/quick-replies").then((items) => {
    quick.value = items.map((q) => `/${q.shortcut} ${q.text}`).join("\n");
  }).catch((e) => say(quickStatus, e.message, true));
  $("quick-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const items = quick.value.split("\n").filter((line) => line.trim()).map((line) => {
      const found = line.trim().match(/^\/?(\S+)\s+([\s\S]+)$/);
      return found ? {shortcut: found[1], text: found[2]} : {shortcut: line.trim(), text: ""};
    });
    try {
      await api("PUT", "/panel/api/quick-replies", items);
      say(quickStatus, `Salvas ${items.length} respostas rápidas.`);
    } catch (e) { say(quickStatus, "Não foram salvas: " + e.message, true); }
  });
}

// The try-it form `${prefix}-form`: what the bot would answer with the draft on the page (`draft()`), sending nothing.
function tryIt(prefix, name, draft) {
  $(`${prefix}-form`).addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = $(`${prefix}-status`);
    const list = $(`${prefix}-parts`);
    list.replaceChildren();
    say(status, "Perguntando ao Gemini…");
    try {
      const instance = name.value === "system" ? "" : name.value;
      const answer = await api("POST", "/panel/api/try", {instance, text: $(`${prefix}-text`).value, ...draft()});
      showParts(list, answer.parts);
      say(status, `${answer.parts.length} mensagem(ns) — nada foi enviado ao WhatsApp.`);
    } catch (e) { say(status, "Erro: " + e.message, true); }
  });
}

function showParts(list, parts) {
  list.innerHTML = "";
  parts.forEach((part) => {
    const li = document.createElement("li");
    li.className = "msg from-bot";
    li.textContent = part;
    list.appendChild(li);
  });
}

function knowledgePage() {
  const name = document.getElementById("knowledge-name");
  const text = document.getElementById("knowledge-text");
  const status = document.getElementById("knowledge-status");
  const size = (known) => {
    document.getElementById("knowledge-size").textContent = `${known.chars} caracteres` +
      (known.cached ? " — grande o bastante para o cache do Gemini: cada resposta envia só a conversa." : ".");
  };
  const load = async () => {
    const known = await api("GET", `/panel/api/knowledge?name=${encodeURIComponent(name.value)}`);
    text.value = known.text;
    size(known);
    say(status, name.value !== "system" && !known.exists ? "Vazio: esta instância usa o conhecimento system." : "");
  };
  name.addEventListener("change", load);
  load();
  document.getElementById("knowledge-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      size(await api("PUT", "/panel/api/knowledge", {name: name.value, text: text.value}));
      say(status, "Salvo. Vale a partir da próxima resposta.");
    } catch (e) { say(status, "Não foi salvo: " + e.message, true); }
  });
  tryIt("knowledge-try", name, () => ({knowledge: text.value}));
}

function learnedPage() {
  document.querySelectorAll(".suggestion [data-decision]").forEach((button) => {
    button.addEventListener("click", async () => {
      const item = button.closest(".suggestion");
      const status = item.querySelector(".status");
      const decision = button.dataset.decision;
      const body = decision === "approve" ? {answer: item.querySelector(".answer").value} : undefined;
      item.querySelectorAll("button").forEach((b) => { b.disabled = true; });
      try {
        await api("POST", `/panel/api/suggestions/${item.dataset.id}/${decision}`, body);
        say(status, decision === "approve" ? "Aprovada: entrou no conhecimento da loja." : "Rejeitada: não será sugerida de novo.");
        item.classList.add(decision === "approve" ? "approved" : "rejected");
      } catch (e) {
        say(status, "Erro: " + e.message, true);
        item.querySelectorAll("button").forEach((b) => { b.disabled = false; });
      }
    });
  });
}

const STATES = {open: "conectado", connecting: "aguardando a leitura do QR code", close: "desconectado"};

function connectPage() {
  const list = document.getElementById("instances");
  const card = document.getElementById("qr-card");
  const image = document.getElementById("qr");
  const qrStatus = document.getElementById("qr-status");
  let watching = null;

  const load = async () => {
    let numbers;
    try { numbers = await api("GET", "/panel/api/instances"); }
    catch (e) { say(document.getElementById("instances-status"), e.message, true); return; }
    say(document.getElementById("instances-status"), "");
    list.innerHTML = "";
    if (!numbers.length) list.innerHTML = '<li class="muted">Nenhum número ainda: crie um abaixo.</li>';
    numbers.forEach((number) => {
      const li = document.createElement("li");
      li.dataset.name = number.name;
      const label = number.channel === "evolution" ? (STATES[number.state] || number.state) : "canal oficial";
      li.innerHTML = "<strong></strong> <span class=\"state\"></span> ";
      li.querySelector("strong").textContent = number.name;
      li.querySelector(".state").textContent = label;
      li.querySelector(".state").classList.add("state-" + (number.state || "official"));
      if (number.channel === "evolution" && number.state !== "open") {
        const show = document.createElement("button");
        show.textContent = "Mostrar QR code";
        show.className = "show-qr";
        show.addEventListener("click", () => watch(number.name));
        li.appendChild(show);
      }
      if (number.channel === "evolution" && number.state !== "close") {
        const out = document.createElement("button");
        out.textContent = "Desconectar";
        out.className = "logout";
        out.addEventListener("click", async () => {
          if (!confirm(`Desconectar o número ${number.name}? O bot para de responder por ele.`)) return;
          try { await api("POST", `/panel/api/instances/${encodeURIComponent(number.name)}/logout`); }
          catch (e) { alert(e.message); }
          load();
        });
        li.appendChild(out);
      }
      list.appendChild(li);
    });
  };

  // Ask for the QR code every 3 s (Evolution renews it) until the phone has scanned it: state "open".
  const watch = (name) => {
    clearTimeout(watching);
    card.hidden = false;
    document.getElementById("qr-name").textContent = name;
    image.hidden = true;
    say(qrStatus, "Pedindo o QR code ao WhatsApp…");
    const tick = async () => {
      try {
        const answer = await api("GET", `/panel/api/instances/${encodeURIComponent(name)}/qr`);
        if (answer.state === "open") {
          image.hidden = true;
          qrStatus.className = "status ok";
          qrStatus.textContent = `Conectado! O bot já responde pelo número ${name}.`;
          load();
          return;
        }
        if (answer.qr) { image.src = answer.qr; image.hidden = false; say(qrStatus, "Aguardando a leitura do QR code…"); }
      } catch (e) { say(qrStatus, e.message, true); }
      watching = setTimeout(tick, 3000);
    };
    tick();
    card.scrollIntoView({behavior: "smooth"});
  };

  document.getElementById("create-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = document.getElementById("create-status");
    const name = document.getElementById("instance-name").value.trim();
    try {
      const made = await api("POST", "/panel/api/instances", {name});
      say(status, made.created ? "Número criado." : "Esse número já existia.");
      await load();
      watch(made.name);
    } catch (e) { say(status, e.message, true); }
  });
  load();
}

function settingsPage() {
  const form = document.getElementById("settings-form");
  const status = document.getElementById("settings-status");
  const value = (id) => document.getElementById(id).value;
  const number = (id) => (value(id).trim() === "" ? null : Number(value(id)));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    form.querySelectorAll(".invalid").forEach((el) => el.classList.remove("invalid"));
    const body = {
      bot_paused: document.getElementById("bot_paused").checked,
      bot_active: value("bot_active"),
      business_hours: value("business_hours"),
      closed_message: value("closed_message"),
      handoff_message: value("handoff_message"),
      owner_number: value("owner_number").split(",").map((n) => n.trim()).filter(Boolean),
      debounce_seconds: number("debounce_seconds"),
      handoff_pause_minutes: number("handoff_pause_minutes"),
    };
    try {
      await api("PUT", "/panel/api/settings", body);
      say(status, "Salvo. Vale a partir da próxima resposta.");
    } catch (e) {
      say(status, "Não foi salvo: " + e.message, true);
      const field = e.field && document.getElementById(e.field);
      if (field) { field.classList.add("invalid"); field.focus(); }
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  showTimes(document);
  inbox();
  conversation();
  if (pollers.length) startPolling();
  if ($("persona-form")) personaPage();
  if ($("knowledge-form")) knowledgePage();
  if ($("suggestions")) learnedPage();
  if ($("create-form")) connectPage();
  if ($("settings-form")) settingsPage();
});
