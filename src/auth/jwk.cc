#include "auth/jwk.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <optional>

namespace citadel::auth {
namespace {

using nlohmann::json;

constexpr size_t kMaxJwksBytes = 1u << 20;
constexpr int kMaxJwksDepth = 32;
constexpr int kMinRsaBits = 2048;
// Larger moduli only cost verification time; nobody issues tokens with them.
constexpr int kMaxRsaBits = 16384;

struct BnFree { void operator()(BIGNUM* p) const { BN_free(p); } };
struct BldFree { void operator()(OSSL_PARAM_BLD* p) const { OSSL_PARAM_BLD_free(p); } };
struct ParamFree { void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); } };
struct PkeyCtxFree { void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); } };
struct MdCtxFree { void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); } };
struct SigFree { void operator()(ECDSA_SIG* p) const { ECDSA_SIG_free(p); } };
using BnPtr = std::unique_ptr<BIGNUM, BnFree>;

int b64url_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

BnPtr to_bn(std::string_view bytes) {
  return BnPtr(BN_bin2bn(reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()),
                         nullptr));
}

// Builds a public EVP_PKEY of `type` ("RSA" or "EC") from params and runs OpenSSL's public-key check, which for EC
// also confirms the point lies on the curve (an off-curve point enables invalid-curve attacks).
Result<std::shared_ptr<evp_pkey_st>> key_from_params(const char* type, OSSL_PARAM_BLD* bld) {
  std::unique_ptr<OSSL_PARAM, ParamFree> params(OSSL_PARAM_BLD_to_param(bld));
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    ERR_clear_error();
    return InvalidArgument(std::string("not a valid ") + type + " public key");
  }
  std::shared_ptr<evp_pkey_st> key(raw, EVP_PKEY_free);
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> check(EVP_PKEY_CTX_new_from_pkey(nullptr, raw, nullptr));
  if (!check || EVP_PKEY_public_check(check.get()) != 1) {
    ERR_clear_error();
    return InvalidArgument(std::string("not a valid ") + type + " public key");
  }
  return key;
}

Result<std::string> decode_member(const json& k, const char* name) {
  auto it = k.find(name);
  if (it == k.end() || !it->is_string()) return InvalidArgument(std::string("missing \"") + name + "\"");
  auto bytes = base64url_decode(it->get_ref<const std::string&>());
  if (!bytes.ok()) return InvalidArgument(std::string("\"") + name + "\": " + bytes.status().message());
  return std::move(bytes).value();
}

Status fill_rsa(const json& k, Jwk& out) {
  ASSIGN_OR_RETURN(std::string n, decode_member(k, "n"));
  ASSIGN_OR_RETURN(std::string e, decode_member(k, "e"));
  BnPtr bn_n = to_bn(n), bn_e = to_bn(e);
  if (!bn_n || !bn_e) return Internal("out of memory building an RSA key");
  out.bits = BN_num_bits(bn_n.get());
  if (out.bits > kMaxRsaBits) return InvalidArgument("RSA modulus larger than 16384 bits");
  if (BN_num_bits(bn_e.get()) > 64 || !BN_is_odd(bn_e.get()) || BN_cmp(bn_e.get(), BN_value_one()) <= 0)
    return InvalidArgument("RSA exponent out of range");
  std::unique_ptr<OSSL_PARAM_BLD, BldFree> bld(OSSL_PARAM_BLD_new());
  if (!bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1)
    return Internal("out of memory building an RSA key");
  ASSIGN_OR_RETURN(out.key, key_from_params("RSA", bld.get()));
  out.type = JwkType::kRsa;
  return OkStatus();
}

Status fill_ec(const json& k, Jwk& out) {
  ASSIGN_OR_RETURN(std::string x, decode_member(k, "x"));
  ASSIGN_OR_RETURN(std::string y, decode_member(k, "y"));
  // RFC 7518 section 6.2.1.2: coordinates are the full 32 octets for P-256, leading zeros kept.
  if (x.size() != 32 || y.size() != 32) return InvalidArgument("P-256 coordinates must be 32 bytes");
  std::string point = "\x04" + x + y;  // SEC1 uncompressed point
  std::unique_ptr<OSSL_PARAM_BLD, BldFree> bld(OSSL_PARAM_BLD_new());
  if (!bld || OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) != 1)
    return Internal("out of memory building an EC key");
  ASSIGN_OR_RETURN(out.key, key_from_params("EC", bld.get()));
  out.type = JwkType::kEcP256;
  out.bits = 256;
  return OkStatus();
}

const std::string* string_member(const json& k, const char* name) {
  auto it = k.find(name);
  return it != k.end() && it->is_string() ? &it->get_ref<const std::string&>() : nullptr;
}

// nullopt: a key Citadel does not use (encryption key, other algorithm or curve), skipped without error.
Result<std::optional<Jwk>> parse_key(const json& k) {
  if (!k.is_object()) return InvalidArgument("not an object");
  const std::string* kty = string_member(k, "kty");
  const std::string* use = string_member(k, "use");
  const std::string* alg = string_member(k, "alg");
  if (!kty || (k.contains("use") && (!use || *use != "sig"))) return std::optional<Jwk>();
  auto ops = k.find("key_ops");
  if (ops != k.end() && (!ops->is_array() || std::find(ops->begin(), ops->end(), "verify") == ops->end()))
    return std::optional<Jwk>();
  if (k.contains("alg") && !alg) return std::optional<Jwk>();
  Jwk key;
  if (k.contains("kid")) {
    const std::string* kid = string_member(k, "kid");
    if (!kid) return InvalidArgument("\"kid\" is not a string");
    key.kid = *kid;
  }
  if (*kty == "RSA" && (!alg || *alg == "RS256")) {
    RETURN_IF_ERROR(fill_rsa(k, key));
  } else if (*kty == "EC" && (!alg || *alg == "ES256")) {
    const std::string* crv = string_member(k, "crv");
    if (!crv || *crv != "P-256") return std::optional<Jwk>();
    RETURN_IF_ERROR(fill_ec(k, key));
  } else {
    return std::optional<Jwk>();
  }
  return std::optional<Jwk>(std::move(key));
}

Status digest_verify(EVP_PKEY* key, std::string_view input, const unsigned char* sig, size_t sig_len) {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) != 1) {
    ERR_clear_error();
    return Internal("signature check could not start");
  }
  int rc = EVP_DigestVerify(ctx.get(), sig, sig_len, reinterpret_cast<const unsigned char*>(input.data()),
                            input.size());
  ERR_clear_error();
  if (rc != 1) return InvalidArgument("signature does not verify");
  return OkStatus();
}

}  // namespace

Result<std::string> base64url_decode(std::string_view text) {
  if (text.size() % 4 == 1) return InvalidArgument("bad base64url length");
  std::string out;
  out.reserve(text.size() / 4 * 3 + 2);
  uint32_t acc = 0;
  int nbits = 0;
  for (char ch : text) {
    int v = b64url_value(static_cast<unsigned char>(ch));
    if (v < 0) return InvalidArgument("invalid base64url character");
    acc = ((acc << 6) | static_cast<uint32_t>(v)) & 0xffffu;
    nbits += 6;
    if (nbits >= 8) {
      nbits -= 8;
      out.push_back(static_cast<char>((acc >> nbits) & 0xffu));
    }
  }
  if (nbits > 0 && (acc & ((1u << nbits) - 1)) != 0) return InvalidArgument("non-canonical base64url");
  return out;
}

std::string base64url_encode(std::string_view bytes) {
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  uint32_t acc = 0;
  int nbits = 0;
  for (char ch : bytes) {
    acc = ((acc << 8) | static_cast<unsigned char>(ch)) & 0xffffu;
    nbits += 8;
    while (nbits >= 6) {
      nbits -= 6;
      out.push_back(kAlphabet[(acc >> nbits) & 63u]);
    }
  }
  if (nbits > 0) out.push_back(kAlphabet[(acc << (6 - nbits)) & 63u]);
  return out;
}

const Jwk* JwkSet::find(std::string_view kid) const {
  for (const Jwk& k : keys)
    if (k.kid == kid) return &k;
  return nullptr;
}

const Jwk* JwkSet::only_of_type(JwkType type) const {
  const Jwk* found = nullptr;
  for (const Jwk& k : keys) {
    if (k.type != type) continue;
    if (found) return nullptr;
    found = &k;
  }
  return found;
}

bool json_too_deep(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) return true;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return false;
}

Result<JwkSet> parse_jwks(std::string_view text) {
  if (text.size() > kMaxJwksBytes) return InvalidArgument("JWKS larger than 1 MiB");
  if (json_too_deep(text, kMaxJwksDepth)) return InvalidArgument("JWKS nests too deeply");
  try {
    json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) return InvalidArgument("JWKS is not valid JSON");
    auto keys = doc.is_object() ? doc.find("keys") : doc.end();
    if (!doc.is_object() || keys == doc.end() || !keys->is_array())
      return InvalidArgument("JWKS has no \"keys\" array");
    JwkSet set;
    for (size_t i = 0; i < keys->size(); ++i) {
      auto key = parse_key((*keys)[i]);
      if (!key.ok()) return key.status().with_context("JWKS key " + std::to_string(i));
      if (*key) set.keys.push_back(std::move(**key));
    }
    if (set.keys.empty()) return InvalidArgument("JWKS has no usable signature key (RSA or EC P-256)");
    return set;
  } catch (const json::exception& e) {
    return InvalidArgument(std::string("JWKS: ") + e.what());
  }
}

Status verify_rs256(const Jwk& key, std::string_view signing_input, std::string_view signature) {
  if (key.type != JwkType::kRsa || !key.key) return InvalidArgument("key type does not match algorithm");
  if (key.bits < kMinRsaBits) return InvalidArgument("RSA key is smaller than 2048 bits");
  if (signature.size() != static_cast<size_t>(EVP_PKEY_get_size(key.key.get())))
    return InvalidArgument("signature does not verify");
  return digest_verify(key.key.get(), signing_input, reinterpret_cast<const unsigned char*>(signature.data()),
                       signature.size());
}

Status verify_es256(const Jwk& key, std::string_view signing_input, std::string_view signature) {
  if (key.type != JwkType::kEcP256 || !key.key) return InvalidArgument("key type does not match algorithm");
  if (signature.size() != 64) return InvalidArgument("signature does not verify");
  std::unique_ptr<ECDSA_SIG, SigFree> sig(ECDSA_SIG_new());
  BnPtr r = to_bn(signature.substr(0, 32)), s = to_bn(signature.substr(32, 32));
  if (!sig || !r || !s || ECDSA_SIG_set0(sig.get(), r.get(), s.get()) != 1)
    return Internal("out of memory converting an ECDSA signature");
  r.release();  // owned by sig now
  s.release();
  unsigned char* der = nullptr;
  int der_len = i2d_ECDSA_SIG(sig.get(), &der);
  if (der_len <= 0) {
    ERR_clear_error();
    return Internal("could not encode an ECDSA signature");
  }
  Status st = digest_verify(key.key.get(), signing_input, der, static_cast<size_t>(der_len));
  OPENSSL_free(der);
  return st;
}

}  // namespace citadel::auth
