// The panel's few behaviours: refresh parts by short polling, call the JSON API with the CSRF header,
// show times in the browser's time zone. No framework, no build step.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

async function api(method, url, body) {
  const response = await fetch(url, {
    method,
    credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf()},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) { location.reload(); throw new Error("sessão expirada"); }
  let data = {};
  try { data = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) {
    const error = new Error(data.error || "erro " + response.status);
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
}

async function refresh(el) {
  const response = await fetch(el.dataset.poll, {credentials: "same-origin"});
  if (response.status === 401 || response.redirected) { location.reload(); return; }
  if (response.status === 404) { location.href = "/panel/"; return; }
  if (!response.ok) return;
  const html = await response.text();
  if (html === el.dataset.last) return;
  const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
  el.dataset.last = html;
  el.innerHTML = html;
  showTimes(el);
  if (el.dataset.scroll && atBottom) window.scrollTo(0, document.body.scrollHeight);
}

function poll(el) {
  const every = Number(el.dataset.every || 3000);
  const tick = () => refresh(el).catch(() => {}).finally(() => setTimeout(tick, every));
  setTimeout(tick, every);
}

function say(el, text, bad) {
  el.textContent = text;
  el.classList.toggle("error", Boolean(bad));
}

function chatPage() {
  const thread = document.getElementById("thread");
  document.querySelectorAll(".actions [data-action]").forEach((button) => {
    button.addEventListener("click", async () => {
      const cid = button.parentElement.dataset.cid;
      button.disabled = true;
      try { await api("POST", `/panel/api/chats/${cid}/${button.dataset.action}`); await refresh(thread); }
      catch (e) { alert(e.message); }
      finally { button.disabled = false; }
    });
  });
  const reveal = document.getElementById("reveal");
  reveal.addEventListener("click", async () => {
    const chat = await api("GET", `/panel/api/chats/${reveal.dataset.cid}?reveal=1`);
    document.getElementById("number").textContent = chat.number;
    reveal.hidden = true;
  });
  const form = document.getElementById("reply-form");
  const status = document.getElementById("reply-status");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = document.getElementById("reply-text");
    const send = document.getElementById("reply-send");
    send.disabled = true;
    say(status, "Enviando…");
    try {
      await api("POST", `/panel/api/chats/${form.dataset.cid}/reply`, {text: box.value});
      box.value = "";
      say(status, "Enviada. O bot está pausado nesta conversa.");
      await refresh(thread);
    } catch (e) { say(status, "Não foi enviada: " + e.message, true); }
    finally { send.disabled = false; }
  });
  const forget = document.getElementById("forget");
  forget.addEventListener("click", async () => {
    if (!confirm("Apagar tudo o que o bot guarda deste cliente?")) return;
    await api("POST", `/panel/api/chats/${forget.dataset.cid}/forget`);
    location.href = forget.dataset.back;
  });
  window.scrollTo(0, document.body.scrollHeight);
}

function personaPage() {
  const name = document.getElementById("persona-name");
  const text = document.getElementById("persona-text");
  const status = document.getElementById("persona-status");
  const load = async () => {
    const prompt = await api("GET", `/panel/api/prompts/${encodeURIComponent(name.value)}`);
    text.value = prompt.text;
    text.placeholder = name.value === "system" ? "" : "Vazio: esta instância usa o texto system.";
    document.getElementById("persona-overridden").hidden = !prompt.overridden;
    say(status, "");
  };
  name.addEventListener("change", load);
  load();
  document.getElementById("persona-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("PUT", `/panel/api/prompts/${encodeURIComponent(name.value)}`, {text: text.value});
      say(status, "Salvo. Vale a partir da próxima resposta.");
    } catch (e) { say(status, "Não foi salvo: " + e.message, true); }
  });
  document.getElementById("try-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const tryStatus = document.getElementById("try-status");
    const list = document.getElementById("try-parts");
    list.innerHTML = "";
    say(tryStatus, "Perguntando ao Gemini…");
    try {
      const instance = name.value === "system" ? "" : name.value;
      const answer = await api("POST", "/panel/api/try",
        {instance, text: document.getElementById("try-text").value, prompt: text.value});
      answer.parts.forEach((part) => {
        const li = document.createElement("li");
        li.className = "msg from-bot";
        li.textContent = part;
        list.appendChild(li);
      });
      say(tryStatus, `${answer.parts.length} mensagem(ns) — nada foi enviado ao WhatsApp.`);
    } catch (e) { say(tryStatus, "Erro: " + e.message, true); }
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
  document.querySelectorAll("[data-poll]").forEach(poll);
  if (document.getElementById("reply-form")) chatPage();
  if (document.getElementById("persona-form")) personaPage();
  if (document.getElementById("create-form")) connectPage();
  if (document.getElementById("settings-form")) settingsPage();
});
