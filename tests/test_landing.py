"""The landing page's per-endpoint table (exporter/endpoint_table.py, exporter/server.py): the
same figures as /metrics, power from the last two samples, every label value escaped, and the
page served by the real aiohttp app (loaded in headless Chromium by
tests/integration/test_demo.py)."""

from __future__ import annotations

import asyncio
import html
import threading
import urllib.request

import pytest
from aiohttp import web
from test_faults import H100, FaultNode

from exporter import endpoint_table
from exporter.carbon import accounting
from exporter.server import endpoint_table_html, make_app
from support import free_port, value

HOSTILE = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>&amp;"\''


def _node(tmp_path, model: str = "Qwen/Qwen3-8B", carbon=None) -> FaultNode:
    gpu = {**H100, "processes": [{"pid": 4242, "memory_gib": 20, "sm_util": 60}]}
    procs = {4242: {"comm": "python3", "cmdline": ["vllm", "serve", model, "--port", "8000"]}}
    return FaultNode(tmp_path, [gpu], procs, carbon=carbon)


def test_the_rows_are_the_metrics_and_power_is_the_last_samples_energy_over_time(tmp_path):
    node = _node(tmp_path)
    node.step(ticks={4242: 50})
    before = node.step(ticks={4242: 50})
    after = node.step(dt=2.0, ticks={4242: 50})
    rows = {r.endpoint: r for r in endpoint_table.rows(node.sampler.table_views[1][1], node.sampler.table_views[0][1],
                                                         node.sampler.table_views[1][0] - node.sampler.table_views[0][0])}
    e = "wattprint_endpoint_energy_joules_total"
    row = rows["vllm-8000"]
    assert row.energy_j == pytest.approx(value(after, e, endpoint="vllm-8000"))
    assert row.idle_j == pytest.approx(value(after, e, endpoint="vllm-8000", mode="idle"))
    assert row.power_w == pytest.approx((value(after, e, endpoint="vllm-8000") - value(before, e, endpoint="vllm-8000")) / 2.0)
    assert row.power_w > 400  # 100 W idle + 60 % of 600 W, and some CPU: the GPU is all this endpoint's
    assert 0 < row.idle_share < 1
    assert row.requests is None and row.co2e_g is None  # no engine scraped, no carbon: shown as "-"
    assert endpoint_table.cells(row)[5] == "-" and endpoint_table.cells(row)[4] == "-"
    assert sum(r.energy_j for r in rows.values()) == pytest.approx(value(after, "wattprint_node_energy_joules_total"))


def test_carbon_and_the_cleanest_candidate_region(tmp_path):
    carbon = accounting.build(region=accounting.resolve_static("aws:us-east-1", "config"), pue=1.0, providers=[],
                              max_age_s=7200.0, counterfactual_regions=["country:POL", "gcp:europe-north1"],
                              embodied_cfg={}, training_tonnes={})
    here = carbon.region.grams_per_kwh
    cleanest = min(carbon.counterfactual.items(), key=lambda kv: kv[1])
    assert cleanest[1] < here < max(carbon.counterfactual.values())  # one cleaner, one dirtier
    node = _node(tmp_path, carbon=carbon)
    for _ in range(3):
        m = node.step(ticks={4242: 50})
    row = next(r for r in endpoint_table.rows(node.sampler.table_views[1][1]) if r.endpoint == "vllm-8000")
    assert row.best_region == cleanest[0]  # the cleanest, not the first or the dirtiest
    op = value(m, "wattprint_endpoint_co2e_grams_total", endpoint="vllm-8000", scope="operational")
    assert row.co2e_g == pytest.approx(value(m, "wattprint_endpoint_co2e_grams_total", endpoint="vllm-8000"))
    assert row.saving_g == pytest.approx(op * (1 - cleanest[1] / here), rel=1e-6)
    assert endpoint_table.cells(row)[8] == cleanest[0] and f"({1 - cleanest[1] / here:.0%})" in endpoint_table.cells(row)[9]


def test_every_label_value_is_escaped(tmp_path):
    node = _node(tmp_path, model=HOSTILE)
    node.step(ticks={4242: 50})
    page = endpoint_table_html(node.sampler.table_views)
    assert "<script" not in page and "<img" not in page and "onerror=alert(1)>" not in page
    assert html.escape(HOSTILE) in page  # shown, as text
    assert 'data-endpoint="vllm-8000"' in page


class _Server:
    """The real aiohttp app of `wattprint serve` on 127.0.0.1, in a thread."""

    def __init__(self, sampler) -> None:
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(make_app(sampler))
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.runner.setup())
            self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
            started.set()
            self.loop.run_forever()
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(10)

    def get(self, path: str) -> tuple[str, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return r.headers["Content-Type"], r.read().decode()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_the_page_is_plain_html_without_external_assets_and_made_once_a_sample(tmp_path):
    node = _node(tmp_path, model=HOSTILE)
    node.step(ticks={4242: 50})
    server = _Server(node.sampler)
    try:
        ctype, page = server.get("/")
        assert ctype.startswith("text/html")
        assert 'id="endpoints"' in page and html.escape(HOSTILE) in page and "<script" not in page
        assert "SIMULATED" in page  # the simulated backend says so
        assert 'http-equiv="refresh"' in page
        for attr in ("src=", "href=\"http", "@import", "url("):  # nothing loaded from elsewhere
            assert attr not in page.replace(html.escape(HOSTILE), ""), attr
        _, again = server.get("/")
        assert again == page  # the same sample: the same table
        node.step(ticks={4242: 50})
        _, later = server.get("/")
        assert later != page
    finally:
        server.close()


def test_the_demo_view_reads_back_the_same_rows_from_metrics_and_shows_markup_as_text(tmp_path):
    """exporter/demo/view.py parses /metrics into the landing page's view: the same rows, and a
    model name that is rich markup is printed as it is."""
    console_mod = pytest.importorskip("rich.console", reason="rich is the optional extra wattprint[demo]")
    from exporter.demo import view

    markup = "[bold red]x[/][link=https://example.org]y[/link]" + HOSTILE
    node = _node(tmp_path, model=markup)
    node.step(ticks={4242: 50})
    node.step(ticks={4242: 50})
    landing = endpoint_table.rows(node.sampler.table_views[1][1])
    demo = endpoint_table.rows(view.parse(node.sampler.metrics_text()))
    assert demo == landing and any(r.model == markup for r in demo)
    console = console_mod.Console(record=True, width=400, file=open(tmp_path / "out", "w"))
    console.print(view.table(demo, "t"))
    assert markup in console.export_text()


class _Wellformed:
    """Checks a page with the standard library's HTML parser: every element opened is closed, in
    order (void elements aside), and no script element or event-handler attribute in it."""

    VOID = {"meta", "br", "img", "hr", "input", "link"}

    def __init__(self, page: str) -> None:
        from html.parser import HTMLParser

        self.stack: list[str] = []
        self.problems: list[str] = []
        check = self

        class P(HTMLParser):
            def handle_starttag(self, tag, attrs):
                if tag == "script" or any(name.startswith("on") for name, _ in attrs):
                    check.problems.append(f"<{tag} {attrs}>")
                if tag not in check.VOID:
                    check.stack.append(tag)

            def handle_endtag(self, tag):
                if not check.stack or check.stack.pop() != tag:
                    check.problems.append(f"</{tag}> out of order")
        P().feed(page)
        if self.stack:
            self.problems.append(f"not closed: {self.stack}")


def test_plain_serve_without_engines_and_before_the_first_sample_is_valid_html(tmp_path):
    """`wattprint serve` with no inference server at all: before a sample, then with only the
    catch-all rows (the idle GPU, the system), the page is whole."""
    node = FaultNode(tmp_path, [{**H100, "processes": []}], {})
    server = _Server(node.sampler)
    try:
        assert endpoint_table_html((None, None)) == "<p>No sample yet.</p>"
        _, first = server.get("/")
        assert not _Wellformed(first).problems, _Wellformed(first).problems
        node.step()
        node.step()
        _, page = server.get("/")
        assert not _Wellformed(page).problems, _Wellformed(page).problems
        found = endpoint_table.rows(node.sampler.table_views[1][1])
        assert found and {r.endpoint for r in found} <= endpoint_table.CATCH_ALL
        assert all(f'data-endpoint="{r.endpoint}"' in page for r in found)
    finally:
        server.close()


def test_hostile_values_in_every_label_stay_text_and_the_page_stays_whole():
    """Not only the model: a namespace or endpoint name (pod names, command lines) and a region
    (configuration) with markup and quotes, in the cells and in the data-endpoint attribute."""
    labels = ("ns" + HOSTILE, "ep" + HOSTILE, "m" + HOSTILE)
    view = {"endpoint_energy_joules_total": {(*labels, "gpu", "busy"): 100.0, (*labels, "gpu", "idle"): 20.0},
            "endpoint_co2e_grams_total": {(*labels, "operational"): 1.0, (*labels, "embodied"): 0.1},
            "endpoint_requests_total": {labels: 10.0},
            "counterfactual_co2e_grams_total": {(*labels, "r" + HOSTILE): 0.2}}
    page = endpoint_table_html(((0.0, view), (1.0, view)))
    assert not _Wellformed(page).problems, _Wellformed(page).problems
    assert "<script" not in page and "<img" not in page
    assert page.count(html.escape(HOSTILE)) == 4  # the endpoint (cell and attribute), the model, the region
    assert f'data-endpoint="{html.escape("ep" + HOSTILE)}"' in page
