"""The prompt PII policy on a real server with the official openai SDK: per tenant and per key (the key's own
setting wins), reject answers 400 pii_detected before anything runs, mask hides the values from the model (seen
through the debug model's echo and its byte-exact prompt token counts), false-positive lookalikes pass, the admin
API and the CLI set and show the policy, and the audit log records the policy and the counts, never the values.

The server runs the byte-level debug model (`debug:bytes`: one token per byte, so prompt_tokens counts bytes)."""
import subprocess
import time
import uuid

import openai
import pytest
import requests

from conftest import Server, _binary

MOBILE = "13800138000"
RESIDENT_ID = "11010519491231002X"   # GB 11643 check character X
CARD = "6222021234567890128"         # passes Luhn
EMPLOYEE = "EMP-004211"              # the server's extra pattern employee_id
MODEL = "dbg"


@pytest.fixture(scope="module")
def server():
    s = Server(["--model", "debug:bytes", "--served-model-name", MODEL, "--pii-extra-patterns",
                "employee_id=EMP-[0-9]{6}"])
    yield s
    assert s.stop() == 0, "".join(s.stderr[-20:])


def post(server, path, body, expect=(200, 201)):
    r = server.http.post(server.base_url + path, json=body, timeout=30)
    assert r.status_code in expect, r.text
    return r.json()


def make_key(server, tenant="default", **extra):
    body = {"name": "pii-" + uuid.uuid4().hex[:6], "role": "developer", "tenant": tenant}
    body.update(extra)
    return post(server, "/admin/v1/keys", body)


@pytest.fixture(scope="module")
def tenants(server):
    post(server, "/admin/v1/tenants", {"id": "bank", "name": "Bank", "pii": "reject"})
    post(server, "/admin/v1/tenants", {"id": "clinic", "name": "Clinic", "pii": "mask"})
    return ("bank", "clinic")


def sdk(server, key):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=60)


def chat(client, text, **kw):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}],
                                          max_tokens=2, temperature=0, **kw)


def echo(client, prompt):
    """The prompt text the model received (completions echo it back before the generated tokens)."""
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=1, temperature=0, echo=True)
    return r.choices[0].text


def assert_rejected(call, kinds):
    with pytest.raises(openai.BadRequestError) as ei:
        call()
    err = ei.value
    assert err.status_code == 400
    assert err.code == "pii_detected"
    body = err.body if isinstance(err.body, dict) else {}
    assert body.get("type") == "invalid_request_error", err.body
    msg = body.get("message", "")
    for k in kinds:
        assert k in msg, msg
    for v in (MOBILE, RESIDENT_ID, CARD, EMPLOYEE):
        assert v not in msg
    return msg


def test_reject_key_refuses_pii_and_passes_clean_and_lookalikes(server):
    key = make_key(server, pii="reject")
    assert key["pii"] == "reject" and key["effective_pii"] == "reject"
    c = sdk(server, key["key"])
    msg = assert_rejected(lambda: chat(c, f"我的手机号是{MOBILE}，身份证号码{RESIDENT_ID}，银行卡{CARD}。"),
                          ["mobile_phone", "resident_id", "bank_card"])
    assert "3 findings" in msg, msg
    assert_rejected(lambda: chat(c, f"card {CARD}", stream=True), ["1 bank_card"])
    assert_rejected(lambda: c.completions.create(model=MODEL, prompt=["fine", f"ID {RESIDENT_ID}"], max_tokens=1),
                    ["resident_id"])
    # System and tool messages are scanned too; so is the operator's extra pattern.
    assert_rejected(lambda: c.chat.completions.create(
        model=MODEL, max_tokens=1, messages=[{"role": "system", "content": f"Staff {EMPLOYEE} on duty"},
                                             {"role": "user", "content": "hello"}]), ["employee_id"])
    # Native infer route.
    r = requests.post(server.base_url + "/api/v1/infer", json={"prompt": f"tel {MOBILE}", "max_tokens": 1},
                      headers={"Authorization": "Bearer " + key["key"]}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "pii_detected", r.text
    # Clean text and numbers that only look like personal data pass.
    assert chat(c, "Summarise the quarterly report in one sentence.").choices[0].finish_reason in ("stop", "length")
    ok = chat(c, "订单号 ORD20260131123456789 于 2026-01-31 14:05:09 发货，金额 13800.00 元；版本 1.2.3.4")
    assert ok.usage.prompt_tokens > 0
    ok = chat(c, "Order 2026013112345678 shipped on 2026/01/31, ISBN 978-7-111-54742-6", stream=False)
    assert ok.choices


def test_mask_key_hides_values_from_the_model(server):
    plain = sdk(server, make_key(server, pii="off")["key"])
    masked = sdk(server, make_key(server, pii="mask")["key"])
    text = f"请联系 {MOBILE} 或 li.lei@example.com，员工 {EMPLOYEE}，卡 {CARD}"
    seen = echo(masked, text)
    assert seen.startswith("请联系 [PHONE] 或 [EMAIL]，员工 [EMPLOYEE_ID]，卡 [CARD]"), seen
    for v in (MOBILE, "li.lei@example.com", EMPLOYEE, CARD):
        assert v not in seen
    assert echo(plain, text).startswith(text)  # off: as sent
    # Chat: the byte-level model's prompt count drops by exactly what the placeholders save.
    t = f"身份证 {RESIDENT_ID} 手机 {MOBILE}"
    saved = (len(RESIDENT_ID) - len("[ID]")) + (len(MOBILE) - len("[PHONE]"))
    p_plain = chat(plain, t).usage.prompt_tokens
    assert p_plain - chat(masked, t).usage.prompt_tokens == saved
    # Streamed, with usage: the same masked count.
    stream = masked.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": t}], max_tokens=2,
                                            stream=True, stream_options={"include_usage": True})
    usage = [ch.usage for ch in stream if ch.usage]
    assert usage and p_plain - usage[-1].prompt_tokens == saved
    # Content-part arrays: each text part is masked.
    r = masked.chat.completions.create(model=MODEL, max_tokens=1, messages=[
        {"role": "user", "content": [{"type": "text", "text": f"A {MOBILE}"}, {"type": "text", "text": " B"}]}])
    r0 = plain.chat.completions.create(model=MODEL, max_tokens=1, messages=[
        {"role": "user", "content": [{"type": "text", "text": f"A {MOBILE}"}, {"type": "text", "text": " B"}]}])
    assert r0.usage.prompt_tokens - r.usage.prompt_tokens == len(MOBILE) - len("[PHONE]")


def test_tenant_policy_is_inherited_and_a_keys_own_wins(server, tenants):
    bank, clinic = tenants
    inherit_bank = make_key(server, tenant=bank)
    assert inherit_bank["pii"] == "inherit" and inherit_bank["effective_pii"] == "reject"
    assert_rejected(lambda: chat(sdk(server, inherit_bank["key"]), f"tel {MOBILE}"), ["mobile_phone"])
    mask_in_bank = make_key(server, tenant=bank, pii="mask")
    assert echo(sdk(server, mask_in_bank["key"]), f"tel {MOBILE}").startswith("tel [PHONE]")
    off_in_bank = make_key(server, tenant=bank, pii="off")
    assert echo(sdk(server, off_in_bank["key"]), f"tel {MOBILE}").startswith(f"tel {MOBILE}")
    inherit_clinic = make_key(server, tenant=clinic)
    assert echo(sdk(server, inherit_clinic["key"]), f"tel {MOBILE}").startswith("tel [PHONE]")
    reject_in_clinic = make_key(server, tenant=clinic, pii="reject")
    assert_rejected(lambda: chat(sdk(server, reject_in_clinic["key"]), f"tel {MOBILE}"), ["mobile_phone"])

    # Changing the tenant reaches its inheriting keys at once (this server's cache is dropped).
    r = server.http.patch(server.base_url + "/admin/v1/tenants/" + clinic, json={"pii": "off"}, timeout=30)
    assert r.status_code == 200 and r.json()["pii"] == "off", r.text
    assert echo(sdk(server, inherit_clinic["key"]), f"tel {MOBILE}").startswith(f"tel {MOBILE}")
    r = server.http.patch(server.base_url + "/admin/v1/tenants/" + clinic, json={"pii": "mask"}, timeout=30)
    assert r.status_code == 200
    # And a key's own change too.
    r = server.http.patch(server.base_url + "/admin/v1/keys/" + inherit_bank["id"], json={"pii": "mask"}, timeout=30)
    assert r.status_code == 200 and r.json()["pii"] == "mask" and r.json()["effective_pii"] == "mask", r.text
    assert echo(sdk(server, inherit_bank["key"]), f"tel {MOBILE}").startswith("tel [PHONE]")
    listed = server.http.get(server.base_url + "/admin/v1/keys?tenant=" + bank, timeout=30).json()["data"]
    by_id = {k["id"]: k for k in listed}
    assert by_id[off_in_bank["id"]]["pii"] == "off" and by_id[off_in_bank["id"]]["effective_pii"] == "off"
    assert by_id[inherit_bank["id"]]["pii"] == "mask"
    tl = {t["id"]: t for t in server.http.get(server.base_url + "/admin/v1/tenants", timeout=30).json()["data"]}
    assert tl[bank]["pii"] == "reject" and tl["default"]["pii"] == "off"


def test_admin_api_validates_the_field(server, tenants):
    bank, _ = tenants
    for path, body in [("/admin/v1/keys", {"name": "x", "role": "guest", "pii": "sometimes"}),
                       ("/admin/v1/keys", {"name": "x", "role": "guest", "pii": True}),
                       ("/admin/v1/tenants", {"id": "t-" + uuid.uuid4().hex[:6], "pii": "inherit"})]:
        r = server.http.post(server.base_url + path, json=body, timeout=30)
        assert r.status_code == 400, r.text
        e = r.json()["error"]
        assert e["param"] == "pii" and e["type"] == "invalid_request_error" and "pii" in e["message"]
    key = make_key(server)
    for path, body in [("/admin/v1/keys/" + key["id"], {"pii": "MASK"}), ("/admin/v1/tenants/" + bank, {"pii": 1}),
                       ("/admin/v1/tenants/" + bank, {"pii": "inherit"})]:
        r = server.http.patch(server.base_url + path, json=body, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "pii", r.text
    # A developer may tighten its tenant's policy on its keys, never loosen it.
    dev = make_key(server, tenant=bank)
    h = {"Authorization": "Bearer " + dev["key"]}
    r = requests.post(server.base_url + "/admin/v1/keys", json={"name": "loose", "role": "guest", "pii": "off"},
                      headers=h, timeout=30)
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied", r.text
    r = requests.post(server.base_url + "/admin/v1/keys", json={"name": "same", "role": "guest", "pii": "reject"},
                      headers=h, timeout=30)
    assert r.status_code == 201 and r.json()["effective_pii"] == "reject", r.text


def test_cli_creates_keys_with_a_policy(server):
    cli = [_binary(), "keys"]
    out = subprocess.run(cli + ["create", "--role", "guest", "--name", "cli-mask", "--pii", "mask", "--data-dir",
                                server.data_dir], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert echo(sdk(server, key), f"id {RESIDENT_ID}").startswith("id [ID]")
    listed = subprocess.run(cli + ["list", "--json", "--data-dir", server.data_dir], capture_output=True, text=True)
    assert '"pii": "mask"' in listed.stdout
    bad = subprocess.run(cli + ["create", "--role", "guest", "--name", "x", "--pii", "sometimes", "--data-dir",
                                server.data_dir], capture_output=True, text=True)
    assert bad.returncode != 0 and "--pii" in bad.stderr


def test_audit_records_policy_and_counts_never_values(server):
    key = make_key(server, pii="reject")
    c = sdk(server, key["key"])
    assert_rejected(lambda: chat(c, f"手机 {MOBILE} 和 13912345678，卡 {CARD}"), ["2 mobile_phone"])
    masked = make_key(server, pii="mask")
    echo(sdk(server, masked["key"]), f"mail li.lei@example.com")
    deadline = time.time() + 10
    found = {}
    while time.time() < deadline and len(found) < 2:
        recs = server.http.get(server.base_url + "/admin/v1/audit?kind=inference&limit=200", timeout=30).json()["data"]
        for rec in recs:
            if rec["principal"] in ("key:" + key["id"], "key:" + masked["id"]):
                found[rec["principal"]] = rec
        time.sleep(0.1)
    rej = found["key:" + key["id"]]
    assert rej["status"] == 400 and rej["detail"]["error_code"] == "pii_detected"
    assert rej["detail"]["pii_policy"] == "reject"
    assert rej["detail"]["pii_findings"] == "bank_card=1,mobile_phone=2"
    assert rej["detail"]["prompt_tokens"] == 0 and rej["detail"]["completion_tokens"] == 0  # never ran
    ok = found["key:" + masked["id"]]
    assert ok["status"] == 200 and ok["detail"]["pii_policy"] == "mask" and ok["detail"]["pii_findings"] == "email=1"
    everything = server.http.get(server.base_url + "/admin/v1/audit?limit=1000", timeout=30).text
    for v in (MOBILE, "13912345678", CARD, RESIDENT_ID, "li.lei@example.com", EMPLOYEE):
        assert v not in everything
    logs = "".join(server.stderr) + "".join(server.stdout_lines)
    for v in (MOBILE, CARD, RESIDENT_ID, "li.lei@example.com", EMPLOYEE):
        assert v not in logs


def test_bad_extra_pattern_refused_at_start(tmp_path):
    with pytest.raises(RuntimeError) as ei:
        Server(["--model", "debug:bytes", "--pii-extra-patterns", "case_no=CASE[0-9"], data_dir=str(tmp_path),
               ready_timeout=30)
    assert "pii_extra_patterns" in str(ei.value) and "case_no" in str(ei.value)
