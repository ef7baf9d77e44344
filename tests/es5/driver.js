/* Runs piggyback.js in the stub browser under mujs (tests/test_es5_engine.py).

   mujs driver.js DOM_STUB CLIENT PLAN: PLAN is a JSON file {"page": ..., "steps": [...]}.
   The driver builds the page, loads the client (page.loads times), runs the steps in
   order and prints what the page saw as one JSON object. */

load(scriptArgs[0]);

var plan = JSON.parse(read(scriptArgs[2]));

/* A JSON copy of an event's detail: elements become "#id", functions are left out. */
function plain(value, depth) {
  var copy = {};
  if (value === null || typeof value !== "object") {
    return value;
  }
  if (value.nodeName) {
    return "#" + (value.id || value.nodeName.toLowerCase());
  }
  if (depth > 3) {
    return "...";
  }
  if (Array.isArray(value)) {
    return value.map(function (item) {
      return plain(item, depth + 1);
    });
  }
  for (var key in value) {
    if (typeof value[key] !== "function" && value[key] !== undefined) {
      copy[key] = plain(value[key], depth + 1);
    }
  }
  return copy;
}

function buildPage(page) {
  var script = document.createElement("script");
  page.elements.forEach(function (spec) {
    var element = document.body.appendChild(document.createElement(spec.tag));
    for (var name in spec.attributes) {
      element.setAttribute(name, spec.attributes[name]);
    }
  });
  for (var name in page.data) {
    script.setAttribute("data-" + name, page.data[name]);
  }
  script.dataset = page.data;
  script.nonce = page.nonce;
  document.body.appendChild(script);
  window.record = function () {
    stub.calls.push(Array.prototype.slice.call(arguments));
  };
  ["send", "done", "error", "expired"].forEach(function (type) {
    document.addEventListener("piggyback:" + type, function (event) {
      stub.seen.push({type: type, cancelable: event.cancelable, bubbles: event.bubbles,
        detail: plain(event.detail, 0)});
      if (type === "expired" && stub.keepExpired) {
        event.preventDefault();
      }
    });
  });
  return script;
}

/* The client runs as the script element the page loaded it from, which it finds as
   document.currentScript, or (Internet Explorer has none) by its data-token. */
function loadClient(script, current) {
  document.currentScript = current ? script : undefined;
  load(scriptArgs[1]);
  document.currentScript = current ? null : undefined;
}

var steps = {
  send: function (handler, args, id) {
    window.piggyback.send(handler, args, id ? document.getElementById(id) : undefined);
  },
  /* A DOM event on an element, as the browser dispatches it to document's listeners. */
  dom: function (type, id) {
    var event = new StubEvent(type, true);
    event.target = document.getElementById(id);
    document.dispatchEvent(event);
  },
  advance: function (ms) {
    stub.advance(ms);
  },
  deliver: function (index, html) {
    stub.deliver(index < 0 ? stub.requests.length + index : index, html);
  },
  receive: function (reply) {
    window.piggyback.receive(reply);
  },
  keepExpired: function () {
    stub.keepExpired = true;
  },
  hide: function (hidden) {
    document.hidden = hidden;
    document.dispatchEvent(new StubEvent("visibilitychange", false));
  }
};

var script = buildPage(plan.page);
for (var i = 0; i < plan.page.loads; i++) {
  loadClient(script, plan.page.currentScript);
}
plan.steps.forEach(function (step) {
  steps[step[0]].apply(null, step.slice(1));
});

print(JSON.stringify({
  fetch: typeof fetch,
  api: Object.keys(window.piggyback).sort(),
  requests: stub.requests.map(function (request) {
    return plain(request, 0);
  }),
  seen: stub.seen,
  calls: stub.calls,
  console: stub.console,
  reloads: stub.reloads,
  frames: document.documentElement.childNodes.filter(function (node) {
    return node.nodeName === "IFRAME";
  }).map(function (frame) {
    return {number: frame.number, name: frame.contentWindow.name, display: frame.style.display};
  }),
  forms: document.documentElement.descendants().filter(function (node) {
    return node.nodeName === "FORM";
  }).length,
  texts: document.documentElement.descendants().filter(function (node) {
    return node.id && node.textContent !== undefined;
  }).map(function (node) {
    return [node.id, node.textContent];
  }),
  busy: document.documentElement.descendants().filter(function (node) {
    return / pb-busy /.test(" " + node.getAttribute("class") + " ");
  }).map(function (node) {
    return node.id;
  }),
  listeners: Object.keys(documentListeners.types).filter(function (type) {
    return documentListeners.types[type].length;
  }).map(function (type) {
    return type + "=" + documentListeners.types[type].length;
  })
}));
