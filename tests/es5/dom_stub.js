/* A tiny browser for piggyback.js in an ECMAScript 5 engine (tests/test_es5_engine.py).

   Just the DOM the client's core needs, and on purpose nothing more: no fetch, no
   CustomEvent constructor, no classList, no Promise. A client that reaches for anything
   else fails here with a TypeError. Timers run on a fake clock (stub.advance); hidden
   iframes record each navigation and form post as a request, and load the answer the
   test hands over (stub.deliver), running its script with `parent` set to this window,
   as the real answer document does. What the page saw is kept in `stub`; driver.js
   prints it. */

var window = this;

var stub = {
  now: 0,
  timers: [],
  timerIds: 0,
  requests: [],
  frames: 0,
  seen: [],
  calls: [],
  console: [],
  frameOf: [],
  reloads: 0,
  assigned: []
};

function Listeners() {
  this.types = {};
}

Listeners.prototype.add = function (type, listener) {
  var list = this.types[type] || (this.types[type] = []);
  if (list.indexOf(listener) < 0) {
    list.push(listener);
  }
};

Listeners.prototype.remove = function (type, listener) {
  var list = this.types[type] || [];
  if (list.indexOf(listener) >= 0) {
    list.splice(list.indexOf(listener), 1);
  }
};

Listeners.prototype.fire = function (event) {
  var list = (this.types[event.type] || []).slice();
  for (var i = 0; i < list.length; i++) {
    list[i].call(null, event);
  }
  return !event.defaultPrevented;
};

/* Events: what document.createEvent("CustomEvent") gives in Internet Explorer 9 to 11. */

function StubEvent(type, cancelable) {
  this.type = type;
  this.cancelable = cancelable;
  this.defaultPrevented = false;
}

StubEvent.prototype.preventDefault = function () {
  if (this.cancelable) {
    this.defaultPrevented = true;
  }
};

StubEvent.prototype.initCustomEvent = function (type, bubbles, cancelable, detail) {
  this.type = type;
  this.bubbles = bubbles;
  this.cancelable = cancelable;
  this.detail = detail;
};

/* Elements */

function Element(name) {
  this.nodeName = name.toUpperCase();
  this.attributes = {};
  this.childNodes = [];
  this.parentNode = null;
  this.style = {};
}

Element.prototype.getAttribute = function (name) {
  return this.attributes.hasOwnProperty(name) ? this.attributes[name] : null;
};

Element.prototype.hasAttribute = function (name) {
  return this.attributes.hasOwnProperty(name);
};

Element.prototype.setAttribute = function (name, value) {
  this.attributes[name] = String(value);
  if (name === "id") {
    this.id = String(value);
  }
};

Element.prototype.removeAttribute = function (name) {
  delete this.attributes[name];
};

Element.prototype.appendChild = function (child) {
  if (child.parentNode) {
    child.parentNode.removeChild(child);
  }
  this.childNodes.push(child);
  child.parentNode = this;
  if (isConnected(child)) {
    child.connected();
  }
  return child;
};

Element.prototype.removeChild = function (child) {
  var index = this.childNodes.indexOf(child);
  if (index < 0) {
    throw new Error("removeChild: not a child of " + this.nodeName);
  }
  this.childNodes.splice(index, 1);
  child.parentNode = null;
  child.disconnected();
  return child;
};

Element.prototype.connected = function () {
  if (this.nodeName === "SCRIPT" && this.text !== undefined) {
    runScript(this);
  }
  for (var i = 0; i < this.childNodes.length; i++) {
    this.childNodes[i].connected();
  }
};

Element.prototype.disconnected = function () {
  for (var i = 0; i < this.childNodes.length; i++) {
    this.childNodes[i].disconnected();
  }
};

Element.prototype.descendants = function () {
  var all = [];
  for (var i = 0; i < this.childNodes.length; i++) {
    all.push(this.childNodes[i]);
    all = all.concat(this.childNodes[i].descendants());
  }
  return all;
};

function isConnected(node) {
  while (node && node !== document.documentElement) {
    node = node.parentNode;
  }
  return !!node;
}

/* A script element runs when it enters the document; an error in it becomes an "error"
   event on window, as in a browser, and never reaches the code that inserted it. */
function runScript(element) {
  var event;
  try {
    Function(element.text)();
  } catch (error) {
    event = new StubEvent("error", true);
    event.error = error;
    event.message = String(error.message || error);
    windowListeners.fire(event);
  }
}

/* Hidden iframes: the window (with its location) exists while the frame is in the
   document; a navigation is a request that stays pending until the test delivers an
   answer; removing the frame stops it. */

function Frame() {
  Element.call(this, "iframe");
  this.number = ++stub.frames;
  this.contentWindow = null;
  this.contentDocument = null;
  this.pending = null;
  this.navigations = 0;
  this.onload = null;
}

Frame.prototype = Object.create(Element.prototype);

Frame.prototype.connected = function () {
  var frame = this;
  frame.contentDocument = {URL: "about:blank"};
  frame.contentWindow = {name: "", location: {replace: function (url) {
    frame.navigate({method: "GET", via: "replace", url: url});
  }}};
};

Frame.prototype.disconnected = function () {
  if (this.pending) {
    this.pending.stopped = true;
  }
  this.pending = null;
  this.contentWindow = null;
  this.contentDocument = null;
};

Frame.prototype.navigate = function (request) {
  request.frame = this.number;
  request.name = this.contentWindow.name;
  request.stopped = false;
  if (this.pending) {
    this.pending.stopped = true;
  }
  this.pending = request;
  this.navigations += 1;
  request.index = stub.requests.length;
  stub.requests.push(request);
  stub.frameOf[request.index] = this;
};

/* The frame parses `html`: each script runs with `parent` set to this window, then the
   load event fires, unless a script navigated the frame again (that stops the document,
   whose load never comes). */
Frame.prototype.load = function (request, html) {
  var scripts = html.match(/<script>[\s\S]*?<\/script>/g) || [];
  var navigations = this.navigations;
  this.pending = null;
  this.contentDocument = {URL: request.url};
  for (var i = 0; i < scripts.length; i++) {
    Function("parent", scripts[i].slice(8, -9)).call(this.contentWindow, window);
  }
  if (this.navigations === navigations && this.contentWindow && this.onload) {
    this.onload.call(this, new StubEvent("load", false));
  }
};

/* Deliver `html` as the answer to request number `index`. */
stub.deliver = function (index, html) {
  var request = stub.requests[index];
  if (!request) {
    throw new Error("there is no request number " + index);
  }
  if (request.stopped) {
    throw new Error("request number " + index + " was stopped; its answer cannot arrive");
  }
  stub.frameOf[index].load(request, html);
};

function HTMLFormElement() {
}

/* A form posts its fields into the one connected frame its target names. */
HTMLFormElement.prototype.submit = function () {
  var form = this;
  var target = form.getAttribute("target");
  if (form.nodeName !== "FORM") {
    throw new TypeError("HTMLFormElement.prototype.submit called on a " + form.nodeName);
  }
  var frames = document.documentElement.descendants().filter(function (node) {
    return node.nodeName === "IFRAME" && node.contentWindow.name === target;
  });
  var fields = {};
  if (frames.length !== 1) {
    throw new Error("a form posts to " + JSON.stringify(target) + " but " + frames.length +
      " frames have that name");
  }
  form.descendants().forEach(function (node) {
    if (node.nodeName === "INPUT" && node.name) {
      fields[node.name] = String(node.value);
    }
  });
  frames[0].navigate({method: form.getAttribute("method").toUpperCase(), via: "submit",
    url: form.getAttribute("action"), enctype: form.getAttribute("enctype"), fields: fields});
};

/* The document */

var documentListeners = new Listeners();
var windowListeners = new Listeners();

var document = {
  hidden: false,
  currentScript: null,
  addEventListener: function (type, listener) {
    documentListeners.add(type, listener);
  },
  removeEventListener: function (type, listener) {
    documentListeners.remove(type, listener);
  },
  dispatchEvent: function (event) {
    event.target = event.target || document;
    return documentListeners.fire(event);
  },
  createEvent: function (kind) {
    if (kind !== "CustomEvent") {
      throw new Error("the stub has no " + kind + " events");
    }
    return new StubEvent("", false);
  },
  createElement: function (name) {
    if (name.toLowerCase() === "iframe") {
      return new Frame();
    }
    return new Element(name);
  },
  /* Only the selectors the client uses: TAG[ATTRIBUTE] where document.currentScript is
     missing (IE), and [ATTRIBUTE] for the elements of data-pb-every. */
  querySelectorAll: function (selector) {
    var parts = /^([a-z]*)\[([a-z-]+)\]$/.exec(selector);
    if (!parts) {
      throw new Error("the stub knows only the selectors [attribute] and tag[attribute]: " +
        selector);
    }
    return document.documentElement.descendants().filter(function (node) {
      return (!parts[1] || node.nodeName === parts[1].toUpperCase()) &&
        node.getAttribute(parts[2]) !== null;
    });
  },
  querySelector: function (selector) {
    return document.querySelectorAll(selector)[0] || null;
  },
  getElementById: function (id) {
    var all = document.documentElement.descendants();
    for (var i = 0; i < all.length; i++) {
      if (all[i].id === id) {
        return all[i];
      }
    }
    return null;
  }
};

document.documentElement = new Element("html");
document.head = document.documentElement.appendChild(new Element("head"));
document.body = document.documentElement.appendChild(new Element("body"));

window.addEventListener = function (type, listener) {
  windowListeners.add(type, listener);
};

window.removeEventListener = function (type, listener) {
  windowListeners.remove(type, listener);
};

var location = {
  href: "http://example.test/page",
  reload: function () {
    stub.reloads += 1;
  },
  assign: function (url) {
    stub.assigned.push(url);
  }
};

/* mujs has a console of its own, which would print into the driver's output. */
var console = {
  error: function () {
    stub.console.push(Array.prototype.slice.call(arguments).map(String).join(" "));
  }
};

/* Timers on a fake clock. Like every browser since Internet Explorer 10, extra arguments
   to setTimeout are passed to the callback. */

function addTimer(callback, delay, args, every) {
  stub.timerIds += 1;
  stub.timers.push({id: stub.timerIds, due: stub.now + (Number(delay) || 0),
    callback: callback, args: args, every: every});
  return stub.timerIds;
}

function removeTimer(id) {
  stub.timers = stub.timers.filter(function (timer) {
    return timer.id !== id;
  });
}

function setTimeout(callback, delay) {
  return addTimer(callback, delay, Array.prototype.slice.call(arguments, 2), 0);
}

function setInterval(callback, delay) {
  return addTimer(callback, delay, Array.prototype.slice.call(arguments, 2),
    Math.max(1, Number(delay) || 0));
}

var clearTimeout = removeTimer;
var clearInterval = removeTimer;

/* Run every timer due within `ms`, earliest first (in the order they were set when due
   together), each at its own time. */
stub.advance = function (ms) {
  var end = stub.now + ms;
  var timer;
  for (;;) {
    timer = null;
    stub.timers.forEach(function (candidate) {
      if (candidate.due <= end && (!timer || candidate.due < timer.due)) {
        timer = candidate;
      }
    });
    if (!timer) {
      break;
    }
    stub.now = timer.due;
    if (timer.every) {
      timer.due += timer.every;
    } else {
      removeTimer(timer.id);
    }
    timer.callback.apply(null, timer.args);
  }
  stub.now = end;
};
