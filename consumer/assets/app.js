// chatbus web page and OBS overlay.
//
// One WebSocket subscribed to the chosen channels: the last messages first,
// then live. After a disconnect it resumes from the last cursor it got, so
// nothing is missed or shown twice (if the server's history no longer
// reaches that cursor, it starts again from the server's newest messages).
// Moderation (deletes, bans, timeouts, chat clears) is applied as it
// happens, and so are purges and opt-outs ("forget on request": `privacy`
// frames and events), which remove what they cover. Everything is built
// with DOM methods and textContent: chat text is never parsed as HTML.
//
// URL parameters: channels=twitch:somechannel,otherchannel  history=100
//                 max=500  access_token=<CONSUMER_API_TOKEN>
// URL fragment:   #command_token=<CONSUMER_COMMAND_TOKEN> (see "sending")
// /overlay is the same with a transparent background, for OBS.
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const overlay = /\/overlay\/?$/.test(location.pathname);
  const token = params.get("access_token");
  const maxLines = Number(params.get("max")) || (overlay ? 50 : 500);
  const historyCount = Math.max(0, Number(params.get("history") ?? (overlay ? 20 : 100)) || 0);
  const channels = (params.get("channels") || "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);

  const chat = document.getElementById("chat");
  const status = document.getElementById("status");
  const input = document.getElementById("channels");
  const known = document.getElementById("known");
  const streams = document.getElementById("streams");

  if (overlay) {
    // Both: the page background is on <html> too, and OBS shows whatever
    // is not transparent.
    document.documentElement.classList.add("overlay");
    document.body.classList.add("overlay");
  }
  // Several channels (or a pattern): each line says which channel it is from.
  const manyChannels = channels.length > 1 || channels.some((c) => c.includes("*"));
  input.value = channels.join(", ");

  const CHAT_KINDS = new Set(["message", "action", "cheer", "super_chat", "super_sticker"]);
  const NOTICE_KINDS = new Set([
    "subscription", "resub", "sub_gift", "mystery_gift", "raid", "announcement", "other_notice",
  ]);
  const PLATFORM_MARKS = { twitch: "\u25c6", youtube: "\u25b6" };
  const MODERATION_KINDS = new Set(["ban", "timeout", "chat_clear", "message_delete"]);
  const STREAM_KINDS = new Set(["stream_online", "stream_update", "stream_offline"]);
  const MODERATION_NOTES = {
    deleted: "message deleted by a moderator",
    banned: "message removed: user banned",
    timed_out: "message removed: user timed out",
    cleared: "message removed: chat cleared",
  };
  // One distinct label per badge (the title says the rest); unknown badges
  // show their name.
  const BADGE_LABELS = {
    broadcaster: "\u2605", moderator: "MOD", vip: "VIP", subscriber: "SUB", founder: "FDR",
    staff: "STAFF", admin: "ADMIN", global_mod: "GMOD", partner: "\u2713", verified: "\u2714",
    bits: "BITS", premium: "PRIME", turbo: "TURBO", artist: "ART", member: "MEMBER",
    owner: "\u2605",
  };
  const BADGE_TITLES = {
    broadcaster: "broadcaster", moderator: "moderator", vip: "VIP", subscriber: "subscriber",
    founder: "founder", staff: "Twitch staff", admin: "Twitch admin",
    global_mod: "global moderator", partner: "verified partner", verified: "verified",
    bits: "bits cheered", premium: "Prime Gaming", turbo: "Turbo", artist: "artist",
    member: "channel member", owner: "channel owner",
  };

  // ------------------------------------------------------------ controls --

  document.getElementById("pick").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const next = new URLSearchParams(location.search);
    const chosen = input.value.split(",").map((s) => s.trim()).filter(Boolean);
    next.set("channels", chosen.join(","));
    location.search = next.toString();
  });

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text ?? state;
  }

  // ------------------------------------------------------- live state --
  //
  // One entry per shown channel: live (with viewers and title) or offline.
  // It starts from /api/channels (each channel's newest stored status, so
  // a page opened mid-stream shows it) and follows the stream_* events.

  const streamStates = new Map();

  function shown(platform, channel) {
    return channels.some((c) => c.includes("*") || c === channel || c === `${platform}:${channel}`);
  }

  function showStream(platform, channel, state) {
    const key = `${platform}:${channel}`;
    const previous = streamStates.get(key);
    // An older status (a history replay after a newer /api/channels) never
    // replaces a newer one.
    if (previous && state.cursor !== undefined && previous.cursor > state.cursor) return;
    streamStates.set(key, state);
    let item = streams.querySelector(`li[data-key="${CSS.escape(key)}"]`);
    if (!item) {
      item = el("li", "stream");
      item.dataset.key = key;
      item.dataset.platform = platform;
      item.dataset.channel = channel;
      streams.append(item);
    }
    item.dataset.live = String(state.live);
    const parts = [el("span", "dot", state.live ? "\u25cf" : "\u25cb")];
    if (manyChannels || !overlay) parts.push(el("span", "name", `${channel} `));
    parts.push(el("span", "state", state.live ? "live" : "offline"));
    if (state.live && state.viewer_count !== null && state.viewer_count !== undefined) {
      parts.push(el("span", "viewers", ` \u00b7 ${Number(state.viewer_count).toLocaleString("en")} viewers`));
    }
    if (state.live && state.title) parts.push(el("span", "title", ` \u00b7 ${state.title}`));
    item.replaceChildren(...parts);
  }

  function streamEvent(event, cursor) {
    const d = event.details || {};
    const live = event.kind !== "stream_offline";
    showStream(event.platform, event.channel, {
      live,
      title: live ? d.title : null,
      category: live ? d.category : null,
      viewer_count: live ? d.viewer_count : null,
      started_at: d.started_at,
      cursor,
    });
  }

  async function loadKnown() {
    try {
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      const res = await fetch("/api/channels", { headers });
      if (!res.ok) return;
      const { channels: list } = await res.json();
      for (const c of list) {
        if (c.stream && shown(c.platform, c.channel)) showStream(c.platform, c.channel, c.stream);
      }
      if (overlay) return;
      for (const c of list.slice(0, 30)) {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = `${c.platform}:${c.channel}`;
        button.title = `${c.message_count} messages`;
        button.addEventListener("click", () => {
          const current = input.value.split(",").map((s) => s.trim()).filter(Boolean);
          if (!current.includes(button.textContent)) current.push(button.textContent);
          input.value = current.join(", ");
        });
        known.append(button);
      }
    } catch (_) {
      // The list is a convenience; the page works without it.
    }
  }

  // ------------------------------------------------------------- sending --
  //
  // With a command token (CONSUMER_COMMAND_TOKEN) the page writes too: a
  // composer that sends one text to one channel or to every channel on
  // screen (one command per channel, through POST /api/commands), and on
  // each message a moderator's delete and timeout buttons. The token is
  // given once as #command_token=... in the address: it is taken out of the
  // address bar at once and kept in sessionStorage (this tab only, gone when
  // it closes). Without one, none of this shows; the overlay never writes.

  const TOKEN_KEY = "chatbus.command_token";
  const TIMEOUT_SECONDS = 600;
  const composer = document.getElementById("composer");
  const composeTarget = document.getElementById("compose-target");
  const composeText = document.getElementById("compose-text");
  const receipts = document.getElementById("receipts");

  function readCommandToken() {
    if (overlay) return null;
    try {
      const fragment = new URLSearchParams(location.hash.slice(1));
      if (fragment.has("command_token")) {
        const given = fragment.get("command_token");
        fragment.delete("command_token");
        const rest = fragment.toString();
        history.replaceState(null, "", `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
        if (given) sessionStorage.setItem(TOKEN_KEY, given);
        else sessionStorage.removeItem(TOKEN_KEY);
      }
      return sessionStorage.getItem(TOKEN_KEY);
    } catch (_) {
      return null;
    }
  }
  const commandToken = readCommandToken();

  // "platform:channel" -> {platform, channel}: the channels the page names,
  // then each channel a message comes from (a bare channel or a pattern
  // names no platform: its channels count once they show a message).
  const targets = new Map();

  function addTarget(platform, channel) {
    if (!commandToken || !platform || !channel) return;
    const key = `${platform}:${channel}`;
    if (targets.has(key)) return;
    targets.set(key, { platform, channel });
    const option = document.createElement("option");
    option.value = key;
    option.textContent = key;
    composeTarget.append(option);
  }

  function receiptText(receipt) {
    return receipt.reason ? `${receipt.status}: ${receipt.reason}` : receipt.status;
  }

  // Posts one command (or a list of targets); the receipt(s), or throws
  // with the server's reason.
  async function postCommand(body) {
    const res = await fetch("/api/commands", {
      method: "POST",
      headers: { Authorization: `Bearer ${commandToken}`, "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await res.json().catch(() => ({}));
    if (!res.ok) {
      throw new Error(answer.error ? `${answer.error}: ${answer.message}` : `HTTP ${res.status}`);
    }
    return answer;
  }

  function receiptItem({ platform, channel }) {
    const item = document.createElement("li");
    item.className = "receipt";
    item.dataset.platform = platform;
    item.dataset.channel = channel;
    item.dataset.status = "sending";
    const where = document.createElement("span");
    where.className = "target";
    where.textContent = `${platform}:#${channel}`;
    const what = document.createElement("span");
    what.className = "status";
    what.textContent = "sending\u2026";
    item.append(where, what);
    return item;
  }

  function settle(item, status, text) {
    item.dataset.status = status;
    item.querySelector(".status").textContent = text;
  }

  async function send(ev) {
    ev.preventDefault();
    const text = composeText.value;
    if (!text.trim()) return;
    const chosen = composeTarget.value === "*"
      ? Array.from(targets.values())
      : [targets.get(composeTarget.value)].filter(Boolean);
    if (chosen.length === 0) {
      const none = document.createElement("li");
      none.className = "receipt";
      none.dataset.status = "error";
      none.textContent = "no channel on screen to send to";
      receipts.replaceChildren(none);
      receipts.hidden = false;
      return;
    }
    const items = chosen.map(receiptItem);
    receipts.replaceChildren(...items);
    receipts.hidden = false;
    try {
      const answer = await postCommand({ targets: chosen, text });
      answer.forEach((receipt, i) => settle(items[i], receipt.status, receiptText(receipt)));
      if (answer.every((receipt) => receipt.status === "sent")) composeText.value = "";
    } catch (e) {
      items.forEach((item) => settle(item, "error", e.message));
    }
  }

  // A moderator's command about one message; its receipt shows on the line.
  async function moderate(line, event, command, label) {
    let note = line.querySelector(".receipt");
    if (!note) {
      note = el("span", "receipt");
      line.append(note);
    }
    note.dataset.status = "sending";
    note.dataset.kind = command.kind;
    note.textContent = `${label}: sending\u2026`;
    try {
      const receipt = await postCommand({
        platform: event.platform, channel: event.channel, ...command,
      });
      note.dataset.status = receipt.status;
      note.textContent = `${label}: ${receiptText(receipt)}`;
    } catch (e) {
      note.dataset.status = "error";
      note.textContent = `${label}: ${e.message}`;
    }
  }

  function modActions(line, event) {
    const actions = el("span", "mod-actions");
    const who = event.author.display_name || event.author.login;
    const remove = el("button", "mod-delete", "delete");
    remove.type = "button";
    remove.title = "delete this message";
    remove.addEventListener("click", () => moderate(
      line, event, { kind: "delete", message_id: event.id }, "delete",
    ));
    const timeout = el("button", "mod-timeout", `${TIMEOUT_SECONDS / 60}m`);
    timeout.type = "button";
    timeout.title = `time ${who} out for ${TIMEOUT_SECONDS / 60} minutes`;
    timeout.addEventListener("click", () => moderate(
      line, event, { kind: "timeout", user_id: event.author.id, seconds: TIMEOUT_SECONDS }, "timeout",
    ));
    actions.append(remove, timeout);
    return actions;
  }

  if (commandToken) {
    for (const c of channels) {
      const at = c.indexOf(":");
      if (at > 0 && !c.includes("*")) addTarget(c.slice(0, at), c.slice(at + 1));
    }
    composer.hidden = false;
    composer.addEventListener("submit", send);
    document.getElementById("compose-forget").addEventListener("click", () => {
      try {
        sessionStorage.removeItem(TOKEN_KEY);
      } catch (_) {
        // Nothing stored, nothing to forget.
      }
      location.reload();
    });
  }

  // ------------------------------------------------------------- opt-out --
  //
  // Anyone can ask for a code (POST /api/privacy/optout, public even when
  // the page needs a read token, so none is sent) for the login they chat
  // as; typing `!optout <code>` in chat as that login before it expires
  // opts them out of logging and removes what was stored of them. The page
  // shows the code, the server's instructions and the time left; a refused
  // request (400, 429) shows the server's reason.

  const optoutForm = document.getElementById("optout-form");
  const optoutPlatform = document.getElementById("optout-platform");
  const optoutLogin = document.getElementById("optout-login");
  const optoutResult = document.getElementById("optout-result");
  const optoutCode = document.getElementById("optout-code");
  const optoutMessage = document.getElementById("optout-message");
  const optoutCountdown = document.getElementById("optout-countdown");
  const optoutError = document.getElementById("optout-error");
  const LOGIN_HINTS = {
    twitch: "your Twitch login",
    youtube: "your channel id (UC\u2026)",
    kick: "your Kick username",
  };
  let optoutTimer = null;

  const hintLogin = () => {
    optoutLogin.placeholder = LOGIN_HINTS[optoutPlatform.value] || "your login";
  };
  optoutPlatform.addEventListener("change", hintLogin);
  hintLogin();

  function optoutFailed(text, status) {
    optoutError.textContent = text;
    optoutError.dataset.status = String(status ?? "error");
    optoutError.hidden = false;
  }

  // Counts down to `deadline` (this browser's clock), once a second.
  function countDown(deadline) {
    const tick = () => {
      const left = Math.ceil((deadline - Date.now()) / 1000);
      if (left > 0) {
        optoutCountdown.textContent = `expires in ${left} s`;
        optoutCountdown.dataset.left = String(left);
        return;
      }
      clearInterval(optoutTimer);
      optoutTimer = null;
      optoutResult.dataset.state = "expired";
      optoutCountdown.dataset.left = "0";
      optoutCountdown.textContent = "expired: ask for a new code";
    };
    tick();
    optoutTimer = setInterval(tick, 1000);
  }

  async function requestOptOut(ev) {
    ev.preventDefault();
    clearInterval(optoutTimer);
    optoutTimer = null;
    optoutResult.hidden = true;
    optoutError.hidden = true;
    optoutError.textContent = "";
    delete optoutError.dataset.status;
    const button = optoutForm.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      const res = await fetch("/api/privacy/optout", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ platform: optoutPlatform.value, login: optoutLogin.value.trim() }),
      });
      const answer = await res.json().catch(() => ({}));
      if (!res.ok || !answer.code) {
        optoutFailed(answer.message || `HTTP ${res.status}`, res.status);
        return;
      }
      // The time left by the server's clock (its Date header), not this
      // browser's, which may be off. The header is in whole seconds, cut
      // down: take a second off, so the page never shows time the code no
      // longer has.
      const expires = Date.parse(answer.expires_at);
      const serverNow = Date.parse(res.headers.get("Date") || "");
      const lifetime = Number.isNaN(serverNow) ? expires - Date.now() : expires - serverNow - 1000;
      optoutCode.textContent = answer.code;
      optoutMessage.textContent = answer.message || `type !optout ${answer.code} in chat`;
      optoutResult.dataset.state = "live";
      optoutResult.hidden = false;
      countDown(Date.now() + lifetime);
    } catch (e) {
      optoutFailed(e.message);
    } finally {
      button.disabled = false;
    }
  }

  optoutForm.addEventListener("submit", requestOptOut);

  // ----------------------------------------------------------- WebSocket --

  let lastCursor = null;
  let retries = 0;

  function connect() {
    if (channels.length === 0) {
      setStatus("idle", "choose one or more channels");
      return;
    }
    const url = new URL("/ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (token) url.searchParams.set("access_token", token);
    setStatus(lastCursor === null ? "connecting" : "reconnecting", "connecting\u2026");
    const socket = new WebSocket(url);
    socket.addEventListener("open", () => subscribe(socket));
    socket.addEventListener("message", (ev) => handle(JSON.parse(ev.data), socket));
    socket.addEventListener("close", (ev) => {
      const why = ev.reason ? `: ${ev.reason}` : "";
      setStatus("reconnecting", `disconnected (${ev.code}${why}); reconnecting`);
      const delay = Math.min(30000, 500 * 2 ** retries++) * (0.5 + Math.random() / 2);
      setTimeout(connect, delay);
    });
  }

  // From where this page left off, or (first time) its last messages.
  function subscribe(socket) {
    const request = { type: "subscribe", sub: "chat", channels };
    if (lastCursor !== null) request.since = lastCursor;
    else if (historyCount > 0) request.last = historyCount;
    socket.send(JSON.stringify(request));
  }

  function handle(frame, socket) {
    switch (frame.type) {
      case "subscribed":
        if (!frame.history) goLive();
        break;
      case "live":
        goLive();
        break;
      case "event":
        lastCursor = frame.cursor;
        render(frame);
        break;
      case "privacy":
        applyPrivacy(frame);
        break;
      case "error":
        if (frame.code === "cursor_beyond_head" && lastCursor !== null) {
          // The server's history does not reach where this page left off
          // (its store was replaced, or this is another deployment): what
          // is shown cannot be continued, so start again from its newest.
          lastCursor = null;
          chat.replaceChildren();
          setStatus("reconnecting", "the server's history restarted; loading its newest messages");
          subscribe(socket);
          break;
        }
        setStatus("error", `${frame.code}: ${frame.message}`);
        break;
      default:
        break;
    }
  }

  function goLive() {
    retries = 0;
    setStatus("live", `live: ${channels.join(", ")}`);
  }

  // ------------------------------------------------------------ rendering --

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function emoteUrl(id, scale) {
    return `https://static-cdn.jtvnw.net/emoticons/v2/${encodeURIComponent(id)}/default/dark/${scale}`;
  }

  // Emote positions count Unicode code points, like Array.from(text).
  function textWithEmotes(text, emotes, platform) {
    const fragment = document.createDocumentFragment();
    const chars = Array.from(text);
    const usable = platform === "twitch" ? emotes || [] : [];
    const sorted = usable
      .filter((e) => e.start < e.end && e.end <= chars.length)
      .sort((a, b) => a.start - b.start);
    let pos = 0;
    for (const e of sorted) {
      if (e.start < pos) continue;
      if (e.start > pos) fragment.append(chars.slice(pos, e.start).join(""));
      const img = el("img", "emote");
      img.alt = e.name;
      img.title = e.name;
      img.dataset.emoteId = e.id;
      img.src = emoteUrl(e.id, "1.0");
      img.srcset = `${emoteUrl(e.id, "1.0")} 1x, ${emoteUrl(e.id, "2.0")} 2x`;
      fragment.append(img);
      pos = e.end;
    }
    if (pos < chars.length) fragment.append(chars.slice(pos).join(""));
    return fragment;
  }

  // The user's colour, lightened if it would vanish on the dark page.
  function nameColor(color, login) {
    let hex = /^#[0-9a-f]{6}$/i.test(color || "") ? color : null;
    if (!hex) {
      let h = 0;
      for (const ch of login || "") h = (h * 31 + ch.codePointAt(0)) >>> 0;
      return `hsl(${h % 360}, 70%, 65%)`;
    }
    const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
    if (0.299 * r + 0.587 * g + 0.114 * b < 70) {
      const mix = (v) => Math.round(v + (255 - v) * 0.5).toString(16).padStart(2, "0");
      hex = `#${mix(r)}${mix(g)}${mix(b)}`;
    }
    return hex;
  }

  function platformMark(platform) {
    const label = PLATFORM_MARKS[platform] || (platform || "?").charAt(0).toUpperCase();
    const mark = el("span", "platform", label);
    mark.dataset.platform = platform;
    mark.title = platform;
    return mark;
  }

  function channelTag(event) {
    const tag = el("span", "channel", `#${event.channel}`);
    tag.title = `${event.platform}:${event.channel}`;
    return tag;
  }

  function badges(author) {
    const fragment = document.createDocumentFragment();
    for (const b of author.badges || []) {
      const label = BADGE_LABELS[b.name] || b.name.replace(/_/g, " ");
      const badge = el("span", "badge", label);
      badge.dataset.badge = b.name;
      const what = BADGE_TITLES[b.name] || b.name.replace(/_/g, " ");
      const detail = b.name === "subscriber" && b.info ? `${b.info} months` : b.version;
      badge.title = detail && detail !== "1" ? `${what} (${detail})` : what;
      badge.setAttribute("aria-label", badge.title);
      fragment.append(badge);
    }
    return fragment;
  }

  // The author's picture where the platform serves one (YouTube).
  function avatar(author) {
    if (!author.avatar_url || !/^https:\/\//.test(author.avatar_url)) return null;
    const img = el("img", "avatar");
    img.src = author.avatar_url;
    img.alt = "";
    img.referrerPolicy = "no-referrer";
    img.loading = "lazy";
    return img;
  }

  function name(author) {
    const span = el("span", "name", author.display_name || author.login);
    span.style.color = nameColor(author.color, author.login);
    span.title = author.login;
    return span;
  }

  // A paid message's amount (Twitch bits, YouTube Super Chat/Sticker).
  function paidTag(paid) {
    const tag = el("span", "paid", paid.display || `${paid.amount_micros / 1e6} ${paid.currency}`);
    tag.title = `${paid.currency}${paid.tier ? `, tier ${paid.tier}` : ""}`;
    return tag;
  }

  function time(iso) {
    const d = new Date(iso);
    return el("span", "time", d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  }

  function baseLine(event, cursor, classes) {
    const line = el("div", `line ${classes}`);
    line.dataset.cursor = cursor;
    line.dataset.id = event.id;
    line.dataset.platform = event.platform;
    line.dataset.channel = event.channel;
    line.dataset.kind = event.kind;
    line.dataset.sentAt = event.sent_at;
    line.dataset.receivedAt = event.received_at;
    if (event.author) {
      line.dataset.login = event.author.login.toLowerCase();
      if (event.author.id) line.dataset.authorId = event.author.id;
    }
    line.append(time(event.sent_at), platformMark(event.platform));
    if (manyChannels) line.append(channelTag(event));
    return line;
  }

  function chatLine(event, cursor) {
    const line = baseLine(event, cursor, event.paid ? `${event.kind} paid` : event.kind);
    if (event.reply_to) {
      const who = event.reply_to.display_name || event.reply_to.user_login || "";
      const reply = el("span", "reply", `\u21aa @${who}: ${event.reply_to.text || ""}`);
      // What a purge of the parent or its author looks for.
      if (event.reply_to.user_id) reply.dataset.userId = event.reply_to.user_id;
      if (event.reply_to.message_id) reply.dataset.id = event.reply_to.message_id;
      line.append(reply);
    }
    if (event.paid) line.append(paidTag(event.paid));
    if (event.author) {
      const picture = avatar(event.author);
      if (picture) line.append(picture);
      line.append(badges(event.author), name(event.author));
    }
    line.append(document.createTextNode(event.kind === "action" ? " " : ": "));
    const text = el("span", "text");
    if (event.kind === "action" && event.author) {
      text.style.color = nameColor(event.author.color, event.author.login);
    }
    text.append(textWithEmotes(event.text || "", event.emotes, event.platform));
    line.append(text);
    if (commandToken && !overlay) {
      addTarget(event.platform, event.channel);
      if (event.author && event.author.id) line.append(modActions(line, event));
    }
    return line;
  }

  function noticeText(event) {
    const d = event.details || {};
    const who = event.author ? event.author.display_name || event.author.login : "Someone";
    switch (event.kind) {
      case "raid":
        return d.system_message || `${who} is raiding with ${d.viewer_count} viewers`;
      case "sub_gift":
        return d.system_message || `${who} gifted a sub to ${d.recipient && d.recipient.login}`;
      case "announcement":
        return `Announcement from ${who}`;
      default:
        return d.system_message || `${who}: ${event.kind.replace(/_/g, " ")}`;
    }
  }

  function noticeLine(event, cursor) {
    const line = baseLine(event, cursor, `notice ${event.kind}`);
    line.append(el("div", "system-message", noticeText(event)));
    if (event.text) {
      const text = el("div", "text");
      if (event.author) text.append(name(event.author), document.createTextNode(": "));
      text.append(textWithEmotes(event.text, event.emotes, event.platform));
      line.append(text);
    }
    return line;
  }

  function systemText(event) {
    const d = event.details || {};
    switch (event.kind) {
      case "ban":
        return `${d.user.display_name || d.user.login} was banned`;
      case "timeout":
        return `${d.user.display_name || d.user.login} was timed out for ${d.duration_secs}s`;
      case "chat_clear":
        return "The chat was cleared by a moderator";
      case "message_delete":
        return `A message from ${d.user_login || "a user"} was deleted`;
      case "gap":
        return `Some messages may be missing (${d.reason})`;
      case "chat_ended":
        return "The live chat ended";
      case "privacy":
        return d.action === "opt_out"
          ? "Messages were removed: the channel opted out"
          : "Messages were removed on request";
      case "stream_online":
        return `${event.channel} went live${d.title ? `: ${d.title}` : ""}`;
      case "stream_offline":
        return `${event.channel} went offline`;
      case "room_state": {
        const modes = Object.entries(d)
          .filter(([, v]) => v !== null && v !== false && v !== 0)
          .map(([k, v]) => (v === true ? k : `${k} ${v}`));
        return `Room modes: ${modes.join(", ") || "none"}`;
      }
      default:
        return event.kind;
    }
  }

  function systemLine(event, cursor) {
    const line = baseLine(event, cursor, "system");
    line.append(document.createTextNode(` ${systemText(event)} in #${event.channel}`));
    return line;
  }

  function mark(line, action) {
    if (line.dataset.moderation) return;
    if (overlay) {
      line.remove();
      return;
    }
    line.dataset.moderation = action;
    line.append(el("span", "mod-note", MODERATION_NOTES[action] || action));
  }

  function applyModeration(event) {
    const d = event.details || {};
    const lines = Array.from(chat.querySelectorAll(".line")).filter(
      (l) => l.dataset.platform === event.platform && l.dataset.channel === event.channel
        && !l.classList.contains("system"),
    );
    if (event.kind === "message_delete") {
      lines.filter((l) => l.dataset.id === d.target_message_id).forEach((l) => mark(l, "deleted"));
    } else if (event.kind === "ban" || event.kind === "timeout") {
      const login = (d.user && d.user.login || "").toLowerCase();
      const action = event.kind === "ban" ? "banned" : "timed_out";
      lines.filter((l) => l.dataset.login === login).forEach((l) => mark(l, action));
    } else if (event.kind === "chat_clear") {
      lines.forEach((l) => mark(l, "cleared"));
    }
  }

  // ------------------------------------------------ forget on request --
  //
  // A purge or opt-out (a `privacy` frame, or a channel's `privacy` event)
  // removes every line its subject covers, on the page and the overlay
  // alike (not marked like moderation: gone), and the quotes of such
  // messages in replies; a purge with a horizon only what was received
  // until then (what the subject says later is not purged). The subject
  // is the one of common::privacy:
  // {type: "user", platform, user_id} (the author's id, not the login),
  // {type: "channel", platform, channel}, {type: "message", platform,
  // message_id} or {type: "before", before} (sent earlier).

  function covers(subject, d) {
    switch (subject && subject.type) {
      case "user":
        return d.platform === subject.platform && d.authorId === subject.user_id;
      case "channel":
        return d.platform === subject.platform && d.channel === subject.channel;
      case "message":
        return d.platform === subject.platform && d.id === subject.message_id;
      case "before":
        return Date.parse(d.sentAt) < Date.parse(subject.before);
      default:
        return false;
    }
  }

  function applyPrivacy(notice) {
    const subject = notice && notice.subject;
    if (!subject) return;
    const horizon = notice.action === "purge" && notice.horizon ? Date.parse(notice.horizon) : null;
    for (const line of Array.from(chat.querySelectorAll(".line"))) {
      // The announcements themselves stay.
      if (line.dataset.kind === "privacy") continue;
      if (horizon !== null && Date.parse(line.dataset.receivedAt) > horizon) continue;
      if (covers(subject, line.dataset)) {
        line.remove();
        continue;
      }
      const reply = line.querySelector(".reply");
      if (reply && (subject.type === "user" || subject.type === "message")
        && line.dataset.platform === subject.platform
        && (subject.type === "user"
          ? reply.dataset.userId === subject.user_id
          : reply.dataset.id === subject.message_id)) {
        reply.remove();
      }
    }
  }

  function append(line) {
    const pinned = chat.scrollHeight - window.scrollY - window.innerHeight < 80;
    chat.append(line);
    while (chat.children.length > maxLines) chat.firstElementChild.remove();
    if (pinned || overlay) window.scrollTo(0, document.body.scrollHeight);
  }

  function render({ cursor, moderation, event }) {
    let line = null;
    if (STREAM_KINDS.has(event.kind)) {
      streamEvent(event, cursor);
      // Updates (viewer counts) only change the live state shown.
      if (event.kind !== "stream_update" && !overlay) append(systemLine(event, cursor));
      return;
    }
    if (event.kind === "privacy") {
      applyPrivacy(event.details);
      if (!overlay) append(systemLine(event, cursor));
      return;
    }
    if (MODERATION_KINDS.has(event.kind)) {
      applyModeration(event);
      if (!overlay) line = systemLine(event, cursor);
    } else if (CHAT_KINDS.has(event.kind)) {
      line = chatLine(event, cursor);
    } else if (NOTICE_KINDS.has(event.kind)) {
      line = noticeLine(event, cursor);
    } else if (!overlay) {
      line = systemLine(event, cursor);
    }
    if (!line) return;
    if (moderation) {
      if (overlay) return;
      mark(line, moderation.action);
    }
    append(line);
  }

  loadKnown();
  connect();
})();
