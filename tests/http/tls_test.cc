// HTTPS in the Beast transport over real loopback sockets, driven by a plain OpenSSL client: TLS 1.3 only (a
// TLS 1.2 client and plain HTTP are turned away without a response), the handler sees tls/peer, mutual TLS with
// the client certificate's subject, certificate reload for new connections only, clear start-up errors, and
// 413/431 going through the handler over TLS. The certificates are made here with the OpenSSL API.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <boost/asio.hpp>

#include "server/http_server.h"

namespace citadel::server {
namespace {

namespace fs = std::filesystem;

struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;
using Cert = std::unique_ptr<X509, X509Free>;

Key make_key() { return Key(EVP_EC_gen("P-256")); }

void add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  ASSERT_NE(ext, nullptr) << value;
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

enum class Role { kCa, kServer, kClient };

// A certificate for `key` named CN=cn, O=Citadel Test, signed by issuer/issuer_key (self-signed when null).
Cert make_cert(const std::string& cn, long serial, EVP_PKEY* key, Role role, X509* issuer = nullptr,
               EVP_PKEY* issuer_key = nullptr) {
  Cert x(X509_new());
  X509_set_version(x.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x.get()), serial);
  X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x.get()), 24 * 3600);
  X509_set_pubkey(x.get(), key);
  X509_NAME* name = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("Citadel Test"), -1, -1,
                             0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509* signer = issuer ? issuer : x.get();
  X509_set_issuer_name(x.get(), X509_get_subject_name(signer));
  if (role == Role::kCa) {
    add_ext(x.get(), signer, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(x.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(x.get(), signer, NID_basic_constraints, "CA:FALSE");
    add_ext(x.get(), signer, NID_key_usage, "critical,digitalSignature");
    add_ext(x.get(), signer, NID_ext_key_usage, role == Role::kServer ? "serverAuth" : "clientAuth");
    if (role == Role::kServer) add_ext(x.get(), signer, NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost");
  }
  add_ext(x.get(), signer, NID_subject_key_identifier, "hash");
  X509_sign(x.get(), issuer_key ? issuer_key : key, EVP_sha256());
  return x;
}

void write_cert(const fs::path& p, X509* cert) {
  FILE* f = std::fopen(p.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  PEM_write_X509(f, cert);
  std::fclose(f);
}
void write_key(const fs::path& p, EVP_PKEY* key) {
  FILE* f = std::fopen(p.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
}

struct ClientOptions {
  int max_version = TLS1_3_VERSION;
  std::string ca_file;  // verify the server against it (empty: no verification)
  std::string cert_file, key_file;  // client certificate (mutual TLS)
};

// A blocking OpenSSL client connection with 10 s socket timeouts (a broken server fails the test, never hangs it).
class TlsClient {
 public:
  TlsClient(int port, const ClientOptions& o) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{10, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return;
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_max_proto_version(ctx_, o.max_version);
    if (!o.ca_file.empty()) {
      SSL_CTX_load_verify_locations(ctx_, o.ca_file.c_str(), nullptr);
      SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    }
    if (!o.cert_file.empty()) {
      SSL_CTX_use_certificate_file(ctx_, o.cert_file.c_str(), SSL_FILETYPE_PEM);
      SSL_CTX_use_PrivateKey_file(ctx_, o.key_file.c_str(), SSL_FILETYPE_PEM);
    }
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    handshake_ok_ = SSL_connect(ssl_) == 1;
    ERR_clear_error();
  }
  ~TlsClient() {
    if (ssl_) SSL_free(ssl_);
    if (ctx_) SSL_CTX_free(ctx_);
    if (fd_ >= 0) ::close(fd_);
  }
  bool handshake_ok() const { return handshake_ok_; }
  SSL* ssl() const { return ssl_; }

  // Sends raw bytes and reads one response (Content-Length), or whatever came before EOF / an error.
  std::string request(const std::string& raw) {
    if (!handshake_ok_) return "";
    if (SSL_write(ssl_, raw.data(), static_cast<int>(raw.size())) <= 0) return "";
    std::string data;
    char buf[4096];
    for (;;) {
      const size_t he = data.find("\r\n\r\n");
      if (he != std::string::npos) {
        const size_t cl = data.find("Content-Length: ");
        if (cl != std::string::npos && cl < he && data.size() >= he + 4 + std::stoul(data.substr(cl + 16))) return data;
      }
      const int n = SSL_read(ssl_, buf, sizeof buf);
      if (n <= 0) {
        ERR_clear_error();
        return data;
      }
      data.append(buf, static_cast<size_t>(n));
    }
  }
  std::string get(const std::string& path) { return request("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n"); }

  // True when the server ended the connection with a TLS close_notify (an orderly close, not a bare FIN/RST).
  bool closed_with_notify() {
    char buf[64];
    const int n = SSL_read(ssl_, buf, sizeof buf);
    const bool notify = n <= 0 && SSL_get_error(ssl_, n) == SSL_ERROR_ZERO_RETURN;
    ERR_clear_error();
    return notify;
  }

  long server_serial() const {
    X509* c = SSL_get0_peer_certificate(ssl_);
    return c ? ASN1_INTEGER_get(X509_get0_serialNumber(c)) : -1;
  }

 private:
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  bool handshake_ok_ = false;
};

bool is_200(const std::string& r) { return r.rfind("HTTP/1.1 200", 0) == 0; }

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("citadel_tls_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    ca_key_ = make_key();
    ca_ = make_cert("Citadel Test CA", 1, ca_key_.get(), Role::kCa);
    write_cert(path("ca.pem"), ca_.get());
    issue_server_cert(100, "server-a");
    Key ck = make_key();
    Cert cc = make_cert("test-client", 300, ck.get(), Role::kClient, ca_.get(), ca_key_.get());
    write_cert(path("client.pem"), cc.get());
    write_key(path("client.key"), ck.get());
    // Same name, but self-signed: not vouched for by the CA.
    Key ok = make_key();
    Cert oc = make_cert("test-client", 301, ok.get(), Role::kClient);
    write_cert(path("other.pem"), oc.get());
    write_key(path("other.key"), ok.get());
  }
  void TearDown() override {
    server_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // (Re)writes server.pem / server.key: a CA-signed certificate with this serial and CN.
  void issue_server_cert(long serial, const std::string& cn) {
    Key k = make_key();
    Cert c = make_cert(cn, serial, k.get(), Role::kServer, ca_.get(), ca_key_.get());
    write_cert(path("server.pem"), c.get());
    write_key(path("server.key"), k.get());
  }

  HttpServerOptions tls_options(bool client_ca = false) {
    HttpServerOptions o;
    o.port = 0;
    o.threads = 2;
    o.tls_cert_file = path("server.pem");
    o.tls_key_file = path("server.key");
    if (client_ca) o.tls_client_ca_file = path("ca.pem");
    return o;
  }

  // Records every request the handler sees; answers transport rejections with their status.
  Status start(HttpServerOptions o) {
    server_ = std::make_unique<HttpServer>(o, [this](HttpRequest req, std::shared_ptr<Responder> r) {
      HttpResponse resp;
      resp.status = req.transport_status ? req.transport_status : 200;
      resp.body = req.transport_status ? req.transport_error : "hello " + req.path;
      {
        std::lock_guard<std::mutex> l(mu_);
        seen_.push_back(req);
      }
      r->send(std::move(resp));
    });
    return server_->start();
  }

  ClientOptions verified() const {
    ClientOptions c;
    c.ca_file = path("ca.pem");
    return c;
  }
  HttpRequest last_seen() {
    std::lock_guard<std::mutex> l(mu_);
    return seen_.empty() ? HttpRequest{} : seen_.back();
  }
  size_t seen_count() {
    std::lock_guard<std::mutex> l(mu_);
    return seen_.size();
  }
  // The server counts a failed handshake on its own I/O thread, possibly after the client gave up.
  int64_t wait_handshake_failures(int64_t at_least) {
    for (int i = 0; i < 5000 && server_->stats().tls_handshake_failures < at_least; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return server_->stats().tls_handshake_failures;
  }

  fs::path dir_;
  Key ca_key_;
  Cert ca_;
  std::unique_ptr<HttpServer> server_;
  std::mutex mu_;
  std::vector<HttpRequest> seen_;
};

TEST_F(TlsTest, Tls13GetWorksAndTheHandlerSeesTlsAndPeer) {
  ASSERT_TRUE(start(tls_options()).ok());
  EXPECT_TRUE(server_->tls_enabled());
  TlsClient c(server_->port(), verified());
  ASSERT_TRUE(c.handshake_ok());
  EXPECT_EQ(SSL_version(c.ssl()), TLS1_3_VERSION);
  EXPECT_STREQ(SSL_get_cipher_name(c.ssl()), "TLS_AES_256_GCM_SHA384");  // the server's preference wins
  EXPECT_EQ(SSL_get_current_compression(c.ssl()), nullptr);
  for (int i = 0; i < 2; ++i) {  // keep-alive over TLS
    const std::string r = c.get("/v1/models");
    EXPECT_TRUE(is_200(r)) << r;
    EXPECT_NE(r.find("hello /v1/models"), std::string::npos) << r;
  }
  const HttpRequest req = last_seen();
  EXPECT_TRUE(req.tls);
  EXPECT_EQ(req.peer.rfind("127.0.0.1:", 0), 0u) << req.peer;
  EXPECT_TRUE(req.client_cert_subject.empty());
  EXPECT_EQ(req.transport_status, 0);
  EXPECT_EQ(server_->stats().tls_handshake_failures, 0);
}

TEST_F(TlsTest, ConnectionCloseEndsWithCloseNotify) {
  ASSERT_TRUE(start(tls_options()).ok());
  TlsClient c(server_->port(), verified());
  const std::string r = c.request("GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_TRUE(is_200(r)) << r;
  EXPECT_NE(r.find("Connection: close"), std::string::npos) << r;
  EXPECT_TRUE(c.closed_with_notify());
}

TEST_F(TlsTest, SilentClientIsDroppedAfterTheHandshakeTimeout) {
  HttpServerOptions o = tls_options();
  o.idle_timeout_s = 1;
  ASSERT_TRUE(start(o).ok());
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::socket s(ioc);
  s.connect({boost::asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(server_->port())});
  char buf[16];
  boost::system::error_code ec;
  s.read_some(boost::asio::buffer(buf), ec);  // blocks until the server gives up on the handshake
  EXPECT_TRUE(ec == boost::asio::error::eof || ec == boost::asio::error::connection_reset) << ec.message();
  EXPECT_EQ(wait_handshake_failures(1), 1);
}

TEST_F(TlsTest, Tls12ClientFailsTheHandshake) {
  ASSERT_TRUE(start(tls_options()).ok());
  ClientOptions o = verified();
  o.max_version = TLS1_2_VERSION;
  TlsClient c(server_->port(), o);
  EXPECT_FALSE(c.handshake_ok());
  EXPECT_EQ(wait_handshake_failures(1), 1);
  EXPECT_EQ(seen_count(), 0u);
  // The server is unaffected.
  TlsClient ok(server_->port(), verified());
  EXPECT_TRUE(is_200(ok.get("/")));
}

TEST_F(TlsTest, PlainHttpToTheTlsPortGetsNoHttpResponse) {
  ASSERT_TRUE(start(tls_options()).ok());
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::socket s(ioc);
  s.connect({boost::asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(server_->port())});
  boost::asio::write(s, boost::asio::buffer(std::string("GET / HTTP/1.1\r\nHost: x\r\n\r\n")));
  std::string got;
  char buf[1024];
  for (;;) {  // until the server closes
    boost::system::error_code ec;
    const size_t n = s.read_some(boost::asio::buffer(buf), ec);
    if (ec) break;
    got.append(buf, n);
  }
  EXPECT_EQ(got.find("HTTP/"), std::string::npos) << got;
  EXPECT_EQ(wait_handshake_failures(1), 1);
  EXPECT_EQ(seen_count(), 0u);
}

TEST_F(TlsTest, MutualTlsNeedsACertificateSignedByTheClientCa) {
  ASSERT_TRUE(start(tls_options(/*client_ca=*/true)).ok());
  {
    // No certificate: in TLS 1.3 the client may finish its side first; either way no HTTP response comes.
    TlsClient c(server_->port(), verified());
    EXPECT_FALSE(is_200(c.get("/")));
  }
  {
    ClientOptions o = verified();
    o.cert_file = path("other.pem");
    o.key_file = path("other.key");
    TlsClient c(server_->port(), o);
    EXPECT_FALSE(is_200(c.get("/")));
  }
  EXPECT_EQ(wait_handshake_failures(2), 2);
  EXPECT_EQ(seen_count(), 0u);
  ClientOptions o = verified();
  o.cert_file = path("client.pem");
  o.key_file = path("client.key");
  TlsClient c(server_->port(), o);
  ASSERT_TRUE(c.handshake_ok());
  const std::string r = c.get("/who");
  EXPECT_TRUE(is_200(r)) << r;
  const HttpRequest req = last_seen();
  EXPECT_TRUE(req.tls);
  EXPECT_EQ(req.client_cert_subject, "CN=test-client,O=Citadel Test");
}

TEST_F(TlsTest, ReloadServesTheNewCertificateToNewConnectionsOnly) {
  ASSERT_TRUE(start(tls_options()).ok());
  TlsClient before(server_->port(), verified());
  ASSERT_TRUE(is_200(before.get("/1")));
  EXPECT_EQ(before.server_serial(), 100);

  issue_server_cert(200, "server-b");
  ASSERT_TRUE(server_->reload_tls().ok());
  EXPECT_EQ(server_->stats().tls_reloads, 1);
  TlsClient after(server_->port(), verified());
  ASSERT_TRUE(is_200(after.get("/2")));
  EXPECT_EQ(after.server_serial(), 200);
  EXPECT_TRUE(is_200(before.get("/3")));  // the open connection keeps its context

  // A broken certificate file: an error naming it, and the server keeps the last good context.
  { std::ofstream(path("server.pem"), std::ios::trunc) << "-----BEGIN CERTIFICATE-----\nnot base64\n"; }
  const Status st = server_->reload_tls();
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find(path("server.pem")), std::string::npos) << st.message();
  EXPECT_EQ(server_->stats().tls_reloads, 1);
  TlsClient still(server_->port(), verified());
  ASSERT_TRUE(is_200(still.get("/4")));
  EXPECT_EQ(still.server_serial(), 200);

  // A key that belongs to another certificate is refused as well.
  issue_server_cert(300, "server-c");
  fs::copy_file(path("client.key"), path("server.key"), fs::copy_options::overwrite_existing);
  const Status mismatch = server_->reload_tls();
  EXPECT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.message().find("does not match"), std::string::npos) << mismatch.message();
  TlsClient last(server_->port(), verified());
  ASSERT_TRUE(is_200(last.get("/5")));
  EXPECT_EQ(last.server_serial(), 200);
}

TEST_F(TlsTest, StartFailsWithAStatusNamingTheFile) {
  HttpServerOptions o = tls_options();
  o.tls_cert_file = path("missing.pem");
  Status st = start(o);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find(path("missing.pem")), std::string::npos) << st.message();

  o = tls_options();
  o.tls_key_file = path("client.key");  // a valid key, but not the certificate's
  st = start(o);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("does not match"), std::string::npos) << st.message();

  o = tls_options();
  o.tls_key_file.clear();
  st = start(o);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("key file"), std::string::npos) << st.message();

  o = tls_options(/*client_ca=*/true);
  o.tls_client_ca_file = path("server.key");  // no certificate in it
  st = start(o);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find(path("server.key")), std::string::npos) << st.message();
}

TEST_F(TlsTest, LimitsGoThroughTheHandlerOverTls) {
  HttpServerOptions o = tls_options();
  o.max_body_bytes = 1000;
  o.max_header_bytes = 2000;
  ASSERT_TRUE(start(o).ok());
  {
    TlsClient c(server_->port(), verified());
    const std::string r = c.request("POST /v1/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n");
    EXPECT_EQ(r.rfind("HTTP/1.1 413", 0), 0u) << r;
    EXPECT_NE(r.find("Connection: close"), std::string::npos) << r;
    const HttpRequest req = last_seen();
    EXPECT_EQ(req.transport_status, 413);
    EXPECT_EQ(req.transport_error, "request body exceeds 1000 bytes");
    EXPECT_EQ(req.path, "/v1/chat");
    EXPECT_TRUE(req.tls);
    EXPECT_FALSE(req.peer.empty());
    EXPECT_TRUE(c.closed_with_notify());  // closed after the rejection
  }
  {
    TlsClient c(server_->port(), verified());
    const std::string r = c.request("GET / HTTP/1.1\r\nX-Big: " + std::string(5000, 'a') + "\r\n\r\n");
    EXPECT_EQ(r.rfind("HTTP/1.1 431", 0), 0u) << r;
    const HttpRequest req = last_seen();
    EXPECT_EQ(req.transport_status, 431);
    EXPECT_NE(req.transport_error.find("2000"), std::string::npos);
    EXPECT_TRUE(req.tls);
  }
  EXPECT_EQ(server_->stats().responses_4xx, 2);
}

}  // namespace
}  // namespace citadel::server
