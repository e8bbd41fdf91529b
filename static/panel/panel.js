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
  if (!response.ok) throw new Error(data.error || "erro " + response.status);
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
      showParts(list, answer.parts);
      say(tryStatus, `${answer.parts.length} mensagem(ns) — nada foi enviado ao WhatsApp.`);
    } catch (e) { say(tryStatus, "Erro: " + e.message, true); }
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
  document.getElementById("knowledge-try-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const tryStatus = document.getElementById("knowledge-try-status");
    const list = document.getElementById("knowledge-try-parts");
    list.innerHTML = "";
    say(tryStatus, "Perguntando ao Gemini…");
    try {
      const instance = name.value === "system" ? "" : name.value;
      const answer = await api("POST", "/panel/api/try",
        {instance, text: document.getElementById("knowledge-try-text").value, knowledge: text.value});
      showParts(list, answer.parts);
      say(tryStatus, `${answer.parts.length} mensagem(ns) — nada foi enviado ao WhatsApp.`);
    } catch (e) { say(tryStatus, "Erro: " + e.message, true); }
  });
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

document.addEventListener("DOMContentLoaded", () => {
  showTimes(document);
  document.querySelectorAll("[data-poll]").forEach(poll);
  if (document.getElementById("reply-form")) chatPage();
  if (document.getElementById("persona-form")) personaPage();
  if (document.getElementById("knowledge-form")) knowledgePage();
  if (document.getElementById("suggestions")) learnedPage();
});
