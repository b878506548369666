// TLS server contexts for the HTTP transport: TLS 1.3 only, a fixed AEAD suite list, no compression, no
// renegotiation, session tickets on; optional mutual TLS (clients must present a certificate signed by a given CA).
//
// A context is immutable once built and shared by every connection accepted while it was current: reloading
// certificates builds a new context (HttpServer::reload_tls) and connections keep the one they started with, which
// the shared_ptr keeps alive. Thread-safety: building is reentrant; a built context may be used from any thread.
#pragma once

#include <memory>
#include <string>

#include <boost/asio/ssl/context.hpp>
#include <openssl/ssl.h>

#include "base/status.h"

namespace citadel::server {

struct TlsFiles {
  std::string cert_file;       // PEM certificate chain (leaf first)
  std::string key_file;        // PEM private key of the leaf certificate (unencrypted: nobody can type a passphrase)
  std::string client_ca_file;  // PEM CA bundle; non-empty: clients must present a certificate it verifies
  bool enabled() const { return !cert_file.empty() || !key_file.empty() || !client_ca_file.empty(); }
};

// The TLS 1.3 suites offered, strongest first (the server's order wins).
inline constexpr const char* kTls13Ciphersuites =
    "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256";

// Reads the files and builds a server context. Errors (InvalidArgument / Io) name the file and OpenSSL's reason:
// a file missing or unreadable, not PEM, a key that does not match the certificate, a cert without a key.
Result<std::shared_ptr<boost::asio::ssl::context>> make_tls_server_context(const TlsFiles& files);

// The verified peer certificate's subject in RFC 2253 form ("CN=alice,O=Bank"), or "" when the peer sent none.
// `ssl` is the connection's SSL* (after a successful handshake).
std::string peer_certificate_subject(SSL* ssl);

// OpenSSL's error queue as one line ("error:0A00010B:SSL routines::wrong version number"), and clears it. OpenSSL
// keeps the queue per thread, so call it on the thread that saw the failure.
std::string take_openssl_errors();

}  // namespace citadel::server
