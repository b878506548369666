// KeyStore on both backends: SQLite in a temp dir, PostgreSQL through tests/store/pg_fixture.h (skipped with the
// fixture's reason when no server can start).
#include "auth/key_store.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <regex>
#include <thread>

#include "auth/schema.h"
#include "base/sha256.h"
#include "tests/auth/state_db_fixture.h"

namespace citadel::auth {
namespace {

using testing::Lim;

constexpr int64_t kNow = 1'700'000'000;

class KeyStoreTest : public testing::StateDbTest {
 protected:
  void SetUp() override {
    StateDbTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    KeyStore::Options o;
    o.clock = [this] { return clock_.load(); };
    keys_ = std::make_unique<KeyStore>(db_.get(), o);
  }
  void TearDown() override {
    keys_.reset();
    StateDbTest::TearDown();
  }

  std::pair<ApiKeyInfo, std::string> make(const std::string& name, Role role = Role::kDeveloper,
                                          const std::string& tenant = "default") {
    NewKey k;
    k.name = name, k.role = role, k.tenant = tenant, k.created_by = "key:tester";
    auto r = keys_->create(k, kNow);
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    return r.ok() ? *r : std::pair<ApiKeyInfo, std::string>();
  }

  std::unique_ptr<KeyStore> keys_;
  std::atomic<int64_t> clock_{1000};
};

TEST_P(KeyStoreTest, CreateThenAuthenticate) {
  NewKey k;
  k.name = "ci pipeline";
  k.role = Role::kDeveloper;
  k.allowed_models = {"qwen-7b", "smollm2"};
  k.created_by = "key:admin1";
  auto r = keys_->create(k, kNow);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const auto& [info, raw] = *r;
  EXPECT_TRUE(std::regex_match(raw, std::regex("ck-[0-9a-f]{12}-[A-Za-z0-9_-]{43}"))) << raw;
  EXPECT_EQ(raw.substr(3, 12), info.id);
  EXPECT_EQ(info.created_at, kNow);
  EXPECT_EQ(info.tenant, "default");

  auto a = keys_->authenticate(raw, kNow + 5);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ(a->id, info.id);
  EXPECT_EQ(a->name, "ci pipeline");
  EXPECT_EQ(a->role, Role::kDeveloper);
  EXPECT_EQ(a->allowed_models, (std::vector<std::string>{"qwen-7b", "smollm2"}));
  EXPECT_EQ(a->created_by, "key:admin1");
  EXPECT_EQ(a->effective_limits.requests_per_minute, default_role_limits(Role::kDeveloper).requests_per_minute);

  // Two keys never share an id or a secret.
  auto [info2, raw2] = make("second");
  EXPECT_NE(info2.id, info.id);
  EXPECT_NE(raw2.substr(16), raw.substr(16));
  auto n = keys_->count_active(kNow);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2);
}

TEST_P(KeyStoreTest, MalformedKeysAreRejectedWithoutEcho) {
  auto [info, raw] = make("k");
  std::vector<std::string> bad = {
      "",
      "ck-",
      "sk-" + raw.substr(3),                                  // wrong prefix
      "CK-" + raw.substr(3),
      raw.substr(0, raw.size() - 1),                          // short secret
      raw + "A",                                              // long secret
      "ck-" + raw.substr(3, 11) + "-" + raw.substr(16) + "A", // short id
      "ck-ABCDEF012345-" + raw.substr(16),                    // upper-case hex id
      "ck-zzzzzzzzzzzz-" + raw.substr(16),                    // non-hex id
      "ck-" + info.id + "_" + raw.substr(16),                 // wrong separator
      raw.substr(0, 20) + "+" + raw.substr(21),               // not base64url
      raw.substr(0, 20) + "=" + raw.substr(21),
      std::string(1 << 20, 'a'),                              // 1 MB
      "ck-" + std::string(1 << 20, 'a'),
      "' OR 1=1 --",
      "ck-' OR 1=1 --",
      "ck-" + info.id + "-' OR '1'='1' -- xxxxxxxxxxxxxxxxxxxxxxxxx",
      raw + std::string(1, '\0'),
      " " + raw,
  };
  for (const auto& b : bad) {
    auto a = keys_->authenticate(b, kNow);
    ASSERT_FALSE(a.ok()) << b.substr(0, 80);
    EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument) << b.substr(0, 80);
    EXPECT_EQ(a.status().message(), "malformed API key");
    EXPECT_EQ(auth_failure_of(a.status()), AuthFailure::kMalformed);
  }
  EXPECT_TRUE(keys_->authenticate(raw, kNow).ok());  // the real one still works
}

TEST_P(KeyStoreTest, UnknownIdAndWrongSecret) {
  auto [info, raw] = make("k");
  const std::string other_id = info.id == "000000000000" ? "000000000001" : "000000000000";
  auto a = keys_->authenticate("ck-" + other_id + "-" + raw.substr(16), kNow);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(a.status().message(), "invalid API key");

  std::string wrong = raw;
  wrong.back() = wrong.back() == 'A' ? 'B' : 'A';
  for (int i = 0; i < 2; ++i) {  // the second time from the cache
    a = keys_->authenticate(wrong, kNow);
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.status().code(), StatusCode::kNotFound);
    EXPECT_EQ(auth_failure_of(a.status()), AuthFailure::kInvalidKey);
  }
}

TEST_P(KeyStoreTest, RawKeyNeverStored) {
  auto [info, raw] = make("k");
  auto rotated = keys_->rotate(info.id, 60, kNow);
  ASSERT_TRUE(rotated.ok()) << rotated.status().to_string();
  auto boot = keys_->ensure_bootstrap_admin(kNow);
  ASSERT_TRUE(boot.ok());
  for (const std::string& r : {raw, rotated->second, *boot}) {
    const std::string secret = r.substr(16);
    auto rows = db_->query("SELECT id, secret_hash, name, role, tenant, allowed_models, rotated_from, created_by "
                           "FROM api_keys");
    ASSERT_TRUE(rows.ok());
    ASSERT_EQ(rows->size(), 3u);
    for (const auto& row : *rows)
      for (const auto& v : row) {
        const std::string text = store::as_text(v);
        EXPECT_EQ(text.find(secret), std::string::npos);
        EXPECT_EQ(text.find(secret.substr(0, 16)), std::string::npos);
      }
  }
  auto h = db_->query("SELECT secret_hash FROM api_keys WHERE id = ?", {info.id});
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(store::as_text((*h)[0][0]), sha256_hex(raw));
}

TEST_P(KeyStoreTest, ListGetRevoke) {
  ASSERT_TRUE(keys_->create_tenant("acme", "ACME Corp", {}, kNow).ok());
  auto [a, raw_a] = make("a");
  auto [b, raw_b] = make("b", Role::kGuest, "acme");
  auto all = keys_->list();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 2u);
  auto acme = keys_->list(std::string("acme"));
  ASSERT_TRUE(acme.ok());
  ASSERT_EQ(acme->size(), 1u);
  EXPECT_EQ((*acme)[0].id, b.id);
  EXPECT_EQ((*acme)[0].role, Role::kGuest);

  auto g = keys_->get(a.id);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->name, "a");
  EXPECT_EQ(keys_->get("ffffffffffff").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(keys_->get("x' OR 1=1").status().code(), StatusCode::kNotFound);

  ASSERT_TRUE(keys_->authenticate(raw_a, kNow).ok());  // cached now
  ASSERT_TRUE(keys_->revoke(a.id, kNow + 10).ok());
  auto r = keys_->authenticate(raw_a, kNow + 11);  // a local revoke takes effect at once
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "API key revoked");
  EXPECT_EQ(auth_failure_of(r.status()), AuthFailure::kRevoked);
  EXPECT_TRUE(keys_->revoke(a.id, kNow + 20).ok());  // twice: keeps the first time
  EXPECT_EQ(keys_->get(a.id)->revoked_at, kNow + 10);
  EXPECT_EQ(keys_->revoke("ffffffffffff", kNow).code(), StatusCode::kNotFound);
  EXPECT_TRUE(keys_->authenticate(raw_b, kNow).ok());
  EXPECT_EQ(*keys_->count_active(kNow + 11), 1);
}

TEST_P(KeyStoreTest, RotateWithGrace) {
  auto [old_info, old_raw] = make("svc");
  ASSERT_TRUE(keys_->update_limits(old_info.id, Lim().rpm(7)).ok());
  auto r = keys_->rotate(old_info.id, 300, kNow + 100);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const auto& [info, raw] = *r;
  EXPECT_NE(info.id, old_info.id);
  EXPECT_EQ(info.rotated_from, old_info.id);
  EXPECT_EQ(info.name, "svc");
  EXPECT_EQ(info.limits.requests_per_minute, 7);

  EXPECT_TRUE(keys_->authenticate(old_raw, kNow + 399).ok());  // inside the grace period
  auto late = keys_->authenticate(old_raw, kNow + 400);
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().message(), "API key expired");
  EXPECT_EQ(auth_failure_of(late.status()), AuthFailure::kExpired);
  auto n = keys_->authenticate(raw, kNow + 400);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->effective_limits.requests_per_minute, 7);

  // Grace 0: the old key is invalid at once; a revoked key cannot be rotated.
  auto r2 = keys_->rotate(info.id, 0, kNow + 500);
  ASSERT_TRUE(r2.ok());
  EXPECT_FALSE(keys_->authenticate(raw, kNow + 500).ok());
  EXPECT_TRUE(keys_->authenticate(r2->second, kNow + 500).ok());
  ASSERT_TRUE(keys_->revoke(r2->first.id, kNow + 600).ok());
  EXPECT_EQ(keys_->rotate(r2->first.id, 10, kNow + 700).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(keys_->rotate("ffffffffffff", 10, kNow).status().code(), StatusCode::kNotFound);
}

TEST_P(KeyStoreTest, RotateKeepsAnEarlierExpiry) {
  NewKey k;
  k.name = "short";
  k.expires_at = kNow + 50;
  auto c = keys_->create(k, kNow);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(keys_->rotate(c->first.id, 1000, kNow + 10).ok());
  EXPECT_EQ(keys_->get(c->first.id)->expires_at, kNow + 50);
}

TEST_P(KeyStoreTest, Expiry) {
  NewKey k;
  k.name = "temp";
  k.expires_at = kNow + 10;
  auto c = keys_->create(k, kNow);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(keys_->authenticate(c->second, kNow + 9).ok());
  auto a = keys_->authenticate(c->second, kNow + 10);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_FALSE(c->first.active(kNow + 10));
  EXPECT_TRUE(c->first.active(kNow + 9));
  k.expires_at = kNow;
  EXPECT_EQ(keys_->create(k, kNow).status().code(), StatusCode::kInvalidArgument);
  k.expires_at = kNow - 100;
  EXPECT_EQ(keys_->create(k, kNow).status().code(), StatusCode::kInvalidArgument);
}

TEST_P(KeyStoreTest, NameAndModelValidation) {
  NewKey k;
  for (const std::string& bad : {std::string(), std::string(129, 'x'), std::string("tab\there"),
                                 std::string("nl\n"), std::string("\xff\xfe"), std::string("cut \xe4\xb8")}) {
    k.name = bad;
    EXPECT_EQ(keys_->create(k, kNow).status().code(), StatusCode::kInvalidArgument) << bad;
  }
  k.name = std::string(128, 'x');
  EXPECT_TRUE(keys_->create(k, kNow).ok());
  k.name = "\xe7\xa0\x94\xe5\x8f\x91\xe9\x83\xa8 key";  // UTF-8 text is fine
  EXPECT_TRUE(keys_->create(k, kNow).ok());
  k.allowed_models = {"a,b"};
  EXPECT_EQ(keys_->create(k, kNow).status().code(), StatusCode::kInvalidArgument);
  k.allowed_models = {""};
  EXPECT_EQ(keys_->create(k, kNow).status().code(), StatusCode::kInvalidArgument);
}

TEST_P(KeyStoreTest, Tenants) {
  NewKey k;
  k.name = "x";
  k.tenant = "nope";
  auto c = keys_->create(k, kNow);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(c.status().message(), "tenant 'nope' does not exist");
  k.tenant = "Bad Tenant";
  EXPECT_EQ(keys_->create(k, kNow).status().code(), StatusCode::kInvalidArgument);

  for (const std::string& bad : {std::string(), std::string("-a"), std::string("_a"), std::string("A"),
                                 std::string(65, 'a'), std::string("a b"), std::string("a'; DROP TABLE x")})
    EXPECT_EQ(keys_->create_tenant(bad, "n", {}, kNow).status().code(), StatusCode::kInvalidArgument) << bad;
  ASSERT_TRUE(keys_->create_tenant(std::string(64, 'a'), "long", {}, kNow).ok());
  ASSERT_TRUE(keys_->create_tenant("radiology-2_a", "Radiology", Lim().tpm(5000), kNow).ok());
  EXPECT_EQ(keys_->create_tenant("radiology-2_a", "again", {}, kNow).status().code(), StatusCode::kInvalidArgument);
  auto t = keys_->get_tenant("radiology-2_a");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->name, "Radiology");
  EXPECT_EQ(t->limits.tokens_per_minute, 5000);
  EXPECT_FALSE(t->limits.requests_per_minute.has_value());
  EXPECT_EQ(keys_->get_tenant("missing").status().code(), StatusCode::kNotFound);
  auto all = keys_->list_tenants();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 3u);  // default + 2

  k.tenant = "radiology-2_a";
  auto key = keys_->create(k, kNow);
  ASSERT_TRUE(key.ok());
  EXPECT_TRUE(keys_->authenticate(key->second, kNow).ok());
  ASSERT_TRUE(keys_->update_tenant("radiology-2_a", Lim().tpm(10), true).ok());
  EXPECT_EQ(keys_->get_tenant("radiology-2_a")->limits.tokens_per_minute, 10);
  EXPECT_TRUE(keys_->get_tenant("radiology-2_a")->disabled);
  auto a = keys_->authenticate(key->second, kNow);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().message(), "tenant disabled");
  EXPECT_EQ(auth_failure_of(a.status()), AuthFailure::kTenantDisabled);
  EXPECT_EQ(keys_->create(k, kNow).status().code(), StatusCode::kInvalidArgument);  // disabled tenant
  ASSERT_TRUE(keys_->update_tenant("radiology-2_a", std::nullopt, false).ok());
  EXPECT_TRUE(keys_->authenticate(key->second, kNow).ok());
  EXPECT_EQ(keys_->update_tenant("missing", std::nullopt, true).code(), StatusCode::kNotFound);
}

TEST_P(KeyStoreTest, BootstrapAdminExactlyOnce) {
  auto first = keys_->ensure_bootstrap_admin(kNow);
  ASSERT_TRUE(first.ok()) << first.status().to_string();
  ASSERT_FALSE(first->empty());
  auto again = keys_->ensure_bootstrap_admin(kNow + 1);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->empty());
  auto a = keys_->authenticate(*first, kNow);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->role, Role::kAdmin);
  EXPECT_EQ(a->name, "bootstrap-admin");

  // Two replicas racing on a fresh database make one key between them.
  ASSERT_TRUE(keys_->revoke(a->id, kNow + 2).ok());
  auto db2 = open();
  KeyStore other(db2.get());
  std::string r1, r2;
  std::thread t1([&] { r1 = keys_->ensure_bootstrap_admin(kNow + 3).value(); });
  std::thread t2([&] { r2 = other.ensure_bootstrap_admin(kNow + 3).value(); });
  t1.join();
  t2.join();
  EXPECT_NE(r1.empty(), r2.empty());
  EXPECT_EQ(*keys_->count_active(kNow + 3), 1);
}

TEST_P(KeyStoreTest, BootstrapAdminFromSuppliedKey) {
  EXPECT_EQ(keys_->ensure_bootstrap_admin(kNow, "not-a-key").status().code(), StatusCode::kInvalidArgument);
  const std::string supplied = "ck-0123456789ab-" + std::string(43, 'Q');
  auto r = keys_->ensure_bootstrap_admin(kNow, supplied);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(*r, supplied);
  auto a = keys_->authenticate(supplied, kNow);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->id, "0123456789ab");
  EXPECT_EQ(a->role, Role::kAdmin);
  EXPECT_TRUE(keys_->ensure_bootstrap_admin(kNow, supplied)->empty());  // restart with the same env: nothing
  ASSERT_TRUE(keys_->revoke("0123456789ab", kNow).ok());
  EXPECT_EQ(keys_->ensure_bootstrap_admin(kNow, supplied).status().code(), StatusCode::kInvalidArgument);
}

TEST_P(KeyStoreTest, LimitsInheritance) {
  const QuotaLimits builtin = default_role_limits(Role::kDeveloper);
  auto [info, raw] = make("dev");
  EXPECT_EQ(keys_->authenticate(raw, kNow)->effective_limits.tokens_per_minute, builtin.tokens_per_minute);

  ASSERT_TRUE(keys_->set_role_limits(Role::kDeveloper, Lim().tpm(1234)).ok());
  EXPECT_EQ(keys_->role_limits(Role::kDeveloper)->tokens_per_minute, 1234);
  EXPECT_FALSE(keys_->role_limits(Role::kDeveloper)->requests_per_minute.has_value());
  EXPECT_FALSE(keys_->role_limits(Role::kGuest)->tokens_per_minute.has_value());
  auto a = keys_->authenticate(raw, kNow);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->effective_limits.tokens_per_minute, 1234);                          // role table
  EXPECT_EQ(a->effective_limits.requests_per_minute, builtin.requests_per_minute);  // built-in
  EXPECT_FALSE(a->limits.tokens_per_minute.has_value());                          // own: not set

  ASSERT_TRUE(keys_->update_limits(info.id, Lim().tpm(99).daily(-1)).ok());
  a = keys_->authenticate(raw, kNow);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->effective_limits.tokens_per_minute, 99);  // the key's own
  EXPECT_EQ(a->effective_limits.daily_tokens, -1);
  EXPECT_EQ(keys_->effective_role_limits(Role::kDeveloper).tokens_per_minute, 1234);
  EXPECT_EQ(keys_->effective_role_limits(Role::kGuest).tokens_per_minute,
            default_role_limits(Role::kGuest).tokens_per_minute);
  EXPECT_EQ(keys_->update_limits("ffffffffffff", {}).code(), StatusCode::kNotFound);
}

// A revoke through another replica's KeyStore reaches this one's cache within the TTL (2 s by default).
TEST_P(KeyStoreTest, RemoteRevokeTakesEffectWithinTtl) {
  auto [info, raw] = make("shared");
  auto db2 = open();
  KeyStore replica(db2.get());
  ASSERT_TRUE(keys_->authenticate(raw, kNow).ok());  // cached at clock 1000
  ASSERT_TRUE(replica.revoke(info.id, kNow).ok());
  clock_ = 1001;
  EXPECT_TRUE(keys_->authenticate(raw, kNow).ok());  // still cached: the TTL bounds the delay
  clock_ = 1002;
  auto a = keys_->authenticate(raw, kNow);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(auth_failure_of(a.status()), AuthFailure::kRevoked);
  EXPECT_FALSE(replica.authenticate(raw, kNow).ok());

  // The same holds for a tenant disabled elsewhere.
  auto [info2, raw2] = make("second");
  ASSERT_TRUE(keys_->authenticate(raw2, kNow).ok());
  ASSERT_TRUE(replica.update_tenant("default", std::nullopt, true).ok());
  EXPECT_TRUE(keys_->authenticate(raw2, kNow).ok());
  clock_ = 1004;
  EXPECT_FALSE(keys_->authenticate(raw2, kNow).ok());
}

TEST_P(KeyStoreTest, ConcurrentAuthentication) {
  auto [info, raw] = make("hot");
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        if (keys_->authenticate(raw, kNow).ok()) ++ok;
        if (i % 50 == 0) clock_ += t == 0 ? 1 : 0;  // expire the cache now and then
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 800);
}

INSTANTIATE_TEST_SUITE_P(Backends, KeyStoreTest, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace citadel::auth
