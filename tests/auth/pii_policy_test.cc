// The prompt PII policy: resolution (key over tenant) and its storage in KeyStore on both backends, including the
// caches (a changed policy reaches authenticate() at once on this store, within the TTL on another replica).
#include "auth/pii_policy.h"

#include <gtest/gtest.h>

#include <atomic>

#include "auth/key_store.h"
#include "auth/schema.h"
#include "tests/auth/state_db_fixture.h"

namespace citadel::auth {
namespace {

constexpr int64_t kNow = 1'700'000'000;

TEST(PiiPolicy, NamesRoundTripAndNothingElseParses) {
  for (PiiPolicy p : {PiiPolicy::kInherit, PiiPolicy::kOff, PiiPolicy::kMask, PiiPolicy::kReject})
    EXPECT_EQ(parse_pii_policy(pii_policy_name(p)), p);
  EXPECT_STREQ(pii_policy_name(PiiPolicy::kReject), "reject");
  for (const char* bad : {"", "Mask", "REJECT", "masked", "on", "none", " off", "off "})
    EXPECT_FALSE(parse_pii_policy(bad).has_value()) << bad;
}

TEST(PiiPolicy, KeyOverridesTenantUnlessItInherits) {
  using P = PiiPolicy;
  // {key, tenant, expected}
  const P table[][3] = {
      {P::kInherit, P::kOff, P::kOff},      {P::kInherit, P::kMask, P::kMask},  {P::kInherit, P::kReject, P::kReject},
      {P::kOff, P::kReject, P::kOff},       {P::kMask, P::kReject, P::kMask},   {P::kReject, P::kOff, P::kReject},
      {P::kMask, P::kOff, P::kMask},        {P::kInherit, P::kInherit, P::kOff},
  };
  for (const auto& row : table)
    EXPECT_EQ(resolve_pii_policy(row[0], row[1]), row[2])
        << pii_policy_name(row[0]) << " over " << pii_policy_name(row[1]);
  EXPECT_LT(pii_policy_strictness(P::kOff), pii_policy_strictness(P::kMask));
  EXPECT_LT(pii_policy_strictness(P::kMask), pii_policy_strictness(P::kReject));
  EXPECT_EQ(pii_policy_strictness(P::kInherit), pii_policy_strictness(P::kOff));
}

class PiiPolicyStoreTest : public testing::StateDbTest {
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
  std::pair<ApiKeyInfo, std::string> make(const std::string& tenant, PiiPolicy pii) {
    NewKey k;
    k.name = "k", k.role = Role::kDeveloper, k.tenant = tenant, k.pii = pii;
    auto r = keys_->create(k, kNow);
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    return r.ok() ? *r : std::pair<ApiKeyInfo, std::string>();
  }
  PiiPolicy effective(const std::string& raw) {
    auto a = keys_->authenticate(raw, kNow);
    EXPECT_TRUE(a.ok()) << a.status().to_string();
    return a.ok() ? a->effective_pii : PiiPolicy::kInherit;
  }

  std::unique_ptr<KeyStore> keys_;
  std::atomic<int64_t> clock_{1000};
};

TEST_P(PiiPolicyStoreTest, DefaultsAreInheritAndOff) {
  auto [info, raw] = make("default", PiiPolicy::kInherit);
  EXPECT_EQ(info.pii, PiiPolicy::kInherit);
  EXPECT_EQ(info.effective_pii, PiiPolicy::kOff);
  auto t = keys_->get_tenant("default");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->pii, PiiPolicy::kOff);
  EXPECT_EQ(effective(raw), PiiPolicy::kOff);
}

TEST_P(PiiPolicyStoreTest, TenantPolicyIsInheritedAndAKeysOwnWins) {
  ASSERT_TRUE(keys_->create_tenant("bank", "Bank", QuotaLimits(), kNow, PiiPolicy::kReject).ok());
  auto [inheriting, raw_i] = make("bank", PiiPolicy::kInherit);
  auto [masking, raw_m] = make("bank", PiiPolicy::kMask);
  auto [open, raw_o] = make("bank", PiiPolicy::kOff);
  EXPECT_EQ(inheriting.effective_pii, PiiPolicy::kReject);
  EXPECT_EQ(effective(raw_i), PiiPolicy::kReject);
  EXPECT_EQ(effective(raw_m), PiiPolicy::kMask);
  EXPECT_EQ(effective(raw_o), PiiPolicy::kOff);

  // Listings and get() show both the key's own and the effective policy.
  auto ks = keys_->list(std::string("bank"));
  ASSERT_TRUE(ks.ok());
  ASSERT_EQ(ks->size(), 3u);
  int seen = 0;
  for (const auto& k : *ks) {
    if (k.id == inheriting.id) {
      EXPECT_EQ(k.pii, PiiPolicy::kInherit);
      EXPECT_EQ(k.effective_pii, PiiPolicy::kReject);
      ++seen;
    }
    if (k.id == masking.id) {
      EXPECT_EQ(k.pii, PiiPolicy::kMask);
      EXPECT_EQ(k.effective_pii, PiiPolicy::kMask);
      ++seen;
    }
  }
  EXPECT_EQ(seen, 2);
  auto g = keys_->get(open.id);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->pii, PiiPolicy::kOff);
  EXPECT_EQ(g->effective_pii, PiiPolicy::kOff);
}

TEST_P(PiiPolicyStoreTest, UpdatesInvalidateTheCacheAtOnce) {
  ASSERT_TRUE(keys_->create_tenant("clinic", "Clinic", QuotaLimits(), kNow).ok());
  auto [info, raw] = make("clinic", PiiPolicy::kInherit);
  EXPECT_EQ(effective(raw), PiiPolicy::kOff);  // cached now
  ASSERT_TRUE(keys_->update_tenant("clinic", std::nullopt, std::nullopt, PiiPolicy::kMask).ok());
  EXPECT_EQ(effective(raw), PiiPolicy::kMask);  // same clock: the cache was dropped
  ASSERT_TRUE(keys_->update_pii(info.id, PiiPolicy::kReject).ok());
  EXPECT_EQ(effective(raw), PiiPolicy::kReject);
  ASSERT_TRUE(keys_->update_pii(info.id, PiiPolicy::kInherit).ok());
  EXPECT_EQ(effective(raw), PiiPolicy::kMask);
  auto t = keys_->get_tenant("clinic");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->pii, PiiPolicy::kMask);
  // Other fields of update_tenant leave the policy alone.
  ASSERT_TRUE(keys_->update_tenant("clinic", QuotaLimits(), false).ok());
  EXPECT_EQ(keys_->get_tenant("clinic")->pii, PiiPolicy::kMask);
}

TEST_P(PiiPolicyStoreTest, AnotherReplicasChangeArrivesWithinTheTtl) {
  auto [info, raw] = make("default", PiiPolicy::kInherit);
  EXPECT_EQ(effective(raw), PiiPolicy::kOff);
  auto db2 = open();
  KeyStore replica(db2.get());
  ASSERT_TRUE(replica.update_pii(info.id, PiiPolicy::kReject).ok());
  clock_ = 1001;
  EXPECT_EQ(effective(raw), PiiPolicy::kOff);  // still cached
  clock_ = 1002;
  EXPECT_EQ(effective(raw), PiiPolicy::kReject);
}

TEST_P(PiiPolicyStoreTest, RotateKeepsThePolicy) {
  ASSERT_TRUE(keys_->create_tenant("ins", "Insurer", QuotaLimits(), kNow, PiiPolicy::kMask).ok());
  auto [info, raw] = make("ins", PiiPolicy::kReject);
  auto r = keys_->rotate(info.id, 0, kNow);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->first.pii, PiiPolicy::kReject);
  EXPECT_EQ(effective(r->second), PiiPolicy::kReject);
}

TEST_P(PiiPolicyStoreTest, ValidationAndUnknownIds) {
  // A tenant has nothing to inherit from.
  auto t = keys_->create_tenant("x", "X", QuotaLimits(), kNow, PiiPolicy::kInherit);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(keys_->update_tenant("default", std::nullopt, std::nullopt, PiiPolicy::kInherit).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(keys_->update_pii("0123456789ab", PiiPolicy::kMask).code(), StatusCode::kNotFound);
  EXPECT_EQ(keys_->update_pii("nope", PiiPolicy::kMask).code(), StatusCode::kNotFound);
}

TEST_P(PiiPolicyStoreTest, UnknownStoredValueIsDataLossNotOff) {
  auto [info, raw] = make("default", PiiPolicy::kMask);
  ASSERT_TRUE(db_->exec("UPDATE api_keys SET pii = 'sometimes' WHERE id = ?", {info.id}).ok());
  KeyStore fresh(db_.get());
  auto a = fresh.authenticate(raw, kNow);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kDataLoss);
}

INSTANTIATE_TEST_SUITE_P(Backends, PiiPolicyStoreTest, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

// A database made by a binary before version 3 gets the columns with the defaults: nothing changes for its keys.
TEST(PiiPolicyMigration, UpgradeFromVersion1KeepsBehaviour) {
  std::string dir;
  std::string reason;
  const std::string url = citadel::testing::test_database_url(false, &dir, &reason);
  ASSERT_FALSE(url.empty()) << reason;
  {
    auto db = store::open_database(url);
    ASSERT_TRUE(db.ok());
    std::vector<store::Migration> v1 = {state_migrations().front()};
    ASSERT_EQ(v1[0].version, 1);
    ASSERT_TRUE(store::migrate(**db, v1).ok());
    ASSERT_TRUE((*db)
                    ->exec("INSERT INTO api_keys (id, secret_hash, name, role, tenant, created_at) VALUES "
                           "('0123456789ab', 'x', 'old', 'guest', 'default', 1)")
                    .ok());
  }
  auto db = store::open_database(url);
  ASSERT_TRUE(db.ok());
  auto v = store::migrate(**db, state_migrations());
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_EQ(*v, 3);
  KeyStore keys(db->get());
  auto k = keys.get("0123456789ab");
  ASSERT_TRUE(k.ok()) << k.status().to_string();
  EXPECT_EQ(k->pii, PiiPolicy::kInherit);
  EXPECT_EQ(k->effective_pii, PiiPolicy::kOff);
  EXPECT_EQ(keys.get_tenant("default")->pii, PiiPolicy::kOff);
  db->reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace citadel::auth
