// OpenSSL 3 EVP wrappers behind the envelope (crypto/envelope.h, namespace primitives).
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <memory>
#include <string>

#include "crypto/envelope.h"

namespace citadel::crypto::primitives {
namespace {

struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
  void operator()(EVP_CIPHER* c) const { EVP_CIPHER_free(c); }
  void operator()(EVP_MD* m) const { EVP_MD_free(m); }
  void operator()(EVP_MAC* m) const { EVP_MAC_free(m); }
  void operator()(EVP_MAC_CTX* m) const { EVP_MAC_CTX_free(m); }
  void operator()(EVP_KDF* k) const { EVP_KDF_free(k); }
  void operator()(EVP_KDF_CTX* k) const { EVP_KDF_CTX_free(k); }
};
template <typename T>
using Ptr = std::unique_ptr<T, CtxFree>;

Status fail(const std::string& what) { return Internal(std::string("openssl: ") + what + " failed"); }

// One-shot symmetric transform (ECB/CTR): out has the input's length.
Result<Bytes> transform(const char* name, View key, View iv, View data, bool padding_off) {
  Ptr<EVP_CIPHER> c(EVP_CIPHER_fetch(nullptr, name, nullptr));
  if (!c) return Unsupported(std::string(name) + " is not available in this OpenSSL");
  if (static_cast<size_t>(EVP_CIPHER_get_key_length(c.get())) != key.size())
    return InvalidArgument(std::string(name) + ": wrong key length");
  Ptr<EVP_CIPHER_CTX> ctx(EVP_CIPHER_CTX_new());
  if (!ctx || EVP_EncryptInit_ex2(ctx.get(), c.get(), key.data(), iv.empty() ? nullptr : iv.data(), nullptr) != 1)
    return fail(std::string(name) + " init");
  if (padding_off) EVP_CIPHER_CTX_set_padding(ctx.get(), 0);
  Bytes out(data.size() + 32);
  int n = 0, m = 0;
  if (EVP_EncryptUpdate(ctx.get(), out.data(), &n, data.data(), static_cast<int>(data.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), out.data() + n, &m) != 1)
    return fail(name);
  out.resize(static_cast<size_t>(n + m));
  return out;
}

// A GCM context keyed with key and iv (any iv length) that has absorbed aad, for sealing or opening.
Result<Ptr<EVP_CIPHER_CTX>> gcm_context(const char* cipher, View key, View iv, View aad, bool seal) {
  Ptr<EVP_CIPHER> c(EVP_CIPHER_fetch(nullptr, cipher, nullptr));
  if (!c) return Unsupported(std::string(cipher) + " is not available in this OpenSSL");
  if (static_cast<size_t>(EVP_CIPHER_get_key_length(c.get())) != key.size())
    return InvalidArgument(std::string(cipher) + ": wrong key length");
  Ptr<EVP_CIPHER_CTX> ctx(EVP_CIPHER_CTX_new());
  size_t ivlen = iv.size();
  OSSL_PARAM p[] = {OSSL_PARAM_construct_size_t(OSSL_CIPHER_PARAM_AEAD_IVLEN, &ivlen), OSSL_PARAM_END};
  if (!ctx || EVP_CipherInit_ex2(ctx.get(), c.get(), nullptr, nullptr, seal ? 1 : 0, p) != 1 ||
      EVP_CipherInit_ex2(ctx.get(), nullptr, key.data(), iv.data(), seal ? 1 : 0, nullptr) != 1)
    return fail(std::string(cipher) + " init");
  int n = 0;
  if (!aad.empty() && EVP_CipherUpdate(ctx.get(), nullptr, &n, aad.data(), static_cast<int>(aad.size())) != 1)
    return fail("gcm aad");
  return ctx;
}

}  // namespace

Result<Bytes> gcm_seal(const char* cipher, View key, View iv, View aad, View plaintext) {
  ASSIGN_OR_RETURN(Ptr<EVP_CIPHER_CTX> ctx, gcm_context(cipher, key, iv, aad, /*seal=*/true));
  int n = 0;
  Bytes out(plaintext.size() + 16);
  if (!plaintext.empty() &&
      EVP_EncryptUpdate(ctx.get(), out.data(), &n, plaintext.data(), static_cast<int>(plaintext.size())) != 1)
    return fail("gcm encrypt");
  int m = 0;
  if (EVP_EncryptFinal_ex(ctx.get(), out.data() + plaintext.size(), &m) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_GET_TAG, 16, out.data() + plaintext.size()) != 1)
    return fail("gcm tag");
  return out;
}

Result<Bytes> gcm_open(const char* cipher, View key, View iv, View aad, View input) {
  if (input.size() < 16) return DataLoss("gcm input shorter than its tag");
  const size_t n_ct = input.size() - 16;
  ASSIGN_OR_RETURN(Ptr<EVP_CIPHER_CTX> ctx, gcm_context(cipher, key, iv, aad, /*seal=*/false));
  int n = 0;
  Bytes out(n_ct + 16);
  if (n_ct && EVP_DecryptUpdate(ctx.get(), out.data(), &n, input.data(), static_cast<int>(n_ct)) != 1)
    return fail("gcm decrypt");
  int m = 0;
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_SET_TAG, 16, const_cast<uint8_t*>(input.data() + n_ct)) != 1)
    return fail("gcm set tag");
  if (EVP_DecryptFinal_ex(ctx.get(), out.data() + n_ct, &m) != 1) {
    OPENSSL_cleanse(out.data(), out.size());
    return DataLoss("authentication failed");
  }
  out.resize(n_ct);
  return out;
}

Result<Bytes> sm4_ecb_encrypt(View key, View plaintext) {
  if (plaintext.size() % 16) return InvalidArgument("sm4-ecb: input is not whole blocks");
  return transform("SM4-ECB", key, {}, plaintext, true);
}

Result<Bytes> sm4_ctr(View key, View iv, View data) {
  if (iv.size() != 16) return InvalidArgument("sm4-ctr: iv must be 16 bytes");
  return transform("SM4-CTR", key, iv, data, false);
}

Result<Bytes> digest(const char* name, View data) {
  Ptr<EVP_MD> md(EVP_MD_fetch(nullptr, name, nullptr));
  if (!md) return Unsupported(std::string(name) + " is not available in this OpenSSL");
  Bytes out(static_cast<size_t>(EVP_MD_get_size(md.get())));
  unsigned int n = 0;
  if (EVP_Digest(data.data(), data.size(), out.data(), &n, md.get(), nullptr) != 1) return fail(name);
  return out;
}

Result<Bytes> hmac(const char* digest_name, View key, View data) {
  Ptr<EVP_MAC> mac(EVP_MAC_fetch(nullptr, "HMAC", nullptr));
  if (!mac) return Unsupported("HMAC is not available in this OpenSSL");
  Ptr<EVP_MAC_CTX> ctx(EVP_MAC_CTX_new(mac.get()));
  OSSL_PARAM p[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>(digest_name), 0),
                    OSSL_PARAM_END};
  if (!ctx || EVP_MAC_init(ctx.get(), key.data(), key.size(), p) != 1 ||
      EVP_MAC_update(ctx.get(), data.data(), data.size()) != 1)
    return fail(std::string("HMAC-") + digest_name);
  Bytes out(EVP_MAX_MD_SIZE);
  size_t n = 0;
  if (EVP_MAC_final(ctx.get(), out.data(), &n, out.size()) != 1) return fail("HMAC final");
  out.resize(n);
  return out;
}

Result<Bytes> hkdf(const char* digest_name, View ikm, View salt, View info, size_t out_len) {
  Ptr<EVP_KDF> kdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr));
  if (!kdf) return Unsupported("HKDF is not available in this OpenSSL");
  Ptr<EVP_KDF_CTX> ctx(EVP_KDF_CTX_new(kdf.get()));
  OSSL_PARAM p[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char*>(digest_name), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(ikm.data()), ikm.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<uint8_t*>(salt.data()), salt.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<uint8_t*>(info.data()), info.size()),
      OSSL_PARAM_END};
  Bytes out(out_len);
  if (!ctx || EVP_KDF_derive(ctx.get(), out.data(), out.size(), p) != 1)
    return fail(std::string("HKDF-") + digest_name);
  return out;
}

}  // namespace citadel::crypto::primitives
