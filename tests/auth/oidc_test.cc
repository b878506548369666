// OIDC verification against keys and tokens made here with OpenSSL: the accepted algorithms, every claim check and
// its leeway edge, the classic JWT attacks (alg none, HMAC keyed with the RSA public key, key-type confusion,
// tampering), key rotation through the fetch function, role and tenant mapping, and garbage input.
#include "auth/oidc.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

namespace citadel::auth {
namespace {

using nlohmann::json;
using PkeyPtr = std::shared_ptr<EVP_PKEY>;

constexpr int64_t kNow = 1'700'000'000;
const char kIssuer[] = "https://idp.example.com/realms/citadel";
const char kJwksUrl[] = "https://idp.example.com/realms/citadel/protocol/openid-connect/certs";

std::string b64(std::string_view s) { return base64url_encode(s); }

std::string bn_param(EVP_PKEY* k, const char* name, int pad_to = 0) {
  BIGNUM* bn = nullptr;
  EXPECT_EQ(EVP_PKEY_get_bn_param(k, name, &bn), 1) << name;
  std::string out(pad_to ? pad_to : BN_num_bytes(bn), '\0');
  BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(out.size()));
  BN_free(bn);
  return out;
}

json jwk_of(EVP_PKEY* k, const std::string& kid) {
  if (EVP_PKEY_is_a(k, "RSA"))
    return {{"kty", "RSA"}, {"kid", kid}, {"use", "sig"}, {"alg", "RS256"},
            {"n", b64(bn_param(k, OSSL_PKEY_PARAM_RSA_N))}, {"e", b64(bn_param(k, OSSL_PKEY_PARAM_RSA_E))}};
  return {{"kty", "EC"}, {"kid", kid}, {"crv", "P-256"},
          {"x", b64(bn_param(k, OSSL_PKEY_PARAM_EC_PUB_X, 32))}, {"y", b64(bn_param(k, OSSL_PKEY_PARAM_EC_PUB_Y, 32))}};
}

// EVP_DigestSign with SHA-256; for EC the DER signature becomes JWS's raw r||s.
std::string sign(EVP_PKEY* k, std::string_view input) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EXPECT_EQ(EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, k), 1);
  size_t len = 0;
  auto in = reinterpret_cast<const unsigned char*>(input.data());
  EXPECT_EQ(EVP_DigestSign(ctx, nullptr, &len, in, input.size()), 1);
  std::string sig(len, '\0');
  EXPECT_EQ(EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len, in, input.size()), 1);
  sig.resize(len);
  EVP_MD_CTX_free(ctx);
  if (EVP_PKEY_is_a(k, "RSA")) return sig;
  const unsigned char* p = reinterpret_cast<const unsigned char*>(sig.data());
  ECDSA_SIG* es = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
  std::string raw(64, '\0');
  BN_bn2binpad(ECDSA_SIG_get0_r(es), reinterpret_cast<unsigned char*>(raw.data()), 32);
  BN_bn2binpad(ECDSA_SIG_get0_s(es), reinterpret_cast<unsigned char*>(raw.data()) + 32, 32);
  ECDSA_SIG_free(es);
  return raw;
}

std::string hmac_sha256(std::string_view key, std::string_view data) {
  unsigned char out[32];
  size_t out_len = 0;
  EXPECT_NE(EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.data(), key.size(),
                      reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, sizeof out, &out_len),
            nullptr);
  return std::string(reinterpret_cast<char*>(out), out_len);
}

std::string public_pem(EVP_PKEY* k) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(bio, k);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(n));
  BIO_free(bio);
  return pem;
}

// {"keys":[...]}, spelled out: a one-element braced list would make nlohmann copy the element, not wrap it.
std::string jwks_doc(const std::vector<json>& keys) {
  json doc = json::object();
  doc["keys"] = json::array();
  for (const json& k : keys) doc["keys"].push_back(k);
  return doc.dump();
}

std::string unsigned_part(const json& header, const json& claims) {
  return b64(header.dump()) + "." + b64(claims.dump());
}

std::string make_token(EVP_PKEY* k, const json& header, const json& claims) {
  std::string input = unsigned_part(header, claims);
  return input + "." + b64(sign(k, input));
}

class OidcTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    rsa_ = PkeyPtr(EVP_RSA_gen(2048), EVP_PKEY_free);
    rsa2_ = PkeyPtr(EVP_RSA_gen(2048), EVP_PKEY_free);
    rsa1024_ = PkeyPtr(EVP_RSA_gen(1024), EVP_PKEY_free);
    ec_ = PkeyPtr(EVP_EC_gen("P-256"), EVP_PKEY_free);
    ASSERT_TRUE(rsa_ && rsa2_ && rsa1024_ && ec_);
  }
  static void TearDownTestSuite() { rsa_.reset(), rsa2_.reset(), rsa1024_.reset(), ec_.reset(); }

  void SetUp() override { set_jwks({jwk_of(rsa_.get(), "rsa1"), jwk_of(ec_.get(), "ec1")}); }

  void set_jwks(const std::vector<json>& keys) { jwks_text_ = jwks_doc(keys); }

  OidcConfig config() const {
    OidcConfig c;
    c.issuer = kIssuer;
    c.audiences = {"citadel"};
    c.jwks_url = kJwksUrl;
    return c;
  }

  JwksFetchFn fetch() {
    return [this](const std::string& url) -> Result<std::string> {
      ++fetch_count_;
      EXPECT_EQ(url, kJwksUrl);
      if (fetch_fails_) return IoError("connection refused");
      return jwks_text_;
    };
  }

  std::unique_ptr<OidcVerifier> verifier(const OidcConfig& c) {
    auto v = OidcVerifier::create(c, fetch());
    EXPECT_TRUE(v.ok()) << v.status().to_string();
    return v.ok() ? std::move(v).value() : nullptr;
  }
  std::unique_ptr<OidcVerifier> verifier() { return verifier(config()); }

  static json claims() {
    return {{"iss", kIssuer}, {"aud", "citadel"}, {"sub", "user-123"}, {"exp", kNow + 300}, {"iat", kNow - 10},
            {"preferred_username", "alice"}, {"citadel_role", "developer"}};
  }
  static std::string rs(const json& c, const std::string& kid = "rsa1") {
    return make_token(rsa_.get(), {{"alg", "RS256"}, {"typ", "JWT"}, {"kid", kid}}, c);
  }
  static std::string es(const json& c, const std::string& kid = "ec1") {
    return make_token(ec_.get(), {{"alg", "ES256"}, {"typ", "JWT"}, {"kid", kid}}, c);
  }

  // Refused with `reason` in the message, which never echoes the token or any sizeable piece of it.
  static void expect_refused(OidcVerifier& v, const std::string& token, const std::string& reason,
                             int64_t now = kNow) {
    Result<Principal> p = v.verify(token, now);
    ASSERT_FALSE(p.ok()) << "accepted: " << reason;
    EXPECT_NE(p.status().message().find(reason), std::string::npos) << p.status().message();
    for (size_t at = 0; at + 12 <= token.size(); at += 12)
      EXPECT_EQ(p.status().message().find(token.substr(at, 12)), std::string::npos) << p.status().message();
  }

  static PkeyPtr rsa_, rsa2_, rsa1024_, ec_;
  std::string jwks_text_;
  int fetch_count_ = 0;
  bool fetch_fails_ = false;
};

PkeyPtr OidcTest::rsa_, OidcTest::rsa2_, OidcTest::rsa1024_, OidcTest::ec_;

TEST_F(OidcTest, ValidRs256) {
  auto v = verifier();
  Result<Principal> p = v->verify(rs(claims()), kNow);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_EQ(p->kind, Principal::Kind::kOidc);
  EXPECT_EQ(p->id, "oidc:user-123");
  EXPECT_EQ(p->key_id, "");
  EXPECT_EQ(p->name, "alice");
  EXPECT_EQ(p->role, Role::kDeveloper);
  EXPECT_EQ(p->tenant, "default");
  EXPECT_EQ(v->key_count(), 2u);
}

TEST_F(OidcTest, ValidEs256AndNameFallsBackToSubject) {
  auto v = verifier();
  json c = claims();
  c.erase("preferred_username");
  Result<Principal> p = v->verify(es(c), kNow);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_EQ(p->name, "user-123");
  EXPECT_EQ(p->role, Role::kDeveloper);
}

TEST_F(OidcTest, ExpiryNotBeforeAndIssuedAtWithLeewayEdges) {
  auto v = verifier();  // leeway 60 s
  json c = claims();
  c["exp"] = kNow - 60;  // valid while now < exp + leeway
  expect_refused(*v, rs(c), "token expired");
  c["exp"] = kNow - 59;
  EXPECT_TRUE(v->verify(rs(c), kNow).ok());
  c["exp"] = kNow - 3600;
  expect_refused(*v, rs(c), "token expired");
  c["exp"] = static_cast<double>(kNow) + 10.5;  // NumericDate may be fractional
  EXPECT_TRUE(v->verify(rs(c), kNow).ok());
  c.erase("exp");
  expect_refused(*v, rs(c), "no expiry");
  c["exp"] = "tomorrow";
  expect_refused(*v, rs(c), "malformed exp");

  c = claims();
  c["nbf"] = kNow + 61;
  expect_refused(*v, rs(c), "not yet valid");
  c["nbf"] = kNow + 60;
  EXPECT_TRUE(v->verify(rs(c), kNow).ok());

  c = claims();
  c["iat"] = kNow + 61;
  expect_refused(*v, rs(c), "issued in the future");
  c["iat"] = kNow + 60;
  EXPECT_TRUE(v->verify(rs(c), kNow).ok());

  OidcConfig strict = config();
  strict.leeway_s = 0;
  auto v0 = verifier(strict);
  c = claims();
  c["exp"] = kNow;
  expect_refused(*v0, rs(c), "token expired");
  c["exp"] = kNow + 1;
  EXPECT_TRUE(v0->verify(rs(c), kNow).ok());
  c["exp"] = std::numeric_limits<int64_t>::max();  // clamped, no overflow
  EXPECT_TRUE(v0->verify(rs(c), kNow).ok());
}

TEST_F(OidcTest, IssuerAndAudience) {
  auto v = verifier();
  json c = claims();
  c["iss"] = std::string(kIssuer) + "/";
  expect_refused(*v, rs(c), "issuer not accepted");
  c.erase("iss");
  expect_refused(*v, rs(c), "issuer not accepted");

  c = claims();
  c["aud"] = "other-app";
  expect_refused(*v, rs(c), "audience not accepted");
  c["aud"] = json::array({"account", "citadel"});
  EXPECT_TRUE(v->verify(rs(c), kNow).ok());
  c["aud"] = json::array({"account", "broker"});
  expect_refused(*v, rs(c), "audience not accepted");
  c["aud"] = json::array();
  expect_refused(*v, rs(c), "audience not accepted");
  c.erase("aud");
  expect_refused(*v, rs(c), "no audience");

  OidcConfig two = config();
  two.audiences = {"citadel-api", "account"};
  auto v2 = verifier(two);
  c = claims();
  c["aud"] = "account";
  EXPECT_TRUE(v2->verify(rs(c), kNow).ok());
}

TEST_F(OidcTest, SubjectRequired) {
  auto v = verifier();
  json c = claims();
  c.erase("sub");
  expect_refused(*v, rs(c), "no subject");
  c["sub"] = "";
  expect_refused(*v, rs(c), "no subject");
  c["sub"] = 42;
  expect_refused(*v, rs(c), "no subject");
}

TEST_F(OidcTest, TamperedPayloadOrSignatureIsRefused) {
  auto v = verifier();
  for (bool ec : {false, true}) {
    std::string token = ec ? es(claims()) : rs(claims());
    size_t d1 = token.find('.'), d2 = token.rfind('.');
    json evil = claims();
    evil["citadel_role"] = "admin";
    std::string swapped = token.substr(0, d1 + 1) + b64(evil.dump()) + token.substr(d2);
    expect_refused(*v, swapped, "signature does not verify");

    std::string sig = base64url_decode(token.substr(d2 + 1)).value();
    sig[sig.size() / 2] ^= 0x01;
    expect_refused(*v, token.substr(0, d2 + 1) + b64(sig), "signature does not verify");
    expect_refused(*v, token.substr(0, d2 + 1), "signature does not verify");  // empty signature
  }
  // ES256 wants raw r||s: the DER form of a valid signature is refused.
  std::string input = unsigned_part({{"alg", "ES256"}, {"kid", "ec1"}}, claims());
  std::string raw = sign(ec_.get(), input);
  ECDSA_SIG* s = ECDSA_SIG_new();
  ECDSA_SIG_set0(s, BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()), 32, nullptr),
                 BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()) + 32, 32, nullptr));
  unsigned char* der = nullptr;
  int der_len = i2d_ECDSA_SIG(s, &der);
  std::string der_sig(reinterpret_cast<char*>(der), static_cast<size_t>(der_len));
  OPENSSL_free(der);
  ECDSA_SIG_free(s);
  EXPECT_TRUE(v->verify(input + "." + b64(raw), kNow).ok());
  expect_refused(*v, input + "." + b64(der_sig), "signature does not verify");
}

TEST_F(OidcTest, AlgNoneIsRefused) {
  auto v = verifier();
  for (const char* alg : {"none", "None", "NONE"}) {
    std::string token = unsigned_part({{"alg", alg}, {"typ", "JWT"}}, claims()) + ".";
    expect_refused(*v, token, std::string("algorithm ") + alg + " not allowed");
  }
  // Without a kid too, and with a kid that exists.
  expect_refused(*v, unsigned_part({{"alg", "none"}, {"kid", "rsa1"}}, claims()) + ".", "not allowed");
  expect_refused(*v, unsigned_part({{"typ", "JWT"}}, claims()) + ".", "malformed token header");
}

TEST_F(OidcTest, HmacKeyedWithTheRsaPublicKeyIsRefused) {
  // The classic confusion: a verifier that takes alg from the header would check this HMAC with the public key
  // bytes it holds as the secret, and the attacker knows those bytes.
  auto v = verifier();
  json evil = claims();
  evil["citadel_role"] = "admin";
  json jwk = jwk_of(rsa_.get(), "rsa1");
  std::string n = bn_param(rsa_.get(), OSSL_PKEY_PARAM_RSA_N);
  for (const char* alg : {"HS256", "HS384", "HS512"}) {
    for (const std::string& secret : {public_pem(rsa_.get()), n, jwk.dump(), std::string(jwk["n"])}) {
      std::string input = unsigned_part({{"alg", alg}, {"typ", "JWT"}, {"kid", "rsa1"}}, evil);
      expect_refused(*v, input + "." + b64(hmac_sha256(secret, input)), std::string("algorithm ") + alg);
    }
  }
  for (const char* alg : {"RS384", "RS512", "PS256", "ES384", "ES512", "EdDSA", "rs256", "RS256 "}) {
    std::string input = unsigned_part({{"alg", alg}, {"kid", "rsa1"}}, claims());
    expect_refused(*v, input + "." + b64(sign(rsa_.get(), input)), "not allowed");
  }
  expect_refused(*v, unsigned_part({{"alg", std::string(100, 'A')}}, claims()) + ".AAAA", "algorithm not allowed");
}

TEST_F(OidcTest, KeyTypeMustMatchAlgorithm) {
  auto v = verifier();
  // RS256 naming the EC key's kid: never checked against the EC key.
  expect_refused(*v, rs(claims(), "ec1"), "key type does not match algorithm");
  expect_refused(*v, es(claims(), "rsa1"), "key type does not match algorithm");
  // A set holding only an EC key under the kid an RS256 token names.
  set_jwks({jwk_of(ec_.get(), "shared")});
  auto v2 = verifier();
  expect_refused(*v2, rs(claims(), "shared"), "key type does not match algorithm");
}

TEST_F(OidcTest, TokenWithoutKidUsesTheOnlyKeyOfItsType) {
  auto v = verifier();  // one RSA, one EC
  EXPECT_TRUE(v->verify(make_token(rsa_.get(), {{"alg", "RS256"}}, claims()), kNow).ok());
  EXPECT_TRUE(v->verify(make_token(ec_.get(), {{"alg", "ES256"}}, claims()), kNow).ok());
  set_jwks({jwk_of(rsa_.get(), "rsa1"), jwk_of(rsa2_.get(), "rsa2")});
  auto v2 = verifier();
  expect_refused(*v2, make_token(rsa_.get(), {{"alg", "RS256"}}, claims()), "no key id");
  expect_refused(*v2, make_token(ec_.get(), {{"alg", "ES256"}}, claims()), "no key id");
}

TEST_F(OidcTest, KeyRotationRefetchesAtMostOncePerTenSeconds) {
  OidcConfig c = config();
  c.jwks_refresh_s = 0;  // only kid misses refresh here
  auto v = verifier(c);
  ASSERT_EQ(fetch_count_, 1);
  std::string rotated = make_token(rsa2_.get(), {{"alg", "RS256"}, {"kid", "rsa2"}}, claims());
  expect_refused(*v, rotated, "unknown key id", kNow);
  EXPECT_EQ(fetch_count_, 2);  // one refetch for the miss
  expect_refused(*v, rotated, "unknown key id", kNow + 5);
  EXPECT_EQ(fetch_count_, 2);  // rate limited

  set_jwks({jwk_of(rsa_.get(), "rsa1"), jwk_of(rsa2_.get(), "rsa2")});  // the IdP publishes the new key
  for (int i = 0; i < 50; ++i) expect_refused(*v, rotated, "unknown key id", kNow + 9);
  EXPECT_EQ(fetch_count_, 2);
  Result<Principal> p = v->verify(rotated, kNow + 10);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_EQ(fetch_count_, 3);
  EXPECT_TRUE(v->verify(rotated, kNow + 11).ok());
  EXPECT_TRUE(v->verify(rs(claims()), kNow + 11).ok());
  EXPECT_EQ(fetch_count_, 3);  // known kids never fetch
  std::string stranger = make_token(rsa2_.get(), {{"alg", "RS256"}, {"kid", "nope"}}, claims());
  expect_refused(*v, stranger, "unknown key id", kNow + 12);
  EXPECT_EQ(fetch_count_, 3);
  expect_refused(*v, stranger, "unknown key id", kNow + 20);
  EXPECT_EQ(fetch_count_, 4);
  expect_refused(*v, stranger, "unknown key id", kNow + 15);  // a thread that read the clock earlier: no refetch
  EXPECT_EQ(fetch_count_, 4);
  expect_refused(*v, stranger, "unknown key id", kNow - 3600);  // the clock was set back: due again
  EXPECT_EQ(fetch_count_, 5);
}

TEST_F(OidcTest, PeriodicRefreshDropsRetiredKeysAndSurvivesFetchFailures) {
  auto v = verifier();  // jwks_refresh_s 300
  json c = claims();
  c["exp"] = kNow + 10000;
  ASSERT_TRUE(v->verify(rs(c), kNow).ok());
  fetch_fails_ = true;
  EXPECT_TRUE(v->verify(rs(c), kNow + 300).ok());  // refresh failed: the old set stays
  EXPECT_EQ(fetch_count_, 2);
  EXPECT_TRUE(v->verify(rs(c), kNow + 301).ok());
  EXPECT_EQ(fetch_count_, 2);  // a failing source is retried on schedule, not per request
  fetch_fails_ = false;
  set_jwks({jwk_of(rsa2_.get(), "rsa2")});  // rsa1 retired
  EXPECT_TRUE(v->verify(rs(c), kNow + 599).ok());
  expect_refused(*v, rs(c), "unknown key id", kNow + 600);
  EXPECT_EQ(fetch_count_, 3);
  EXPECT_TRUE(v->verify(make_token(rsa2_.get(), {{"alg", "RS256"}, {"kid", "rsa2"}}, c), kNow + 601).ok());
  EXPECT_TRUE(v->refresh(kNow + 602).ok());
  EXPECT_EQ(fetch_count_, 4);
}

TEST_F(OidcTest, RoleClaimStringArrayAndNestedPath) {
  auto v = verifier();
  json c = claims();
  c["citadel_role"] = "admin";
  EXPECT_EQ(v->verify(rs(c), kNow)->role, Role::kAdmin);
  c["citadel_role"] = json::array({"guest", "offline_access", "developer"});
  EXPECT_EQ(v->verify(rs(c), kNow)->role, Role::kDeveloper);
  c["citadel_role"] = json::array({"auditor", "admin", "guest"});
  EXPECT_EQ(v->verify(rs(c), kNow)->role, Role::kAdmin);
  c["citadel_role"] = json::array({"guest", 7, nullptr, json::object()});
  EXPECT_EQ(v->verify(rs(c), kNow)->role, Role::kGuest);
  c["citadel_role"] = "superuser";
  expect_refused(*v, rs(c), "no recognised role");
  c["citadel_role"] = "Admin";  // names are exact
  expect_refused(*v, rs(c), "no recognised role");
  c["citadel_role"] = json::array({"uma_authorization"});
  expect_refused(*v, rs(c), "no recognised role");
  c["citadel_role"] = 3;
  expect_refused(*v, rs(c), "no recognised role");
  c.erase("citadel_role");
  expect_refused(*v, rs(c), "no recognised role");

  OidcConfig kc = config();
  kc.role_claim = "realm_access.roles";  // Keycloak
  auto vk = verifier(kc);
  c = claims();
  c.erase("citadel_role");
  c["realm_access"] = {{"roles", {"offline_access", "uma_authorization", "developer"}}};
  EXPECT_EQ(vk->verify(rs(c), kNow)->role, Role::kDeveloper);
  c["realm_access"] = {{"roles", json::array({"offline_access"})}};
  expect_refused(*vk, rs(c), "no recognised role");
  c["realm_access"] = "admin";  // the path does not resolve
  expect_refused(*vk, rs(c), "no recognised role");

  OidcConfig ns = config();
  ns.role_claim = "https://citadel.example/role";  // a namespaced claim name with dots, read literally
  auto vn = verifier(ns);
  c = claims();
  c["https://citadel.example/role"] = "auditor";
  EXPECT_EQ(vn->verify(rs(c), kNow)->role, Role::kAuditor);

  OidcConfig dflt = config();
  dflt.default_role = "guest";
  auto vd = verifier(dflt);
  c = claims();
  c["citadel_role"] = "superuser";
  EXPECT_EQ(vd->verify(rs(c), kNow)->role, Role::kGuest);
  c.erase("citadel_role");
  EXPECT_EQ(vd->verify(rs(c), kNow)->role, Role::kGuest);
  c["citadel_role"] = "admin";
  EXPECT_EQ(vd->verify(rs(c), kNow)->role, Role::kAdmin);
}

TEST_F(OidcTest, TenantClaim) {
  auto v = verifier();
  json c = claims();
  c["citadel_tenant"] = "acme";
  EXPECT_EQ(v->verify(rs(c), kNow)->tenant, "acme");
  for (json bad : {json("Acme Corp"), json(""), json(5), json("../etc"), json(std::string(65, 'a'))}) {
    c["citadel_tenant"] = bad;
    expect_refused(*v, rs(c), "tenant claim");
  }
  OidcConfig t = config();
  t.tenant_claim = "org.tenant";
  t.default_tenant = "public";
  auto vt = verifier(t);
  c = claims();
  EXPECT_EQ(vt->verify(rs(c), kNow)->tenant, "public");
  c["org"] = {{"tenant", "hospital-7"}};
  EXPECT_EQ(vt->verify(rs(c), kNow)->tenant, "hospital-7");
}

TEST_F(OidcTest, SmallRsaKeyIsRefused) {
  set_jwks({jwk_of(rsa_.get(), "rsa1"), jwk_of(rsa1024_.get(), "weak")});
  auto v = verifier();
  expect_refused(*v, make_token(rsa1024_.get(), {{"alg", "RS256"}, {"kid", "weak"}}, claims()),
                 "smaller than 2048 bits");
}

TEST_F(OidcTest, PrincipalIdIsPrintableBoundedAndDistinct) {
  auto v = verifier();
  json c = claims();
  c["sub"] = "auth0|abc def\x01%";
  c["preferred_username"] = "Zoë\nadmin";
  Result<Principal> p = v->verify(rs(c), kNow);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->id, "oidc:auth0|abc%20def%01%25");
  EXPECT_EQ(p->name, "Zoëadmin");
  c["sub"] = std::string(500, 'x') + "1";
  std::string id1 = v->verify(rs(c), kNow)->id;
  c["sub"] = std::string(500, 'x') + "2";
  std::string id2 = v->verify(rs(c), kNow)->id;
  EXPECT_EQ(id1.size(), 5u + 200u);
  EXPECT_NE(id1, id2);
  for (char ch : id1) EXPECT_TRUE(ch > 0x20 && ch < 0x7f);
}

TEST_F(OidcTest, StructuralLimits) {
  auto v = verifier();
  json c = claims();
  c["pad"] = std::string(17000, 'a');
  expect_refused(*v, rs(c), "token too large");
  std::string deep = "{\"x\":" + std::string(40, '[') + std::string(40, ']') + "}";
  std::string input = b64(json{{"alg", "RS256"}, {"kid", "rsa1"}}.dump()) + "." + b64(deep);
  expect_refused(*v, input + "." + b64(sign(rsa_.get(), input)), "malformed token payload");
  json crit_header = {{"alg", "RS256"}, {"kid", "rsa1"}, {"crit", json::array({"exp"})}};
  expect_refused(*v, make_token(rsa_.get(), crit_header, claims()), "critical header");
  std::string good = rs(claims());
  expect_refused(*v, good + ".", "malformed token");
  expect_refused(*v, good.substr(0, good.rfind('.')), "malformed token");
  expect_refused(*v, good + "=", "malformed token signature");
  expect_refused(*v, "", "empty token");
  // A JSON array payload, a non-object header, and a payload that is not JSON.
  expect_refused(*v, make_token(rsa_.get(), {{"alg", "RS256"}, {"kid", "rsa1"}}, json::array({1})), "payload");
  expect_refused(*v, b64("[\"RS256\"]") + "." + b64(claims().dump()) + ".AAAA", "malformed token header");
}

TEST_F(OidcTest, GarbageNeverCrashesAndIsNeverAccepted) {
  auto v = verifier();
  std::mt19937 rng(20240611);
  std::string good = rs(claims());
  std::string good_ec = es(claims());
  ASSERT_TRUE(v->verify(good, kNow).ok());
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ {}\"";
  for (int i = 0; i < 3000; ++i) {
    std::string t;
    switch (i % 4) {
      case 0: {  // random bytes
        t.resize(rng() % 300);
        for (char& ch : t) ch = static_cast<char>(rng() & 0xff);
        break;
      }
      case 1: {  // token-shaped noise
        t.resize(rng() % 400);
        for (char& ch : t) ch = alphabet[rng() % alphabet.size()];
        break;
      }
      case 2: {  // a truncation of a valid token
        const std::string& src = (i & 4) ? good : good_ec;
        t = src.substr(0, rng() % src.size());
        break;
      }
      default: {  // one character of a valid token changed
        t = (i & 4) ? good : good_ec;
        size_t at = rng() % t.size();
        char repl;
        do repl = alphabet[rng() % alphabet.size()];
        while (repl == t[at]);
        t[at] = repl;
      }
    }
    Result<Principal> p = v->verify(t, kNow);
    EXPECT_FALSE(p.ok()) << "accepted garbage #" << i;
  }
  // Valid base64url around JSON that is wrong in every way.
  for (const char* hdr : {"{}", "{\"alg\":null}", "{\"alg\":\"RS256\",\"kid\":5}", "null", "1e999", "\"RS256\""})
    EXPECT_FALSE(v->verify(b64(hdr) + "." + b64(claims().dump()) + ".AAAA", kNow).ok()) << hdr;
}

TEST_F(OidcTest, ConcurrentVerifyAndRefresh) {
  auto v = verifier();
  std::string t1 = rs(claims()), t2 = es(claims());
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int th = 0; th < 4; ++th)
    threads.emplace_back([&, th] {
      for (int i = 0; i < 100; ++i) {
        if (th == 0 && i % 10 == 0 && !v->refresh(kNow).ok()) ++failures;
        if (!v->verify((i + th) % 2 ? t1 : t2, kNow + i).ok()) ++failures;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(OidcTest, ConfigIsValidated) {
  auto bad = [&](auto mutate, const char* why) {
    OidcConfig c = config();
    mutate(c);
    auto v = OidcVerifier::create(c, fetch());
    ASSERT_FALSE(v.ok()) << why;
    EXPECT_NE(v.status().message().find(why), std::string::npos) << v.status().message();
  };
  bad([](OidcConfig& c) { c.issuer.clear(); }, "issuer");
  bad([](OidcConfig& c) { c.audiences.clear(); }, "audience");
  bad([](OidcConfig& c) { c.jwks_file = "/tmp/x.json"; }, "exactly one");
  bad([](OidcConfig& c) { c.jwks_url.clear(); }, "exactly one");
  bad([](OidcConfig& c) { c.default_role = "root"; }, "default_role");
  bad([](OidcConfig& c) { c.default_tenant = "Bad Tenant"; }, "default_tenant");
  bad([](OidcConfig& c) { c.leeway_s = -1; }, "leeway");
  EXPECT_FALSE(OidcVerifier::create(config(), nullptr).ok());
  fetch_fails_ = true;
  bad([](OidcConfig&) {}, "connection refused");
  fetch_fails_ = false;
  jwks_text_ = R"({"keys":[]})";
  bad([](OidcConfig&) {}, "no usable");
  OidcConfig f = config();
  f.jwks_url.clear();
  f.jwks_file = "/nonexistent/jwks.json";
  EXPECT_EQ(OidcVerifier::create(f).status().code(), StatusCode::kIo);
}

TEST_F(OidcTest, JwksFromFile) {
  std::string path = ::testing::TempDir() + "/oidc_test_jwks.json";
  std::ofstream(path) << jwks_text_;
  OidcConfig c = config();
  c.jwks_url.clear();
  c.jwks_file = path;
  auto v = OidcVerifier::create(c);
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_TRUE((*v)->verify(rs(claims()), kNow).ok());
  std::remove(path.c_str());
}

TEST(JwksParse, SkipsUnusableKeysAndRejectsMalformedOnes) {
  PkeyPtr ec(EVP_EC_gen("P-256"), EVP_PKEY_free);
  json good = jwk_of(ec.get(), "k1");
  json enc = good, okp = good, p384 = good, rs512 = {{"kty", "RSA"}, {"alg", "RS512"}, {"n", "AQAB"}, {"e", "AQAB"}};
  enc["use"] = "enc";
  okp["kty"] = "OKP";
  p384["crv"] = "P-384";
  json ops = good;
  ops["key_ops"] = json::array({"encrypt"});
  Result<JwkSet> set = parse_jwks(jwks_doc({enc, okp, p384, rs512, ops, good}));
  ASSERT_TRUE(set.ok()) << set.status().to_string();
  ASSERT_EQ(set->keys.size(), 1u);
  EXPECT_EQ(set->keys[0].kid, "k1");
  EXPECT_EQ(set->keys[0].type, JwkType::kEcP256);

  EXPECT_FALSE(parse_jwks(jwks_doc({enc, okp})).ok());  // nothing usable
  json off_curve = good;
  std::string y = base64url_decode(good["y"].get<std::string>()).value();
  y[31] ^= 1;
  off_curve["y"] = b64(y);
  EXPECT_FALSE(parse_jwks(jwks_doc({off_curve})).ok());
  json short_x = good;
  short_x["x"] = b64(std::string(31, '\x01'));
  EXPECT_FALSE(parse_jwks(jwks_doc({short_x})).ok());
  json bad_n = {{"kty", "RSA"}, {"n", "not base64!"}, {"e", "AQAB"}};
  EXPECT_FALSE(parse_jwks(jwks_doc({bad_n})).ok());
  json even_e = {{"kty", "RSA"}, {"n", b64(std::string(256, '\xC3'))}, {"e", "AQAA"}};
  EXPECT_FALSE(parse_jwks(jwks_doc({even_e})).ok());
  for (const char* text : {"", "{}", "{\"keys\":{}}", "[]", "{\"keys\":[1]}", "not json"})
    EXPECT_FALSE(parse_jwks(text).ok()) << text;
  EXPECT_FALSE(parse_jwks("{\"keys\":" + std::string(100, '[') + std::string(100, ']') + "}").ok());
}

TEST(Base64Url, StrictRoundTrip) {
  std::string bytes;
  for (int n = 0; n < 40; ++n) {
    std::string enc = base64url_encode(bytes);
    EXPECT_EQ(enc.find('='), std::string::npos);
    Result<std::string> dec = base64url_decode(enc);
    ASSERT_TRUE(dec.ok()) << enc;
    EXPECT_EQ(*dec, bytes);
    bytes.push_back(static_cast<char>(n * 37 + 200));
  }
  EXPECT_EQ(base64url_encode("\xfb\xff"), "-_8");
  for (const char* bad : {"QQ==", "QQ=", "a+b/", "A", "ABCDE", "QR", "QUJ", " QQ", "QQ\n"})
    EXPECT_FALSE(base64url_decode(bad).ok()) << bad;  // padding, std alphabet, length, non-canonical bits
  EXPECT_EQ(base64url_decode("QQ").value(), "A");
}

}  // namespace
}  // namespace citadel::auth
