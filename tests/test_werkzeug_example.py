"""examples/werkzeug_app.py: the app's own cookies pass through; handlers set more."""

from __future__ import annotations

from examples import werkzeug_app
from piggyback.stores import MemoryStore
from piggyback.testing import Client


def make_client() -> Client:
    return Client(werkzeug_app.create_app(store=MemoryStore(), secret_key="test"))


def test_page_keeps_its_cookie_and_headers() -> None:
    client = make_client()
    response = client.http.get("/")
    assert response.status_code == 200
    visits, browser = response.headers.getlist("Set-Cookie")  # and the page's browser id
    assert visits == "visits=1; HttpOnly; Path=/; SameSite=Lax"
    assert browser.startswith("pb_browser=")
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Content-Length"] == str(len(response.data))
    body = response.text
    assert '<strong id="visits">1</strong>' in body
    assert body.count('<script src="/_pb/piggyback.js?v=') == 1
    assert body.endswith("</script></body>\n</html>\n")


def test_cookie_round_trip_through_the_middleware() -> None:
    client = make_client()
    client.http.get("/")
    response = client.http.get("/")  # the browser keeps its id: no second pb_browser
    assert response.headers.getlist("Set-Cookie") == ["visits=2; HttpOnly; Path=/; SameSite=Lax"]
    assert '<strong id="visits">2</strong>' in response.text


def test_handler_reads_the_cookie_the_event_carried() -> None:
    client = make_client()
    client.open("/")
    page = client.open("/")
    assert client.fire(page, "recount") == [["text", "visits", "2"]]


def test_handler_sets_a_cookie_for_the_next_request() -> None:
    client = make_client()
    page = client.open("/")
    assert client.fire(page, "toggle_theme") == [
        ["attr", "body", "class", "dark"],
        ["text", "theme", "dark"],
    ]
    cookie = client.http.get_cookie("theme")
    assert cookie is not None
    assert (cookie.value, cookie.http_only, cookie.same_site) == ("dark", True, "Lax")
    assert '<body id="body" class="dark">' in client.http.get("/").text
    assert client.fire(page, "toggle_theme") == [
        ["attr", "body", "class", "light"],
        ["text", "theme", "light"],
    ]
    assert '<body id="body" class="light">' in client.http.get("/").text


def test_other_paths_pass_through() -> None:
    response = make_client().http.get("/nowhere")
    assert (response.status_code, response.data) == (404, b"Not found")
    assert "Set-Cookie" not in response.headers
