"""The SOC console in a real Chromium against the built binary: the runbook with clicks."""

import re
import time

from playwright.sync_api import expect

UNTRUSTED_MERGE = {
    "tool_call": {"tool": "github", "action": "merge_pull_request", "resource": "payments#482",
                  "parameters": {"base_branch": "main"}, "mutates_state": True},
    "context": {"source_trust": "untrusted_external"},
}
# A write from a semi-trusted source: the policy holds it for a person to approve.
HELD_MERGE = {
    "tool_call": {"tool": "github", "action": "merge_pull_request", "resource": "payments#482",
                  "parameters": {"base_branch": "main",
                                 "title": "<img src=x onerror=window.__pwned=1>hotfix"},
                  "mutates_state": True},
    "context": {"source_trust": "semi_trusted_customer"},
}
AGENT_NAME_WITH_MARKUP = '<img src=x onerror="window.__pwned=1">coder'


def register_agent(gateway, name="coding-agent"):
    agent = gateway.api("POST", "/v1/agents", {"name": name})
    gateway.call("POST", "/v1/tools", gateway.admin, {"tool": "github", "actions": [
        {"action": "get_file", "mutates_state": False, "risk": "low"},
        {"action": "merge_pull_request", "mutates_state": True, "risk": "high"},
    ]})
    return agent["id"], agent["agent_token"]


def authorize(gateway, token, call=UNTRUSTED_MERGE):
    status, decision = gateway.call("POST", "/v1/authorize", token, call)
    assert status == 200, decision
    return decision


def wait_for_incident(gateway, kind="deny_storm"):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        listed = gateway.api("GET", f"/v1/incidents?kind={kind}")
        if listed:
            return listed[0]
        time.sleep(0.2)
    raise AssertionError(f"no {kind} incident opened")


def sign_in(context, gateway, key):
    page = context.new_page()
    page.goto(f"{gateway.base}/console")
    expect(page).to_have_url(f"{gateway.base}/console/sign-in")
    page.get_by_label("Operator key").fill(key)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page).to_have_url(f"{gateway.base}/console/incidents")
    return page


def csrf_of(page):
    return page.locator("form.sign-out input[name=csrf]").get_attribute("value")


def test_the_deny_storm_runbook_with_clicks(gateway, visits, shots):
    agent_id, token = register_agent(gateway, AGENT_NAME_WITH_MARKUP)
    context = visits.context(viewport={"width": 1280, "height": 800})
    context.new_page().goto(f"{gateway.base}/console/sign-in")
    shots("sign-in", context.pages[0])
    page = sign_in(context, gateway, gateway.admin)
    expect(page.locator("#live-status")).to_have_text("Live updates: on")
    expect(page.locator(".empty")).to_contain_text("No incidents")
    shots("incidents-empty", page)

    # A deny storm through the API appears without a reload.
    page.evaluate("window.__sameDocument = true")
    for _ in range(5):
        assert authorize(gateway, token)["decision"] == "deny"
    storm = page.get_by_role("link", name="deny_storm", exact=True)
    expect(storm).to_be_visible(timeout=20_000)
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    shots("incidents", page)

    # Its page: one graph node per decision, the narrative, the timeline.
    storm.click()
    expect(page.get_by_role("heading", name="Evidence graph")).to_be_visible()
    incident_id = page.url.rsplit("/", 1)[1]
    graph = gateway.api("GET", f"/v1/graph/incident/{incident_id}")
    decisions = [node for node in graph["nodes"] if node["type"] == "decision"]
    assert len(decisions) >= 5
    expect(page.locator('figure.graph g[data-type="decision"]')).to_have_count(len(decisions))
    expect(page.locator('figure.graph g[data-type="receipt"]')).to_have_count(len(decisions))
    expect(page.locator("figure.graph line.edge")).to_have_count(len(graph["edges"]))
    expect(page.locator("pre.narrative")).to_contain_text("deny_storm")
    expect(page.locator("table.timeline tbody tr")).to_have_count(len(decisions))
    # The agent's name is shown as text, never run as markup.
    expect(page.get_by_text(AGENT_NAME_WITH_MARKUP, exact=False).first).to_be_visible()
    assert page.evaluate("window.__pwned") is None
    shots("incident", page)

    # Acknowledge, then freeze the agent (confirmed, with a reason).
    page.get_by_role("button", name="Acknowledge", exact=True).click()
    expect(page.locator("#incident-status")).to_have_text("acknowledged")
    questions = []
    page.on("dialog", lambda dialog: (questions.append(dialog.message), dialog.accept()))
    freeze = page.locator("form.action", has=page.get_by_role("button", name="Freeze agent", exact=True))
    freeze.get_by_label("Reason").fill("deny storm on payments")
    freeze.get_by_role("button", name="Freeze agent", exact=True).click()
    expect(page.get_by_role("button", name="Unfreeze agent", exact=True)).to_be_visible()
    assert any("Freeze this agent" in question for question in questions)
    assert gateway.api("GET", f"/v1/agents/{agent_id}")["status"] == "frozen"
    # The next authorize is a recorded deny.
    read = {"tool_call": {"tool": "github", "action": "get_file"},
            "context": {"source_trust": "trusted_internal_signed"}}
    frozen = authorize(gateway, token, read)
    assert frozen["decision"] == "deny" and "frozen" in frozen["reason"]
    recorded = gateway.api("GET", f"/v1/decisions/{frozen['decision_id']}")
    assert recorded["decision"] == "deny"

    # Close with a reason.
    close = page.locator("form.action", has=page.get_by_role("button", name="Close", exact=True))
    close.get_by_label("Reason").fill("agent contained")
    close.get_by_role("button", name="Close", exact=True).click()
    expect(page.locator("#incident-status")).to_have_text("closed")
    assert gateway.api("GET", f"/v1/incidents/{incident_id}")["close_reason"] == "agent contained"

    # The other pages.
    page.get_by_role("link", name="Agents", exact=True).click()
    expect(page.get_by_role("heading", name="Agents")).to_be_visible()
    shots("agents", page)
    page.get_by_role("link", name=AGENT_NAME_WITH_MARKUP, exact=True).click()
    expect(page.locator("#agent-status")).to_have_text("frozen")
    shots("agent", page)
    page.get_by_role("link", name="Decisions", exact=True).click()
    page.get_by_label("Decision", exact=True).select_option("deny")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page).to_have_url(re.compile(r"decision=deny"))
    expect(page.locator("tr[data-decision]")).to_have_count(6)
    shots("decisions", page)
    page.get_by_role("link", name="Settings", exact=True).click()
    page.get_by_label("Tenant override").select_option("L2")
    page.get_by_role("button", name="Save autonomy level", exact=True).click()
    expect(page.locator("#autonomy-level")).to_have_text("L2")
    assert gateway.api("GET", "/v1/tenants/soc-autonomy")["level"] == "L2"
    shots("settings", page)

    # Sign-out ends the session.
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page).to_have_url(f"{gateway.base}/console/sign-in")
    page.goto(f"{gateway.base}/console/incidents")
    expect(page).to_have_url(f"{gateway.base}/console/sign-in")


def test_rotating_a_token_shows_the_new_one_once(gateway, visits, shots):
    agent_id, old_token = register_agent(gateway)
    page = sign_in(visits.context(), gateway, gateway.admin)
    page.goto(f"{gateway.base}/console/agents/{agent_id}")
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Rotate token", exact=True).click()
    new_token = page.locator("#new-token").inner_text()
    assert new_token.startswith("aat_")
    status, _ = gateway.call("POST", "/v1/authorize", old_token, UNTRUSTED_MERGE)
    assert status == 401
    assert authorize(gateway, new_token)["decision"] == "deny"
    shots("new-token", page)


def test_an_approval_is_approved_from_the_queue(gateway, visits, shots):
    agent_id, token = register_agent(gateway)
    page = sign_in(visits.context(viewport={"width": 1280, "height": 800}), gateway, gateway.admin)
    page.get_by_role("link", name="Approvals", exact=True).click()
    expect(page.locator(".empty")).to_contain_text("No call is waiting for approval")
    shots("approvals-empty", page)

    asked = authorize(gateway, token, HELD_MERGE)
    assert asked["decision"] == "require_approval", asked
    approval_id = asked["approval"]["id"]
    page.reload()
    held = page.locator(f'article[data-approval="{approval_id}"]')
    expect(held).to_contain_text("merge_pull_request")
    expect(held).to_contain_text("payments#482")
    expect(held).to_contain_text(agent_id)
    expect(held.locator(".approval-count")).to_contain_text("0 of 1 required")
    # The agent's parameters are shown as text, never run as markup.
    expect(held.locator("pre.parameters")).to_contain_text(HELD_MERGE["tool_call"]["parameters"]["title"])
    assert page.evaluate("window.__pwned") is None
    shots("approvals", page)

    questions = []
    page.on("dialog", lambda dialog: (questions.append(dialog.message), dialog.accept()))
    approve = held.locator("form.action", has=page.get_by_role("button", name="Approve", exact=True))
    approve.get_by_label("Reason").fill("release window")
    approve.get_by_role("button", name="Approve", exact=True).click()
    expect(page.locator("#decided")).to_contain_text("Approved: the agent's identical call is allowed once")
    expect(page.locator(f'article[data-approval="{approval_id}"]')).to_have_count(0)
    assert any("Approve this call" in question for question in questions)
    approval = gateway.api("GET", f"/v1/approvals/{approval_id}")
    assert approval["status"] == "approved"
    assert approval["approvals"][0]["reason"] == "release window"
    shots("approved", page)

    # The agent repeats its call: allowed once, on this approval.
    allowed = authorize(gateway, token, HELD_MERGE)
    assert allowed["decision"] == "allow", allowed
    assert allowed["approval"]["id"] == approval_id


def test_thresholds_are_edited_on_the_settings_page(gateway, visits, shots):
    page = sign_in(visits.context(viewport={"width": 1280, "height": 800}), gateway, gateway.admin)
    page.get_by_role("link", name="Settings", exact=True).click()
    page.get_by_label("Deny-storm denies").fill("0")
    page.get_by_label("Deny-storm window (seconds)").fill("120")
    page.get_by_role("button", name="Save deny storm", exact=True).click()
    expect(page.get_by_role("alert")).to_have_text("Not saved: Deny-storm denies must be between 1 and 1000.")
    expect(page.get_by_label("Deny-storm denies")).to_have_value("0")
    expect(page.get_by_label("Deny-storm denies")).to_have_attribute("aria-invalid", "true")
    assert gateway.api("GET", "/v1/tenants/deny-storm") == {"threshold": None, "window_secs": None}
    shots("settings-refused", page)

    page.get_by_label("Deny-storm denies").fill("3")
    page.get_by_role("button", name="Save deny storm", exact=True).click()
    expect(page.locator("#deny-storm")).to_have_text("3 denies within 120 s")
    page.get_by_label("Escalation denies").fill("4")
    page.get_by_label("Escalation window (minutes)").fill("30")
    page.get_by_role("button", name="Save risk escalation", exact=True).click()
    expect(page.locator("#risk-escalation")).to_have_text("4 denies within 30 min")
    assert gateway.api("GET", "/v1/tenants/deny-storm") == {"threshold": 3, "window_secs": 120}
    assert gateway.api("GET", "/v1/tenants/risk-escalation") == {"denial_threshold": 4, "window_minutes": 30}
    shots("settings-thresholds", page)


def test_a_policy_cedar_refuses_is_shown_at_its_line_then_fixed_and_deleted(gateway, visits, shots):
    page = sign_in(visits.context(viewport={"width": 1280, "height": 900}), gateway, gateway.admin)
    page.get_by_role("link", name="Settings", exact=True).click()
    page.get_by_label("Policy id").fill("no-prod")
    broken = 'forbid (principal, action, resource)\nwhen { context.no_such_fact == "<b>prod</b>" };'
    page.get_by_label("Cedar policy").fill(broken)
    page.get_by_role("button", name="Add policy", exact=True).click()
    problem = page.locator("#policy-problem-new")
    expect(problem).to_contain_text("Not saved: line 2, column 8")
    expect(problem.locator("pre.offending")).to_have_text('when { context.no_such_fact == "<b>prod</b>" };\n       ^')
    expect(page.get_by_label("Cedar policy")).to_have_value(broken)
    expect(page.get_by_label("Cedar policy")).to_have_attribute("aria-invalid", "true")
    assert gateway.api("GET", "/v1/policies") == []
    shots("settings-policy-refused", page)

    fixed = 'forbid (principal, action, resource)\nwhen { context has target && context.target like "prod*" };'
    page.get_by_label("Cedar policy").fill(fixed)
    page.get_by_role("button", name="Add policy", exact=True).click()
    saved = page.locator("details.policy summary", has_text="no-prod")
    expect(saved).to_be_visible()
    assert gateway.api("GET", "/v1/policies") == [{"id": "no-prod", "text": fixed}]
    saved.click()
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete policy", exact=True).click()
    expect(saved).to_have_count(0)
    assert gateway.api("GET", "/v1/policies") == []


def test_a_viewer_is_offered_nothing_and_refused_anyway(gateway, visits, shots):
    agent_id, token = register_agent(gateway)
    approval_id = authorize(gateway, token, HELD_MERGE)["approval"]["id"]
    for _ in range(5):
        authorize(gateway, token)
    incident = wait_for_incident(gateway)
    viewer = gateway.api("POST", "/v1/keys", {"role": "viewer"})["key"]
    context = visits.context()
    page = sign_in(context, gateway, viewer)
    page.goto(f"{gateway.base}/console/incidents/{incident['id']}")
    expect(page.get_by_role("heading", name="Evidence graph")).to_be_visible()
    for button in ["Acknowledge", "Close", "Freeze agent", "Unfreeze agent", "Revoke agent", "Rotate token"]:
        expect(page.get_by_role("button", name=button, exact=True)).to_have_count(0)
    shots("viewer-incident", page)
    page.goto(f"{gateway.base}/console/approvals")
    expect(page.locator(f'article[data-approval="{approval_id}"]')).to_be_visible()
    for button in ["Approve", "Reject"]:
        expect(page.get_by_role("button", name=button, exact=True)).to_have_count(0)
    shots("viewer-approvals", page)

    # A forged POST from the viewer's session, with its valid CSRF token: refused by role.
    forged = context.request.post(f"{gateway.base}/console/agents/{agent_id}/freeze",
                                  form={"csrf": csrf_of(page)}, max_redirects=0)
    assert forged.status == 403
    assert gateway.api("GET", f"/v1/agents/{agent_id}")["status"] == "active"
    forged = context.request.post(f"{gateway.base}/console/approvals/{approval_id}/approve",
                                  form={"csrf": csrf_of(page)}, max_redirects=0)
    assert forged.status == 403
    assert gateway.api("GET", f"/v1/approvals/{approval_id}")["status"] == "pending"


def test_a_post_without_the_csrf_token_is_refused(gateway, visits):
    agent_id, _ = register_agent(gateway)
    context = visits.context()
    sign_in(context, gateway, gateway.admin)
    refused = context.request.post(f"{gateway.base}/console/agents/{agent_id}/freeze",
                                   form={"reason": "no token"}, max_redirects=0)
    assert refused.status == 403
    assert gateway.api("GET", f"/v1/agents/{agent_id}")["status"] == "active"


def test_phone_width_and_keyboard(gateway, visits, shots):
    register_agent(gateway)
    context = visits.context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    page.goto(f"{gateway.base}/console/sign-in")
    # Keyboard only: the key field takes focus by Tab and Enter submits.
    page.keyboard.press("Tab")
    for _ in range(10):
        if page.evaluate("document.activeElement.id") == "key":
            break
        page.keyboard.press("Tab")
    page.keyboard.type(gateway.admin)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{gateway.base}/console/incidents")
    for path in ["incidents", "approvals", "agents", "decisions", "settings"]:
        page.goto(f"{gateway.base}/console/{path}")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{path} scrolls sideways on a phone ({overflow}px)"
        shots(f"phone-{path}", page)
