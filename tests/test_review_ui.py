"""The review UI (``/review``) in Debian's Chromium, driven by Playwright, against the real
app under uvicorn with a real Celery worker running small operator templates
(``SKUFORGE_TEMPLATE_DIR``), and a loopback receiver verifying the signed ``review.*``
webhooks (the helpers of ``tests/test_review_api.py``).

``review_small`` makes one packshot; ``review_3d`` adds a tiny 3D group (an extruded mesh
with a 256 px texture, a 24-frame 128 px turntable), so the turntable, the 3D viewer and a
re-run that reuses the 3D stages cost seconds rather than the minutes of a full template.
Screenshots go to ``test-artifacts/review-ui/`` (gitignored); the ones in ``docs/images``
were copied from there.

The first tests need no browser: the login's rate limit, the cookie's flags and the
security headers, through the app's ASGI interface.
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import select

from brand_rules import BrandRules
from brand_rules.schema import Rule
from pipeline.jobspec import JobSpec
from pipeline.settings import Settings, get_settings
from service.app import create_app
from service.passwords import hash_password
from storage import LocalArtifactStore
from storage.database import make_engine, session_factory, transaction
from storage.jobs import create_tenant
from storage.migrate import upgrade
from storage.models import Asset, Tenant
from storage.review import ReviewAudit, create_user
from tests.conftest import EXAMPLE_CAPTURE, start_worker, stop_worker, wait_for
from tests.test_docs_ui import CHROMIUM, _browser_unavailable
from tests.test_outbound_webhooks import verify
from tests.test_review_api import TEMPLATE, Review

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "review-ui"
AXE = REPO / "service" / "ui" / "vendor" / "node_modules" / "axe-core" / "axe.min.js"
PASSWORD = "correct horse battery staple"
TEMPLATE_3D = """name: review_3d
description: one small packshot, a tiny mesh and turntable, for the review UI browser test
stages:
  cutout:
    backend: classical
  packshots:
    slots:
      - name: main
        width: 400
        height: 400
        background: "#FFFFFF"
        fill: 0.8
        format: png
  shape:
    backend: extrude
    max_triangles: 1000
    texture_size: 256
    working_size: 128
  export3d:
    poster_size: 128
  turntable:
    frames: 24
    size: 128
    fps: 12
"""
TURNTABLE_S = 24 / 12  # frames / fps of TEMPLATE_3D


# -- without a browser -----------------------------------------------------------------------
def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, html[:500]
    return found.group(1)


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade(url)
    with transaction(session_factory(make_engine(url))) as session:
        tenant = create_tenant(session, "acme")
        create_user(session, tenant, "ann@example.com", "reviewer", hash_password(PASSWORD))
    settings = Settings(
        environment="test", store={"root": tmp_path / "store"}, database={"url": url}
    )
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        yield client


def _login(client: TestClient, password: str) -> Any:
    token = _csrf(client.get("/review/login").text)
    return client.post(
        "/review/login",
        data={"email": "ann@example.com", "password": password, "csrf_token": token},
        follow_redirects=False,
    )


def test_login_sets_a_locked_down_cookie_and_pages_carry_security_headers(
    app_client: TestClient,
) -> None:
    assert app_client.get("/review", follow_redirects=False).headers["location"] == (
        "/review/login"
    )
    page = app_client.get("/review/login")
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "style-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text and " style=" not in page.text
    # no token in the login form: refused before the password is looked at
    forged = app_client.post(
        "/review/login", data={"email": "ann@example.com", "password": PASSWORD}
    )
    assert forged.status_code == 403 and "Form expired or forged" in forged.text
    done = _login(app_client, PASSWORD)
    assert done.status_code == 303 and done.headers["location"] == "/review"
    cookie = next(c for c in done.headers.get_list("set-cookie") if "skuforge_review=" in c)
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "secure", "samesite=lax", "path=/review"} <= flags
    queue = app_client.get("/review")
    assert queue.status_code == 200 and "ann@example.com" in queue.text
    assert queue.headers["content-security-policy"] == csp
    # logging out needs the session's token too, and ends the session
    assert app_client.post("/review/logout").status_code == 403
    out = app_client.post(
        "/review/logout", data={"csrf_token": _csrf(queue.text)}, follow_redirects=False
    )
    assert out.status_code == 303
    assert app_client.get("/review", follow_redirects=False).status_code == 303


def test_failed_logins_are_rate_limited(app_client: TestClient) -> None:
    for _ in range(5):
        wrong = _login(app_client, "wrong password")
        assert wrong.status_code == 401 and "wrong password" in wrong.text
    # the right password no longer helps until the failures age out
    limited = _login(app_client, PASSWORD)
    assert limited.status_code == 429 and "Too many failed logins" in limited.text


# -- in a browser ----------------------------------------------------------------------------
class Ui:
    def __init__(self, review: Review, base: str) -> None:
        self.review, self.base = review, base
        with transaction(review.sessions) as session:
            tenant = session.get(Tenant, review.tenant)
            other = session.scalar(select(Tenant).where(Tenant.name == "tenant-b"))
            assert tenant is not None and other is not None
            for email, role, owner in (
                ("ann@a.example", "reviewer", tenant),
                ("bob@a.example", "reviewer", tenant),
                ("vic@a.example", "viewer", tenant),
                ("zed@b.example", "reviewer", other),
            ):
                create_user(session, owner, email, role, hash_password(PASSWORD))


def _live(settings: Settings) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture
def ui(cluster: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ui]:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        _browser_unavailable(f"no {CHROMIUM} (Debian package chromium)")
    if not AXE.is_file():
        _browser_unavailable(f"no {AXE} (./scripts/bootstrap.sh runs npm ci in service/ui/vendor)")
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "review_small.yaml").write_text(TEMPLATE)
    (templates / "review_3d.yaml").write_text(TEMPLATE_3D)
    env = {
        **cluster,
        "SKUFORGE_TEMPLATE_DIR": str(templates),
        "SKUFORGE_API__ALLOW_PRIVATE_URLS": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    review = Review(env, tmp_path)
    try:
        for base in _live(Settings()):
            yield Ui(review, base)
    finally:
        review.close()


def _serious(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page (axe was injected into every
    document by an init script, which the page's CSP does not apply to)."""
    found: list[str] = page.evaluate(
        """async () => {
          const result = await axe.run(document, {resultTypes: ['violations']});
          return result.violations
            .filter(v => v.impact === 'serious' || v.impact === 'critical')
            .map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '));
        }"""
    )
    return found


class Console:
    """What the pages logged: CSP refusals, every console error, uncaught exceptions."""

    def __init__(self) -> None:
        self.csp: list[str] = []
        self.errors: list[str] = []
        self.exceptions: list[str] = []

    def watch(self, page: Any) -> None:
        def on_console(message: Any) -> None:
            if "Content Security Policy" in message.text:
                self.csp.append(message.text)
            if message.type == "error":
                self.errors.append(f"{page.url}: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.exceptions.append(str(exc)))


def _launch(playwright: Any) -> Any:
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    )


def _person(
    browser: Any, base: str, email: str, console: Console, width: int = 1280, height: int = 800
) -> Any:
    """A logged-in page of its own browser context (own cookies), with axe-core injected."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.add_init_script(path=str(AXE))
    page = context.new_page()
    console.watch(page)
    page.goto(f"{base}/review/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]:has-text('Log in')")
    page.wait_for_url(f"{base}/review")
    return page


def _wait_finished(review: Review, job_id: str) -> None:
    wait_for(
        lambda: review.job(job_id).status not in ("queued", "running"),
        240,
        f"job {job_id}\n{review.log.read_text()[-3000:]}",
    )


def _states(page: Any, table: str) -> dict[str, str]:
    """Stage -> data-state of a stage table's rows, read in one round trip."""
    found: dict[str, str] = page.evaluate(
        """table => Object.fromEntries(
            [...document.querySelectorAll(table + ' tr[data-stage]')]
                .map(row => [row.dataset.stage, row.dataset.state]))""",
        table,
    )
    return found


def _no_horizontal_overflow(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


@pytest.mark.slow
def test_review_ui_in_chromium(ui: Ui) -> None:
    from playwright.sync_api import Page, sync_playwright

    review, base = ui.review, ui.base
    hook = review.post(
        "/v1/webhook-endpoints",
        {
            "url": review.receiver.url("/hooks"),
            "event_types": ["review.approved", "review.rejected"],
        },
    )
    assert hook.status_code == 201, hook.text
    secret = hook.json()["secret"]
    # packshots fill 80 %; the brand asks for 95 %: fill_ratio fails with review severity
    unsure = BrandRules(
        brand="acme", rules=[Rule(id="fill_ratio", severity="review", params={"min": 0.95})]
    )
    to_reject, to_approve, contested = (review.submit(unsure) for _ in range(3))
    # PNG packshots against a brand allowing only JPEG: file_format fails, reject severity
    bad = review.submit(BrandRules(brand="acme", allowed_outputs=["jpeg"]))
    for job_id in (to_reject, to_approve, contested, bad):
        _wait_finished(review, job_id)
    assert {review.job(j).status for j in (to_reject, to_approve, contested)} == {"needs_review"}
    assert review.job(bad).status == "rejected"
    item = review.get("/v1/review", limit=1).json()["items"][0]
    assert item["job_id"] == to_reject
    measured = next(f["measured"] for f in item["findings"] if f["rule"] == "fill_ratio")
    shown = f"{measured:.3g}"
    claimed = review.post(f"/v1/jobs/{contested}/claim", {"lease_s": 600}, review.reviewer_key)
    assert claimed.status_code == 200, claimed.text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    console = Console()

    with sync_playwright() as playwright:
        browser = _launch(playwright)

        def person(email: str) -> Page:
            found: Page = _person(browser, base, email, console)
            return found

        def decide(page: Page, job_id: str, kind: str, reason: str, note: str) -> int:
            page.goto(f"{base}/review/jobs/{job_id}")
            page.keyboard.press(kind[0])  # a / r: the form's first field takes the focus
            assert page.evaluate("document.activeElement.id") == f"{kind}-reason"
            page.select_option(f"#{kind}-reason", reason)
            page.fill(f"#{kind}-note", note)
            with page.expect_response(lambda r: r.url.endswith("/decision")) as answer:
                page.click(f"#form-{kind} button[type=submit]")
            page.wait_for_load_state()
            return int(answer.value.status)

        try:
            # login page: accessible before anyone logs in
            anon = browser.new_context(viewport={"width": 1280, "height": 800})
            anon.add_init_script(path=str(AXE))
            login = anon.new_page()
            login.goto(f"{base}/review/login")
            assert _serious(login) == []
            login.screenshot(path=str(ARTIFACTS / "login.png"))
            anon.close()

            ann = person("ann@a.example")
            # the queue: the job with its failing rule and measured value
            card = ann.locator(f".card[data-job='{to_reject}']")
            assert "fill_ratio" in card.inner_text() and shown in card.inner_text()
            assert ann.locator(f".card[data-job='{to_reject}'] img.thumb").evaluate(
                "img => img.complete && img.naturalWidth > 0"
            )
            assert "3 jobs" in ann.locator("#queue-count").inner_text()
            assert "claimed by key:" in ann.locator(f".card[data-job='{contested}']").inner_text()
            assert "claimed by" not in card.inner_text()
            ann.keyboard.press("j")
            assert ann.evaluate("document.activeElement.closest('.card').dataset.job") == to_reject
            ann.keyboard.press("?")
            assert ann.locator("#help").is_visible()
            ann.keyboard.press("Escape")
            assert _serious(ann) == []
            ann.screenshot(path=str(ARTIFACTS / "queue.png"), full_page=True)

            # the job page: the overlay over the packshot, toggled; the measured value
            ann.goto(f"{base}/review/jobs/{to_reject}")
            overlay = ann.locator("#report-main img.overlay")
            assert overlay.is_visible()
            assert overlay.evaluate("img => img.complete && img.naturalWidth > 0")
            ann.click("label[for='overlay-main']")
            assert not overlay.is_visible()
            ann.click("label[for='overlay-main']")
            row = ann.locator("#report-main tr[data-rule='fill_ratio']")
            assert row.locator(".measured").inner_text() == shown
            assert "failed" in row.inner_text() and "review" in row.inner_text()
            assert _serious(ann) == []
            ann.screenshot(path=str(ARTIFACTS / "job.png"), full_page=True)

            # reject with a reason, approve another
            assert decide(ann, to_reject, "reject", "bad_cutout", "halo on the left") == 303
            assert "now rejected" in ann.locator("[role=status]").inner_text()
            assert decide(ann, to_approve, "approve", "meets_guidelines", "fine") == 303
            assert review.job(to_reject).status == "rejected"
            assert review.job(to_approve).status == "approved"

            # two reviewers on one revision: the second gets the 412 page, nothing changes
            bob = person("bob@a.example")
            ann.goto(f"{base}/review/jobs/{contested}")
            assert decide(bob, contested, "approve", "meets_guidelines", "") == 303
            ann.select_option("#reject-reason", "composition")
            with ann.expect_response(lambda r: r.url.endswith("/decision")) as late:
                ann.click("#form-reject button[type=submit]")
            assert late.value.status == 412
            assert "Someone decided first" in ann.locator("h1").inner_text()
            assert review.job(contested).status == "approved"

            # a form post without the CSRF token is refused
            refused = ann.request.post(
                f"{base}/review/jobs/{contested}/decision",
                form={"decision": "reject", "revision": "2"},
                max_redirects=0,
            )
            assert refused.status == 403 and "Form expired or forged" in refused.text()

            # a viewer sees no decision form and is refused when posting one anyway
            vic = person("vic@a.example")
            vic.goto(f"{base}/review/jobs/{contested}")
            assert vic.locator("#form-approve").count() == 0
            token = vic.locator("input[name=csrf_token]").first.get_attribute("value")
            assert token
            viewer = vic.request.post(
                f"{base}/review/jobs/{contested}/decision",
                form={"decision": "reject", "revision": "2", "csrf_token": token},
                max_redirects=0,
            )
            assert viewer.status == 403 and "viewer" in viewer.text()
            assert review.job(contested).status == "approved"

            # tenant B: tenant A's job page and files are not found
            zed = person("zed@b.example")
            other = zed.goto(f"{base}/review/jobs/{to_reject}")
            assert other is not None and other.status == 404
            assert zed.locator(".card").count() == 0 or "Nothing to review" in zed.content()
            for path in ("thumbnail", "capture", "files/packshots/main.png", "events"):
                assert zed.request.get(f"{base}/review/jobs/{to_reject}/{path}").status == 404

            # bulk approve from the rejected queue: the job with a reject-severity failure
            # is skipped, the one a person rejected for a review-severity failure is approved
            ann.goto(f"{base}/review?status=rejected")
            assert "2 jobs" in ann.locator("#queue-count").inner_text()
            ann.keyboard.press("j")  # oldest first: to_reject; x ticks it
            assert ann.evaluate("document.activeElement.closest('.card').dataset.job") == to_reject
            ann.keyboard.press("x")
            ann.check(f".card[data-job='{bad}'] input.pick")
            assert ann.locator("input.pick:checked").count() == 2
            ann.select_option("#bulk-reason", "meets_guidelines")
            with ann.expect_response(lambda r: r.url.endswith("/bulk-approve")) as bulk:
                ann.click("#bulk button[type=submit]")
            assert bulk.value.status == 200
            assert ann.locator(f"#bulk-approved li[data-job='{to_reject}']").count() == 1
            skipped = ann.locator(f"#bulk-skipped li[data-job='{bad}']").inner_text()
            assert "reject-severity failure" in skipped
            assert ann.locator(f"#bulk-approved li[data-job='{bad}']").count() == 0
            assert review.job(to_reject).status == "approved"
            assert review.job(bad).status == "rejected"
            assert _serious(ann) == []
            no_token = ann.request.post(
                f"{base}/review/bulk-approve", form={"job_ids": bad}, max_redirects=0
            )
            assert no_token.status == 403
            viewer_bulk = vic.request.post(
                f"{base}/review/bulk-approve",
                form={"job_ids": bad, "csrf_token": token},
                max_redirects=0,
            )
            assert viewer_bulk.status == 403 and review.job(bad).status == "rejected"
        finally:
            browser.close()

    assert console.csp == [] and console.exceptions == [], (console.csp, console.exceptions)
    with review.sessions() as session:
        entries = list(session.scalars(select(ReviewAudit).order_by(ReviewAudit.seq)))
    audit: dict[str, ReviewAudit] = {}
    for logged in entries:
        audit.setdefault(logged.job_id, logged)  # each job's first entry
    bulk_entry = next(e for e in entries if e.job_id == to_reject and e.action == "approve")
    assert (bulk_entry.reason_code, bulk_entry.verdict_after) == ("meets_guidelines", "approved")
    assert not any(e.job_id == bad for e in entries)  # skipped: nothing decided, nothing logged
    entry = audit[to_reject]
    assert (entry.actor, entry.action, entry.reason_code, entry.note) == (
        "user:ann@a.example",
        "reject",
        "bad_cutout",
        "halo on the left",
    )
    assert (entry.verdict_before, entry.verdict_after, entry.revision) == (
        "needs_review",
        "rejected",
        2,
    )
    assert audit[to_approve].action == "approve"
    decided = next(e for e in entries if e.job_id == contested and e.action == "approve")
    assert decided.actor == "user:bob@a.example"

    def hooks(job_id: str) -> dict[str, dict[str, Any]]:
        found = {}
        for received in review.receiver.at("/hooks"):
            payload = verify(received, secret)  # raises unless correctly signed
            if payload["data"]["job_id"] == job_id:
                found[payload["type"]] = payload
        return found

    wait_for(lambda: "review.rejected" in hooks(to_reject), 60, "review.rejected delivered")
    rejected = hooks(to_reject)["review.rejected"]["data"]
    assert rejected["status"] == "rejected" and rejected["review"]["note"] == "halo on the left"
    assert rejected["review"]["reviewer"] == "user:ann@a.example"
    wait_for(lambda: "review.approved" in hooks(to_approve), 60, "review.approved delivered")
    assert hooks(to_approve)["review.approved"]["data"]["verdict"] == "approved"


def _submit_3d(review: Review, brand: BrandRules) -> str:
    from service.submission import submit_capture

    settings = Settings()
    job, created, _ = submit_capture(
        review.sessions,
        LocalArtifactStore(settings.store.root),
        settings,
        tenant_id=review.tenant,
        capture=EXAMPLE_CAPTURE.read_bytes(),
        spec=JobSpec(template="review_3d", brand=brand),
    )
    assert created
    return job.id


def _digests(review: Review, job_id: str) -> dict[str, str]:
    with review.sessions() as session:
        return {
            a.file: a.digest for a in session.scalars(select(Asset).where(Asset.job_id == job_id))
        }


@pytest.mark.slow
def test_turntable_3d_viewer_edit_and_rerun_and_tablet_width_in_chromium(ui: Ui) -> None:
    """A job with every kind of output: the turntable plays, the GLB loads in model-viewer
    with no console error; changing the packshot background re-runs the job as a revision
    followed live over SSE, which recomputes the packshot and reuses the cutout and the 3D
    stages; the queue and the job page fit a 768 px tablet."""
    from playwright.sync_api import sync_playwright

    review, base = ui.review, ui.base
    unsure = BrandRules(
        brand="acme", rules=[Rule(id="fill_ratio", severity="review", params={"min": 0.95})]
    )
    parent = _submit_3d(review, unsure)
    _wait_finished(review, parent)
    assert review.job(parent).status == "needs_review"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    console = Console()

    with sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            ann = _person(browser, base, "ann@a.example", console)
            ann.screenshot(path=str(ARTIFACTS / "queue-3d.png"))
            ann.goto(f"{base}/review/jobs/{parent}")
            # the turntable plays: enough data for the current frame, the template's length
            ann.wait_for_function(
                "() => document.querySelector('video.turntable').readyState >= 2",
                polling=100,
                timeout=20000,
            )
            duration = ann.evaluate("document.querySelector('video.turntable').duration")
            assert abs(duration - TURNTABLE_S) < 0.1, duration
            # the GLB in the 3D viewer (it loads when in view): the model loaded
            ann.locator("model-viewer").scroll_into_view_if_needed()
            ann.wait_for_function(
                "() => customElements.get('model-viewer') !== undefined"
                " && document.querySelector('model-viewer').loaded === true",
                polling=100,
                timeout=30000,
            )
            assert ann.evaluate("document.querySelector('model-viewer').src").endswith(
                "/files/model/model.glb"
            )
            # the spin set turns under the pointer: half the image's width is half a turn
            spin = ann.locator("img.spin")
            assert spin.get_attribute("data-frames") == "24"
            spin.scroll_into_view_if_needed()
            box = spin.bounding_box()
            assert box is not None
            middle = box["y"] + box["height"] / 2
            ann.mouse.move(box["x"] + box["width"] * 0.8, middle)
            ann.mouse.down()
            ann.mouse.move(box["x"] + box["width"] * 0.3, middle, steps=5)
            ann.mouse.up()
            assert spin.get_attribute("data-frame") == "12"
            assert spin.evaluate("img => img.decode().then(() => img.naturalWidth)") == 128
            assert _serious(ann) == []
            ann.evaluate("() => window.scrollTo(0, 0)")
            ann.screenshot(path=str(ARTIFACTS / "job-3d.png"))
            ann.screenshot(path=str(ARTIFACTS / "job-3d-full.png"), full_page=True)
            assert console.errors == [], console.errors

            # edit and re-run: the worker is stopped first, so the page sees the revision
            # queued and follows every stage over SSE (nothing finishes before it loads)
            stop_worker(review.worker)
            colour = ann.locator("#param-packshots-main-background")
            assert colour.input_value() == "#FFFFFF"
            assert ann.locator("#param-turntable-frames").input_value() == "24"
            assert ann.locator("#param-shape-backend").input_value() == "extrude"
            colour.fill("#E8F0FF")
            ann.click("#form-rerun button[type=submit]")
            ann.wait_for_url(re.compile(rf"{re.escape(base)}/review/jobs/(?!{parent})[^/?]+$"))
            revision = ann.url.rsplit("/", 1)[1]
            assert review.job(revision).parent_id == parent
            progress = ann.locator("#progress")
            assert progress.is_visible()
            states = _states(ann, "#progress")
            assert set(states.values()) <= {"waiting", "queued"}, states
            review.worker = start_worker(review.env, review.log, queues="default,cpu,gpu,webhooks")
            ann.wait_for_selector("#progress[data-final='job_finished']", timeout=120000)
            states = _states(ann, "#progress")
            recomputed = {"packshots.main", "validate.main"}
            assert {s for s, state in states.items() if state == "computed"} == recomputed
            reused = {"ingest", "cutout", "shape", "export3d", "turntable"}
            assert reused <= {s for s, state in states.items() if state == "reused"}, states
            assert (
                "reused (cache hit)"
                in ann.locator("#progress tr[data-stage='cutout'] .state").inner_text()
            )
            with ann.expect_navigation(wait_until="domcontentloaded"):
                ann.click("#progress-done a")
            assert _states(ann, "#lineage") == states
            assert ann.locator("#parent-link").get_attribute("href") == f"/review/jobs/{parent}"

            # the stored outputs agree: a new packshot, the very same cutout and 3D files
            before, after = _digests(review, parent), _digests(review, revision)
            assert before["packshots/main.png"] != after["packshots/main.png"]
            for file in ("cutout.png", "model/model.glb", "turntable/turntable.mp4"):
                assert before[file] == after[file], file

            # a tablet: nothing wider than the screen, on the queue and on the job page
            tablet = _person(browser, base, "bob@a.example", console, width=768, height=1024)
            assert _no_horizontal_overflow(tablet)
            assert _serious(tablet) == []
            tablet.goto(f"{base}/review/jobs/{parent}", wait_until="domcontentloaded")
            assert _no_horizontal_overflow(tablet), tablet.evaluate(
                "[document.documentElement.scrollWidth, window.innerWidth]"
            )
            tablet.screenshot(path=str(ARTIFACTS / "job-tablet.png"))
        finally:
            browser.close()
    assert console.csp == [] and console.exceptions == [], (console.csp, console.exceptions)
    assert console.errors == [], console.errors


def test_queue_page_reads_as_many_sql_statements_for_50_jobs_as_for_10(tmp_path: Path) -> None:
    """No N+1: a queue page's statements do not grow with its cards (the benchmark's
    seeding and counter, benchmarks/review_queue.py)."""
    from benchmarks.review_queue import counting_statements, log_in, seed, seed_pending

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    store = LocalArtifactStore(tmp_path / "store")
    ids = seed(url, store, 10, None)
    settings = Settings(
        environment="test", store={"root": tmp_path / "store"}, database={"url": url}
    )
    counts = []
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        log_in(client)
        client.get("/review")  # the first read of the reason codes writes the defaults
        for total in (10, 50):
            if total == 50:
                thumb = store.put(b"RIFF....WEBP")
                sessions = session_factory(make_engine(url))
                seed_pending(sessions, ids["tenant"], 40, thumb_digest=thumb)
            with counting_statements() as seen:
                page = client.get("/review")
            assert page.status_code == 200 and f"{total} jobs: needs review" in page.text
            assert page.text.count('class="card"') == min(total, 24)
            counts.append(len(seen))
    assert counts[0] == counts[1], counts


def test_api_image_installs_every_served_vendor_file_from_the_lock() -> None:
    """The Dockerfile (no engine here): a build stage runs npm ci on the vendor lock, and each
    file the app serves is copied into the installed package's node_modules."""
    from service.ui import VENDOR_FILES

    dockerfile = (REPO / "Dockerfile").read_text()
    stage = re.search(r"^FROM node:\S+ AS (\S+)$(.*?)^FROM ", dockerfile, re.M | re.S)
    assert stage is not None, "no node build stage"
    name, body = stage.group(1), stage.group(2)
    assert "service/ui/vendor/package-lock.json" in body
    assert re.search(r"^RUN npm ci --omit=dev\b", body, re.M)
    copied = re.findall(rf"^COPY --from={name} (.+) \S+$", dockerfile, re.M)
    sources = {s.removeprefix("/ui/node_modules/") for line in copied for s in line.split()}
    assert set(VENDOR_FILES.values()) <= sources, (VENDOR_FILES, sources)
    lock = (REPO / "service" / "ui" / "vendor" / "package-lock.json").read_text()
    assert '"node_modules/@google/model-viewer"' in lock and '"integrity": "sha512-' in lock
