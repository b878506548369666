#include "server/tls_context.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <openssl/err.h>
#include <openssl/x509.h>

namespace citadel::server {

namespace {

// A plain fopen first so that a missing or unreadable file says so in the OS's words, not OpenSSL's.
Status check_readable(const std::string& what, const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return IoError("tls: cannot read " + what + " " + path + ": " + std::strerror(errno));
  std::fclose(f);
  return OkStatus();
}

Status openssl_failure(const std::string& what, const std::string& path) {
  return InvalidArgument("tls: " + what + " " + path + ": " + take_openssl_errors());
}

// An encrypted key would make OpenSSL prompt on the terminal of a daemon; refuse to supply a passphrase instead.
int no_passphrase(char*, int, int, void*) { return 0; }

Status configure_protocol(SSL_CTX* ctx) {
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1)
    return Internal("tls: cannot restrict the context to TLS 1.3: " + take_openssl_errors());
  if (SSL_CTX_set_ciphersuites(ctx, kTls13Ciphersuites) != 1)
    return Internal("tls: cannot set the TLS 1.3 ciphersuites: " + take_openssl_errors());
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
  // Resumed sessions must carry a context id when client certificates are verified, or OpenSSL refuses them.
  static const unsigned char kSessionId[] = "citadel-http";
  SSL_CTX_set_session_id_context(ctx, kSessionId, sizeof kSessionId - 1);
  SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
  return OkStatus();
}

Status key_mismatch(const TlsFiles& files) {
  return InvalidArgument("tls: private key " + files.key_file + " does not match certificate " + files.cert_file +
                         ": " + take_openssl_errors());
}

Status load_identity(SSL_CTX* ctx, const TlsFiles& files) {
  if (files.cert_file.empty() || files.key_file.empty())
    return InvalidArgument("tls: both a certificate file and a key file are needed (cert '" + files.cert_file +
                           "', key '" + files.key_file + "')");
  RETURN_IF_ERROR(check_readable("certificate file", files.cert_file));
  RETURN_IF_ERROR(check_readable("key file", files.key_file));
  if (SSL_CTX_use_certificate_chain_file(ctx, files.cert_file.c_str()) != 1)
    return openssl_failure("cannot load certificate chain", files.cert_file);
  if (SSL_CTX_use_PrivateKey_file(ctx, files.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    // OpenSSL already compares the key with the certificate here; say so in words an operator acts on.
    const unsigned long e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
      return key_mismatch(files);
    return openssl_failure("cannot load private key", files.key_file);
  }
  if (SSL_CTX_check_private_key(ctx) != 1) return key_mismatch(files);
  return OkStatus();
}

Status load_client_ca(SSL_CTX* ctx, const std::string& ca_file) {
  RETURN_IF_ERROR(check_readable("client CA file", ca_file));
  if (SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr) != 1)
    return openssl_failure("cannot load client CA file", ca_file);
  // The CA names go into the CertificateRequest so that clients with several certificates pick the right one.
  STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(ca_file.c_str());
  if (!names) return openssl_failure("no CA certificate in client CA file", ca_file);
  SSL_CTX_set_client_CA_list(ctx, names);  // takes ownership
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  return OkStatus();
}

}  // namespace

std::string take_openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? std::string("unknown OpenSSL error") : out;
}

Result<std::shared_ptr<boost::asio::ssl::context>> make_tls_server_context(const TlsFiles& files) {
  ERR_clear_error();
  SSL_CTX* raw = SSL_CTX_new(TLS_server_method());
  if (!raw) return Internal("tls: SSL_CTX_new failed: " + take_openssl_errors());
  // The asio context owns the SSL_CTX from here on (freed on every return path).
  auto ctx = std::make_shared<boost::asio::ssl::context>(raw);
  Status st = configure_protocol(raw);
  if (st.ok()) st = load_identity(raw, files);
  if (st.ok() && !files.client_ca_file.empty()) st = load_client_ca(raw, files.client_ca_file);
  ERR_clear_error();
  if (!st.ok()) return st;
  return ctx;
}

std::string peer_certificate_subject(SSL* ssl) {
  X509* cert = ssl ? SSL_get0_peer_certificate(ssl) : nullptr;
  if (!cert) return "";
  BIO* bio = BIO_new(BIO_s_mem());
  if (!bio) return "";
  X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string out = n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
  BIO_free(bio);
  return out;
}

}  // namespace citadel::server
