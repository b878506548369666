// JSON Web Keys (RFC 7517) for verifying OIDC access/ID tokens: strict base64url (RFC 7515 section 2), a JWKS
// parser that keeps only public signature keys Citadel accepts (RSA for RS256, EC P-256 for ES256), and the two
// signature checks. Keys are built with OpenSSL 3 EVP_PKEY_fromdata from the JWK members, never from certificates
// or URLs named inside a token.
// Thread-safety: a JwkSet is immutable after parse_jwks(); its keys may be used for verification from any number of
// threads at once (each check makes its own EVP_MD_CTX).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

struct evp_pkey_st;  // OpenSSL's EVP_PKEY, kept out of this header

namespace citadel::auth {

// Base64url without padding, as JWS uses it. Rejects '=', '+', '/', whitespace, a length of 1 mod 4 and
// non-zero trailing bits (so every byte string has exactly one accepted encoding).
Result<std::string> base64url_decode(std::string_view text);
std::string base64url_encode(std::string_view bytes);

enum class JwkType { kRsa, kEcP256 };

struct Jwk {
  std::string kid;   // "" when the JWKS entry has none
  JwkType type = JwkType::kRsa;
  int bits = 0;      // RSA modulus size; 256 for P-256
  std::shared_ptr<evp_pkey_st> key;  // public key, never null in a parsed set
};

struct JwkSet {
  std::vector<Jwk> keys;
  // The key with this kid, or null. With duplicate kids the first wins (a JWKS should not have any).
  const Jwk* find(std::string_view kid) const;
  // The only key of this type, or null when there are none or several (for tokens without a kid).
  const Jwk* only_of_type(JwkType type) const;
};

// Parses {"keys":[...]}. Keeps RSA keys (alg RS256 or absent) and EC P-256 keys (alg ES256 or absent) whose `use` is
// absent or "sig"; skips other kty/crv/alg/use silently (a JWKS legitimately mixes in encryption keys). A malformed
// member of a kept key (bad base64url, wrong coordinate length, point not on the curve) is an error naming the key's
// position. Errors also: not JSON, no "keys" array, nesting deeper than 32, and no usable key at all.
// RSA keys below 2048 bits are kept (with `bits` set) so the verifier can refuse them with a clear reason.
Result<JwkSet> parse_jwks(std::string_view json_text);

// RSASSA-PKCS1-v1_5 with SHA-256 over `signing_input`; `signature` is the raw JWS signature bytes.
// Errors: "signature does not verify" (also for a wrong-length signature), or an internal OpenSSL failure.
Status verify_rs256(const Jwk& key, std::string_view signing_input, std::string_view signature);
// ECDSA P-256 with SHA-256; `signature` is the JWS form, r||s of 32 bytes each (RFC 7518 section 3.4), converted to
// DER here. Any other length is refused.
Status verify_es256(const Jwk& key, std::string_view signing_input, std::string_view signature);

// True when JSON text nests objects/arrays deeper than max_depth (scanned without parsing, strings skipped), so
// hostile input is refused before a recursive structure is built.
bool json_too_deep(std::string_view json_text, int max_depth);

}  // namespace citadel::auth
