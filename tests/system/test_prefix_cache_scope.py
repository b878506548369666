"""The prefix cache is namespaced by tenant: two tenants sending the same prompt never share cached KV blocks
(usage.prompt_tokens_details.cached_tokens stays 0 for the second tenant), while repeats within a tenant hit the
cache; with prefix_cache_scope=global the tenants share it knowingly."""
import uuid

import pytest
import requests

from conftest import Server


def _key_in_new_tenant(server):
    tenant = "pc-" + uuid.uuid4().hex[:8]
    r = server.http.post(server.base_url + "/admin/v1/tenants", json={"id": tenant}, timeout=30)
    assert r.status_code in (200, 201), r.text
    r = server.http.post(server.base_url + "/admin/v1/keys",
                         json={"name": "pc-" + uuid.uuid4().hex[:6], "role": "developer", "tenant": tenant}, timeout=30)
    assert r.status_code in (200, 201), r.text
    return r.json()["key"]


def _cached_tokens(server, key, prompt):
    body = {"model": "smollm2", "messages": [{"role": "user", "content": prompt}], "max_tokens": 1,
            "temperature": 0}
    r = requests.post(server.base_url + "/v1/chat/completions", json=body,
                      headers={"Authorization": "Bearer " + key}, timeout=120)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["prompt_tokens"] > 64  # several KV blocks: a shared prefix would show
    return usage["prompt_tokens_details"]["cached_tokens"]


def _prompt():
    # Unique per test run (the server is shared), long enough to fill several 16-token blocks.
    return f"Request {uuid.uuid4().hex}. " + " ".join(f"Item {i} is a number worth listing." for i in range(20))


def test_tenants_never_share_cached_blocks(server):
    a, b = _key_in_new_tenant(server), _key_in_new_tenant(server)
    prompt = _prompt()
    assert _cached_tokens(server, a, prompt) == 0
    assert _cached_tokens(server, a, prompt) > 32  # same tenant: the prompt's full blocks come from the cache
    assert _cached_tokens(server, b, prompt) == 0  # other tenant, same prompt: nothing shared
    assert _cached_tokens(server, b, prompt) > 32
    # The bootstrap admin key has its own (default) tenant: no hit on this prompt either. Other tests share that
    # tenant, so the chat template's opening block may be cached there already: compare with a prompt it never saw.
    _cached_tokens(server, server.admin_key, _prompt())  # now the template's opening block is cached there
    baseline = _cached_tokens(server, server.admin_key, _prompt())
    assert baseline < 32
    assert _cached_tokens(server, server.admin_key, prompt) == baseline


@pytest.fixture(scope="module")
def global_server(model_spec):
    s = Server(["--model", model_spec, "--served-model-name", "smollm2", "--max-context", "512",
                "--kv-memory-mb", "32", "--prefix-cache-scope", "global"])
    yield s
    assert s.stop() == 0, "".join(s.stderr[-20:])


def test_global_scope_shares_across_tenants(global_server):
    a, b = _key_in_new_tenant(global_server), _key_in_new_tenant(global_server)
    prompt = _prompt()
    assert _cached_tokens(global_server, a, prompt) == 0
    assert _cached_tokens(global_server, b, prompt) > 32


def test_bad_scope_is_refused(model_spec):
    with pytest.raises(RuntimeError, match="prefix_cache_scope must be tenant or global"):
        Server(["--model", model_spec, "--prefix-cache-scope", "everyone"], ready_timeout=60)
