/*! piggyback.js: live page updates over plain HTTP. See docs/client.md. */
(function () {
  "use strict";

  // <a id="piggyback"> cannot make a function.
  if (window.piggyback && typeof window.piggyback.receive === "function") {
    return;
  }

  var EVENTS = "click dblclick change input submit keydown keyup focusin focusout".split(" ");
  var TRIES = 3;
  var BACKOFF = 500;

  // <img name="currentScript"> would clobber it.
  var script = document.currentScript;
  if (!script || script.nodeName !== "SCRIPT") {
    script = document.querySelector("script[data-token]");
  }
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
  var iframe = null;
  var spare = null;

  function dispatch(type, detail, target) {
    var event = document.createEvent("CustomEvent");
    event.initCustomEvent("piggyback:" + type, true, type === "expired" || type === "send",
      detail);
    if (type === "error") {
      console.error("piggyback:", detail.reason, detail);
    }
    return (target || document).dispatchEvent(event);
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

  // A lone surrogate (half an emoji) makes encodeURIComponent throw.
  function wellFormed(text) {
    return String(text).replace(/[\ud800-\udbff][\udc00-\udfff]|[\ud800-\udfff]/g,
      function (match) { return match.length > 1 ? match : "\ufffd"; });
  }

  function findTrigger(node, name) {
    var found = null;
    for (; node && node.getAttribute; node = node.parentNode) {
      if (node.hasAttribute("data-pb-ignore")) {
        return null;
      }
      found = found || (node.getAttribute("data-pb-" + name) ? node : null);
    }
    return found;
  }

  function argsOf(element) {
    var args = null;
    try {
      args = JSON.parse(element.getAttribute("data-pb-args") || "{}");
    } catch (error) {}
    if (args && typeof args === "object") {
      return args;
    }
    dispatch("error", {reason: "data-pb-args is not a JSON object", element: element});
  }

  function onEvent(event) {
    var type = event.type;
    var element = findTrigger(event.target, type);
    var key = element && element.getAttribute("data-pb-key");
    var question = element && element.getAttribute("data-pb-confirm");
    var args;
    if (!element || event.defaultPrevented || (key && /^key/.test(type) && event.key !== key)) {
      return;
    }
    if (type === "submit" || (type === "click" && element.nodeName === "A")) {
      event.preventDefault();
    }
    if (question && !window.confirm(question)) {
      return;
    }
    args = argsOf(element);
    if (args) {
      if (/^key/.test(type)) {
        args.key = event.key;
      }
      later(element, type, function () {
        send(element.getAttribute("data-pb-" + type), args, element, type);
      });
    }
  }

  function later(element, type, fire) {
    var debounce = Number(element.getAttribute("data-pb-debounce"));
    var throttle = Number(element.getAttribute("data-pb-throttle"));
    var slot = element["pb" + type] = element["pb" + type] || {next: 0};
    slot.fire = fire;
    if (debounce > 0) {
      clearTimeout(slot.timer);
      slot.timer = setTimeout(fire, debounce);
    } else if (throttle > 0) {
      slot.timer = slot.timer || setTimeout(function () {
        slot.timer = null;
        slot.next = Date.now() + throttle;
        slot.fire();
      }, slot.next - Date.now());
    } else {
      fire();
    }
  }

  function tick() {
    if (!document.hidden) {
      [].forEach.call(document.querySelectorAll("[data-pb-every]"), every);
    }
  }

  // Never two queued or in flight, so no burst after a long event.
  function every(element) {
    var now = Date.now();
    var period = element.getAttribute("data-pb-every") * 1000;
    var handler = EVENTS.map(function (type) {
      return element.getAttribute("data-pb-" + type);
    }).filter(Boolean)[0];
    var args;
    if (!(period > 0) || !handler || findTrigger(element, "every") !== element) {
      return;
    }
    element.pbNext = element.pbNext || now + period;
    if (now < element.pbNext || pending(element, "every")) {
      return;
    }
    element.pbNext = now + period;
    args = argsOf(element);
    if (args) {
      send(handler, args, element, "every");
    }
  }

  function pending(element, name) {
    return queue.concat(flight || []).some(function (event) {
      return event.element === element && (!name || event.name === name);
    });
  }

  // Back/forward would replay the frame's old request.
  function newEntry() {
    removeNode(iframe);
    iframe = null;
  }

  function onPopstate() {
    var handler = document.body.getAttribute("data-pb-popstate");
    newEntry();
    if (handler) {
      send(handler, {}, null, "popstate", location.href);
    }
  }

  function send(handler, args, element, name, value) {
    var last = queue[queue.length - 1];
    var event = {handler: handler, args: args, element: element, name: name, value: value,
      tries: 0};
    if (element) {
      event.id = element.id || undefined;
      if (/^(INPUT|SELECT|TEXTAREA)$/.test(element.nodeName)) {
        sent(element);
        event.value = element.checked || !/^(checkbox|radio)$/.test(element.type) ?
          element.value : undefined;
      }
      if (element.nodeName === "FORM") { // read now, not when sent
        event.form = element;
        event.data = new FormData(element);
        [].forEach.call(element.elements, sent);
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

  function unbusy(event) {
    if (event.element && !pending(event.element)) {
      setClass(event.element, "pb-busy", false);
    }
  }

  function next() {
    var event;
    while (!flight && queue.length) {
      event = queue.shift();
      event.seq = seq + 1;
      if (dispatch("send", event)) {
        seq = event.seq;
        flight = event;
        attempt();
      } else {
        unbusy(event);
      }
    }
  }

  function encode(params) {
    var query = "";
    for (var name in params) {
      if (params[name] !== undefined) {
        query += "&" + name + "=" + encodeURIComponent(wellFormed(params[name]));
      }
    }
    return query;
  }

  function requestFor(event) {
    var data = {v: event.value, g: JSON.stringify(event.args, function (key, value) {
      return typeof value === "string" ? wellFormed(value) : value;
    })};
    var url = config.endpoint + "?p=" + encodeURIComponent(token) + encode({s: event.seq,
      a: applied, h: event.handler, d: event.handler && config.deploy, e: event.name,
      t: event.id});
    var tail = encode(data);
    if (!event.form && (url + tail).length > 2000) {
      return {url: url + "&b=1", form: hiddenForm(data)};
    }
    return {url: url + tail, form: event.form, data: event.data};
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
    var request;
    function fail(reason) {
      if (event.request === request) {
        event.request = null;
        if (request.abort) {
          request.abort();
        }
        retry(event, reason);
      }
    }
    function arm() {
      clearTimeout(timer);
      timer = setTimeout(fail, timeout, "no answer in " + timeout + " ms");
    }
    try {
      request = requestFor(event);
    } catch (error) { // never wedge the queue
      finish(event, "error", {reason: String(error.message || error)});
      return;
    }
    request.seq = event.seq;
    request.fail = fail;
    request.progress = function (loaded, total) { // the timeout restarts
      if (event.request === request) {
        arm();
        event.form.style.setProperty("--pb-progress", total ? loaded / total : 0);
        dispatch("progress", {loaded: loaded, total: total}, event.form);
      }
    };
    event.tries += 1;
    event.request = request;
    arm();
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
    unbusy(event);
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

  function link(url) {
    var anchor = document.createElement("a");
    anchor.href = url;
    return anchor;
  }

  function redirect(url) {
    if (!/^https?:$/.test(link(url).protocol)) {
      throw new Error("not an http(s) URL: " + url);
    }
    location.assign(link(url).href);
  }

  function changeUrl(method) {
    return function (url) {
      var target = link(url);
      if (target.protocol + target.host !== location.protocol + location.host) {
        throw new Error("not a URL of this site: " + url);
      }
      history[method](null, "", target.href);
      if (method === "pushState") {
        newEntry();
      }
    };
  }

  function morph(element, html) {
    var box = (element.parentNode || element).cloneNode(false);
    var active = document.activeElement;
    var ids = {};
    box.innerHTML = String(html).trim();
    if (box.childNodes.length !== 1 || box.firstChild.nodeName !== element.nodeName) {
      element.outerHTML = html;
      return;
    }
    [].forEach.call(element.querySelectorAll("[id]"), function (node) {
      ids["#" + node.id] = node;
    });
    morphNode(element, box.firstChild, ids);
    if (active !== document.activeElement && element.contains(active)) {
      active.focus(); // it was moved, which blurs it
    }
  }

  function sent(control) {
    control.pbSent = control.value + control.checked;
  }

  function morphNode(from, to, ids) {
    var i;
    var attribute;
    if (from.nodeType !== 1) {
      if (from.nodeValue !== to.nodeValue) {
        from.nodeValue = to.nodeValue;
      }
      return;
    }
    // Once sent, the user's value yields to the server's (docs/client.md).
    if (from.pbSent === from.value + from.checked && from !== document.activeElement) {
      from.value = to.value;
      from.checked = to.checked;
    }
    for (i = from.attributes.length - 1; i >= 0; i--) {
      attribute = from.attributes[i].name;
      if (!to.hasAttribute(attribute)) {
        from.removeAttribute(attribute);
      }
    }
    for (i = 0; i < to.attributes.length; i++) {
      attribute = to.attributes[i];
      if (from.getAttribute(attribute.name) !== attribute.value) {
        from.setAttribute(attribute.name, attribute.value);
      }
    }
    morphChildren(from, to, ids);
  }

  function morphChildren(from, to, ids) {
    var cursor = from.firstChild; // the first old child not matched
    var child = to.firstChild;
    var after;
    var match;
    while (child) {
      after = child.nextSibling;
      match = findMatch(from, cursor, child, ids);
      if (!match) { // new, but keeps old ids inside
        match = from.insertBefore(child.cloneNode(false), cursor);
      } else if (match.parentNode !== from || elementsUntil(cursor, match) > 1) {
        from.insertBefore(match, cursor);
      } else { // one old element goes instead; its id brings it back
        removeUntil(cursor, match);
        cursor = match.nextSibling;
      }
      morphNode(match, child, ids);
      child = after;
    }
    removeUntil(cursor, null);
  }

  function elementsUntil(node, end) {
    for (var count = 0; node && node !== end; node = node.nextSibling) {
      count += node.nodeType === 1 ? 1 : 0;
    }
    return count;
  }

  function removeUntil(node, end) {
    var after;
    for (; node && node !== end; node = after) {
      after = node.nextSibling;
      removeNode(node);
    }
  }

  // By id, else by the first id inside, else the first of the tag without an id.
  function findMatch(parent, cursor, child, ids) {
    var inner = child.nodeType === 1 && (child.id ? child : child.querySelector("[id]"));
    var held = inner && ids["#" + inner.id];
    var first = null;
    function same(node) {
      return node.nodeName === child.nodeName && (!node.id || node === held) &&
        !node.contains(parent);
    }
    while (held && !child.id && held.parentNode && held.parentNode !== parent) {
      held = held.parentNode;
    }
    if (held && same(held) && (child.id || !held.parentNode)) {
      return held;
    }
    for (; cursor; cursor = cursor.nextSibling) {
      if (cursor === held && same(held)) {
        return held;
      }
      first = first || (same(cursor) ? cursor : null);
    }
    return first;
  }

  var commands = {
    js: runScript,
    call: callPath,
    redirect: redirect,
    text: function (id, text) { byId(id).textContent = text; },
    html: function (id, html) { byId(id).innerHTML = html; },
    replace: function (id, html) { byId(id).outerHTML = html; },
    morph: function (id, html) { morph(byId(id), html); },
    append: function (id, html) { byId(id).insertAdjacentHTML("beforeend", html); },
    remove: function (id) { removeNode(byId(id)); },
    attr: function (id, name, value) { setAttr(byId(id), name, value); },
    addClass: function (id, name) { setClass(byId(id), name, true); },
    removeClass: function (id, name) { setClass(byId(id), name, false); },
    value: function (id, value) { byId(id).value = value; },
    focus: function (id) { byId(id).focus(); },
    pushUrl: changeUrl("pushState"),
    replaceUrl: changeUrl("replaceState")
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
    var waiting = queue.some(function (event) { return !event.handler; });
    if (pollTimer && !document.hidden && !waiting) {
      send();
    }
  }

  function setPoll(seconds) {
    clearInterval(pollTimer);
    pollTimer = seconds > 0 ? setInterval(poll, seconds * 1000) : null;
  }

  function report(request, text) {
    try {
      text = JSON.parse(/receive\(([\s\S]*)\)<\/script>/.exec(text)[1]);
    } catch (error) {
      return request.fail("the response did not report back");
    }
    receive(text);
  }

  // A POST goes by XMLHttpRequest: only it reports upload progress.
  function fetchTransport(request) {
    if (request.form) {
      return postTransport(request);
    }
    fetch(request.url, {credentials: "same-origin", cache: "no-store"}).then(function (response) {
      return response.text();
    }).then(function (text) {
      report(request, text);
    }, function () {
      request.fail("the response did not report back");
    });
  }

  function postTransport(request) {
    var xhr = new XMLHttpRequest();
    xhr.open("POST", request.url);
    xhr.upload.onprogress = function (event) {
      request.progress(event.loaded, event.total);
    };
    xhr.onload = function () {
      report(request, xhr.responseText);
    };
    xhr.onerror = function () {
      request.fail("the response did not report back");
    };
    request.abort = function () {
      xhr.abort();
    };
    xhr.send(request.data || new FormData(request.form)); // before: <input name="style">
    request.form.style.setProperty("--pb-progress", 0);
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

  window.piggyback = {send: send, receive: receive, morph: morph,
    transport: window.fetch && config.transport !== "iframe" ? fetchTransport : iframeTransport};

  EVENTS.forEach(function (type) {
    document.addEventListener(type, onEvent);
  });
  document.addEventListener("visibilitychange", poll);
  window.addEventListener("popstate", onPopstate);
  setInterval(tick, 250);
  setPoll(Number(config.poll));
})();
