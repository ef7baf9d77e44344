/*! piggyback.js: live page updates over plain HTTP. See docs/client.md. */
(function () {
  "use strict";

  if (window.piggyback) {
    return;
  }

  var EVENTS = "click dblclick change input submit keydown keyup focusin focusout".split(" ");
  var TRIES = 3;
  var BACKOFF = 500;

  var script = document.currentScript || document.querySelector("script[data-token]");
  var config = script.dataset;
  var token = config.token;
  var timeout = Number(config.timeout) || 10000;
  var nonce = script.nonce || script.getAttribute("nonce");

  var seq = 0;
  var applied = 0;
  var queue = [];
  var flight = null;
  var timer = null;
  var pollTimer = null;
  var iframe = null; // GETs reuse it
  var spare = null;

  function dispatch(type, detail) {
    var event = document.createEvent("CustomEvent");
    event.initCustomEvent("piggyback:" + type, true, type === "expired", detail);
    if (type === "error") {
      console.error("piggyback:", detail.reason, detail);
    }
    return document.dispatchEvent(event);
  }

  function setClass(element, name, on) {
    var names = (" " + (element.getAttribute("class") || "") + " ").replace(" " + name + " ", " ");
    element.setAttribute("class", (on ? names + name : names).trim());
  }

  function setAttr(element, name, value) {
    if (value === null) {
      element.removeAttribute(name);
    } else {
      element.setAttribute(name, value);
    }
  }

  function removeNode(node) {
    if (node && node.parentNode) {
      node.parentNode.removeChild(node);
    }
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
    if (/^key/.test(type)) {
      args.key = event.key;
    }
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
      if (element.nodeName === "FORM") {
        event.form = element;
      }
      setClass(element, "pb-busy", true);
    }
    if (name === "input" && last && last.name === name &&
        last.element === element && last.handler === handler) {
      queue.pop();
    }
    queue.push(event);
    next();
  }

  function inQueue(key, value) {
    return queue.some(function (event) { return event[key] === value; });
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

  function encode(params) {
    var query = "";
    for (var name in params) {
      if (params[name] !== undefined) {
        query += "&" + name + "=" + encodeURIComponent(params[name]);
      }
    }
    return query;
  }

  function requestFor(event) {
    var data = {v: event.value, g: JSON.stringify(event.args)};
    var url = config.endpoint + "?p=" + encodeURIComponent(token) + encode({s: event.seq,
      a: applied, h: event.handler, d: event.handler && config.deploy, e: event.name,
      t: event.id});
    var tail = encode(data);
    if (!event.form && (url + tail).length > 2000) {
      return {url: url + "&b=1", form: hiddenForm(data)};
    }
    return {url: url + tail, form: event.form};
  }

  function hiddenForm(data) {
    var form = document.createElement("form");
    var input;
    for (var name in data) {
      if (data[name] !== undefined) {
        input = form.appendChild(document.createElement("input"));
        input.type = "hidden";
        input.name = name;
        input.value = data[name];
      }
    }
    return document.body.appendChild(form);
  }

  function attempt() {
    var event = flight;
    var request = requestFor(event);
    function fail(reason) {
      if (event.request === request) {
        event.request = null;
        if (request.abort) {
          request.abort();
        }
        retry(event, reason);
      }
    }
    request.seq = event.seq;
    request.fail = fail;
    event.tries += 1;
    event.request = request;
    timer = setTimeout(fail, timeout, "no answer in " + timeout + " ms");
    window.piggyback.transport(request);
    if (request.form !== event.form) {
      removeNode(request.form);
    }
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
    flight = null;
    detail.seq = event.seq;
    detail.element = event.element;
    if (event.element && !inQueue("element", event.element)) {
      setClass(event.element, "pb-busy", false);
    }
    var allowed = dispatch(type, detail);
    if (type === "expired") {
      setPoll(0);
      if (allowed) {
        location.reload();
      }
    }
    next();
  }

  function receive(reply) {
    var event = flight;
    if (!event || !event.request || reply.seq !== event.seq) {
      return;
    }
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
    (reply.batches || []).forEach(function (batch) {
      if (batch.seq > applied) {
        run(batch.commands || [], batch.seq);
        applied = batch.seq;
      }
      if (batch.seq === event.seq && batch.error) {
        dispatch("error", {reason: batch.error, seq: event.seq, element: event.element});
      }
    });
    if (reply.poll >= 0) {
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
    document.head.appendChild(element);
    removeNode(element);
    window.removeEventListener("error", onError);
    if (thrown) {
      throw thrown;
    }
  }

  function callPath(path, args) {
    var names = path.split(".");
    var owner = window;
    while (names.length > 1) {
      owner = owner[names.shift()];
    }
    owner[names[0]].apply(owner, args);
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
    remove: function (id) { removeNode(byId(id)); },
    attr: function (id, name, value) { setAttr(byId(id), name, value); },
    addClass: function (id, name) { setClass(byId(id), name, true); },
    removeClass: function (id, name) { setClass(byId(id), name, false); },
    value: function (id, value) { byId(id).value = value; },
    focus: function (id) { byId(id).focus(); }
  };

  function run(list, batchSeq) {
    list.forEach(function (command) {
      try {
        commands[command[0]].apply(null, command.slice(1));
      } catch (error) {
        dispatch("error", {reason: String(error.message || error), command: command,
          seq: batchSeq});
      }
    });
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

  function fetchTransport(request) {
    fetch(request.url, {
      method: request.form ? "POST" : "GET",
      body: request.form && new FormData(request.form),
      credentials: "same-origin",
      cache: "no-store"
    }).then(function (response) {
      return response.text();
    }).then(function (text) {
      receive(JSON.parse(/receive\(([\s\S]*)\)<\/script>/.exec(text)[1]));
    }).catch(function () {
      request.fail("the response did not report back");
    });
  }

  function newFrame() {
    var frame = document.createElement("iframe");
    frame.style.display = "none";
    return document.documentElement.appendChild(frame);
  }

  function iframeTransport(request) {
    var frame = iframe;
    if (request.form || !frame) {
      removeNode(frame);
      frame = iframe = spare || newFrame();
      frame.contentWindow.name = "piggyback";
      spare = null;
    }
    request.abort = function () {
      removeNode(frame);
      iframe = null;
    };
    frame.onload = function () {
      var doc = frame.contentDocument;
      if (!doc || doc.URL !== "about:blank") {
        request.fail("the response did not report back");
      }
      if (request.form) {
        spare = spare || newFrame();
      }
    };
    if (request.form) {
      post(request.form, {action: request.url, method: "post",
        enctype: "multipart/form-data", target: "piggyback"});
    } else {
      frame.contentWindow.location.replace(request.url); // no history entry
    }
  }

  function post(form, changes) {
    var saved = {};
    for (var name in changes) {
      saved[name] = form.getAttribute(name);
      form.setAttribute(name, changes[name]);
    }
    HTMLFormElement.prototype.submit.call(form); // even with a field named "submit"
    for (name in changes) {
      setAttr(form, name, saved[name]);
    }
  }

  window.piggyback = {send: send, receive: receive,
    transport: window.fetch && config.transport !== "iframe" ? fetchTransport : iframeTransport};

  EVENTS.forEach(function (type) {
    document.addEventListener(type, onEvent);
  });
  document.addEventListener("visibilitychange", poll);
  setPoll(Number(config.poll));
})();
