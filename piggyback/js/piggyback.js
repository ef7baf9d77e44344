/*! piggyback.js: live page updates over plain HTTP (docs/protocol.md).
 * ES5, no dependencies, no build. Budget: 3,500 bytes gzip -9 as shipped.
 * Script tag: data-token, data-endpoint, data-poll (s), data-timeout (ms a try;
 * 3 tries), nonce. Markup: data-pb-EVENT="handler" (EVENTS), data-pb-args='{}'.
 * Sent: the element's id, a form control's value (checkbox, radio: only when
 * checked), args.key on keydown/keyup. Events on document: piggyback:send, done,
 * error, expired (cancelable: reloads). Queued or in flight: class pb-busy.
 */
(function () {
  "use strict";

  if (window.piggyback) {
    return;
  }

  var EVENTS = "click dblclick change input submit keydown keyup focusin focusout".split(" ");
  var TRIES = 3;
  var BACKOFF = 500; // ms, times the tries so far

  var script = document.currentScript || document.querySelector("script[data-token]");
  var config = script.dataset;
  var token = config.token;
  var timeout = Number(config.timeout) || 10000;
  var nonce = script.nonce || script.getAttribute("nonce");

  var seq = 0;
  var applied = 0; // the highest batch seq applied, sent as the acknowledgement
  var queue = [];
  var flight = null;
  var timer = null;
  var pollTimer = null;

  function dispatch(type, detail) {
    var event = document.createEvent("CustomEvent");
    event.initCustomEvent("piggyback:" + type, true, type === "expired", detail);
    if (type === "error") {
      console.error("piggyback:", detail.reason, detail);
    }
    document.dispatchEvent(event);
    return event;
  }

  function setClass(element, name, on) {
    var names = (" " + (element.getAttribute("class") || "") + " ").replace(" " + name + " ", " ");
    element.setAttribute("class", (on ? names + name : names).trim());
  }

  function onEvent(event) {
    var type = event.type;
    var element = event.target;
    var args;
    while (element && !(element.getAttribute && element.getAttribute("data-pb-" + type))) {
      element = element.parentNode;
    }
    if (!element) {
      return;
    }
    if (type === "submit" || (type === "click" && element.nodeName === "A")) {
      event.preventDefault();
    }
    try {
      args = JSON.parse(element.getAttribute("data-pb-args") || "{}");
    } catch (error) {
      args = null;
    }
    if (!args || typeof args !== "object") {
      dispatch("error", {reason: "data-pb-args is not a JSON object", element: element});
      return;
    }
    if (type === "keydown" || type === "keyup") {
      args.key = event.key;
    }
    // Seam: a submit's form fields will go as a POST body.
    send(element.getAttribute("data-pb-" + type), args, element, type);
  }

  function send(handler, args, element, name) {
    var last = queue[queue.length - 1];
    var event = {handler: handler, args: args, element: element, name: name, tries: 0};
    if (element) {
      event.id = element.id || undefined;
      if (/^(INPUT|SELECT|TEXTAREA)$/.test(element.nodeName) &&
          (element.checked || !/^(checkbox|radio)$/.test(element.type))) {
        event.value = element.value;
      }
      setClass(element, "pb-busy", true);
    }
    if (name === "input" && last && last.name === name &&
        last.element === element && last.handler === handler) {
      queue.pop(); // typing: the newer value replaces it
    }
    queue.push(event);
    next();
  }

  function inQueue(key, value) {
    for (var i = 0; i < queue.length; i += 1) {
      if (queue[i][key] === value) {
        return true;
      }
    }
    return false;
  }

  function next() {
    if (flight || !queue.length) {
      return;
    }
    flight = queue.shift();
    seq += 1;
    flight.seq = seq;
    dispatch("send", flight);
    attempt();
  }

  function urlFor(event) {
    var params = {p: token, s: event.seq, a: applied, h: event.handler, e: event.name,
      t: event.id, v: event.value, g: JSON.stringify(event.args)};
    var query = [];
    for (var name in params) {
      if (params[name] !== undefined) {
        query.push(name + "=" + encodeURIComponent(params[name]));
      }
    }
    return config.endpoint + "?" + query.join("&");
  }

  function attempt() {
    var event = flight;
    var request = {url: urlFor(event), seq: event.seq, fail: fail};
    function fail(reason) {
      if (event.request === request) {
        event.request = null;
        retry(event, reason);
      }
    }
    event.tries += 1;
    event.request = request;
    timer = setTimeout(fail, timeout, "no answer in " + timeout + " ms");
    window.piggyback.transport(request);
  }

  function retry(event, reason, code) {
    clearTimeout(timer);
    if (event.tries < TRIES) {
      timer = setTimeout(attempt, BACKOFF * event.tries);
    } else {
      finish(event, "error", {reason: reason, code: code});
    }
  }

  function finish(event, type, detail) {
    var outcome;
    flight = null;
    detail.seq = event.seq;
    detail.element = event.element;
    if (event.element && !inQueue("element", event.element)) {
      setClass(event.element, "pb-busy", false);
    }
    outcome = dispatch(type, detail);
    if (type === "expired") {
      setPoll(0);
      if (!outcome.defaultPrevented) {
        location.reload();
      }
    }
    next();
  }

  function receive(reply) {
    var event = flight;
    var request = event && event.request;
    if (!request || reply.seq !== event.seq) {
      return;
    }
    request.answered = true;
    event.request = null;
    clearTimeout(timer);
    token = reply.token || token;
    if (reply.code === "busy") {
      retry(event, reply.error, reply.code);
    } else if (reply.code) {
      finish(event, reply.code === "expired" ? "expired" : "error",
        {reason: reply.error, code: reply.code});
    } else {
      apply(event, reply);
      finish(event, "done", {reply: reply});
    }
  }

  function apply(event, reply) {
    var batches = reply.batches || [];
    var batch;
    for (var i = 0; i < batches.length; i += 1) {
      batch = batches[i];
      if (batch.seq > applied) {
        run(batch.commands || [], batch.seq);
        applied = batch.seq;
      }
      if (batch.seq === event.seq && batch.error) {
        dispatch("error", {reason: batch.error, seq: event.seq, element: event.element});
      }
    }
    if (typeof reply.poll === "number") {
      setPoll(reply.poll);
    }
  }

  function byId(id) {
    var element = document.getElementById(id);
    if (!element) {
      throw new Error("no element #" + id);
    }
    return element;
  }

  function runScript(code) {
    var element = document.createElement("script");
    var thrown = null;
    function onError(event) {
      thrown = event.error || event.message;
      event.preventDefault();
    }
    element.text = code;
    element.setAttribute("nonce", nonce || "");
    window.addEventListener("error", onError);
    document.head.appendChild(element); // runs now, in the global scope
    document.head.removeChild(element);
    window.removeEventListener("error", onError);
    if (thrown) {
      throw thrown;
    }
  }

  function callPath(path, args) {
    var names = path.split(".");
    var last = names.pop();
    var owner = window;
    while (names.length) {
      owner = owner[names.shift()];
    }
    owner[last].apply(owner, args);
  }

  function redirect(url) {
    var link = document.createElement("a");
    link.href = url;
    if (!/^https?:$/.test(link.protocol)) {
      throw new Error("not an http(s) URL: " + url);
    }
    location.assign(link.href);
  }

  var commands = {
    js: runScript,
    call: callPath,
    redirect: redirect,
    text: function (id, text) { byId(id).textContent = text; },
    html: function (id, html) { byId(id).innerHTML = html; },
    replace: function (id, html) { byId(id).outerHTML = html; },
    append: function (id, html) { byId(id).insertAdjacentHTML("beforeend", html); },
    remove: function (id) { byId(id).parentNode.removeChild(byId(id)); },
    attr: function (id, name, value) {
      if (value === null) {
        byId(id).removeAttribute(name);
      } else {
        byId(id).setAttribute(name, value);
      }
    },
    addClass: function (id, name) { setClass(byId(id), name, true); },
    removeClass: function (id, name) { setClass(byId(id), name, false); },
    value: function (id, value) { byId(id).value = value; },
    focus: function (id) { byId(id).focus(); }
  };

  function run(list, batchSeq) {
    for (var i = 0; i < list.length; i += 1) {
      try {
        commands[list[i][0]].apply(null, list[i].slice(1));
      } catch (error) {
        dispatch("error", {reason: String(error.message || error), command: list[i],
          seq: batchSeq});
      }
    }
  }

  function poll() {
    if (pollTimer && !document.hidden && !inQueue("handler", undefined)) {
      send();
    }
  }

  function setPoll(seconds) {
    clearInterval(pollTimer);
    pollTimer = seconds > 0 ? setInterval(poll, seconds * 1000) : null;
  }

  var frame = null;
  var loading = null;
  var waiting = null;

  function iframeTransport(request) {
    if (!frame) {
      frame = document.createElement("iframe");
      frame.style.display = "none";
      frame.setAttribute("tabindex", "-1");
      frame.setAttribute("aria-hidden", "true");
      document.body.appendChild(frame);
      frame.addEventListener("load", onFrameLoad);
    }
    if (loading && loading.answered) {
      waiting = request; // until that document's load, lest it count as this one's
      return;
    }
    if (loading) {
      // Stop the try still loading, or Chrome ignores a new one to the same URL.
      frame.contentWindow.location.replace("about:blank");
    }
    loading = request;
    waiting = null;
    frame.contentWindow.location.replace(request.url); // no history entry
  }

  function onFrameLoad() {
    var request = loading;
    var doc = frame.contentDocument; // null for a browser's error page
    if (doc && doc.URL === "about:blank") {
      return;
    }
    loading = null;
    if (request && !request.answered) {
      request.fail("the response did not report back");
    }
    if (waiting) {
      iframeTransport(waiting);
    }
  }

  window.piggyback = {send: send, receive: receive, transport: iframeTransport};

  for (var i = 0; i < EVENTS.length; i += 1) {
    document.addEventListener(EVENTS[i], onEvent);
  }
  document.addEventListener("visibilitychange", poll);
  setPoll(Number(config.poll));
})();
