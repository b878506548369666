// The Beast transport over real loopback sockets: keep-alive, limits (413, 431) and malformed requests (answered by
// the handler with transport_status set), x-request-id, peer, chunked streaming, and disconnect detection while a
// response is pending.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include <boost/asio.hpp>

#include "server/http_server.h"

namespace citadel::server {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

class HttpServerTest : public ::testing::Test {
 protected:
  void start(Handler h, HttpServerOptions o = {}) {
    o.port = 0;
    o.threads = 2;
    server_ = std::make_unique<HttpServer>(o, std::move(h));
    ASSERT_TRUE(server_->start().ok());
  }
  tcp::socket connect() {
    tcp::socket s(ioc_);
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(server_->port())));
    return s;
  }
  // Reads one response (Content-Length or chunked until the terminating chunk, or EOF).
  static std::string read_response(tcp::socket& s) {
    std::string data;
    char buf[4096];
    for (;;) {
      const size_t he = data.find("\r\n\r\n");
      if (he != std::string::npos) {
        const std::string head = data.substr(0, he);
        const size_t cl = head.find("Content-Length: ");
        if (cl != std::string::npos) {
          const size_t n = std::stoul(head.substr(cl + 16));
          if (data.size() >= he + 4 + n) return data.substr(0, he + 4 + n);
        } else if (data.find("\r\n0\r\n\r\n", he) != std::string::npos) {
          return data;
        }
      }
      boost::system::error_code ec;
      const size_t n = s.read_some(asio::buffer(buf), ec);
      if (ec) return data;
      data.append(buf, n);
    }
  }
  asio::io_context ioc_;
  std::unique_ptr<HttpServer> server_;
};

// Answers transport rejections the way the API layer does (the status given, the message in an error body).
Handler echo_handler(std::vector<HttpRequest>* seen = nullptr, std::mutex* mu = nullptr) {
  return [seen, mu](HttpRequest req, std::shared_ptr<Responder> r) {
    HttpResponse resp;
    if (req.transport_status != 0) {
      resp.status = req.transport_status;
      resp.headers.push_back({"Content-Type", "application/json"});
      resp.body = "{\"error\":{\"message\":\"" + req.transport_error + "\"}}";
    } else {
      resp.headers.push_back({"Content-Type", "text/plain"});
      resp.body = req.method + " " + req.path + " " + std::to_string(req.body.size());
    }
    if (seen) {
      std::lock_guard<std::mutex> l(*mu);
      seen->push_back(req);
    }
    r->send(std::move(resp));
  };
}

TEST_F(HttpServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  start(echo_handler());
  auto s = connect();
  for (int i = 0; i < 3; ++i) {
    const std::string body(i * 10, 'x');
    asio::write(s, asio::buffer("POST /a?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) +
                                "\r\n\r\n" + body));
    const std::string resp = read_response(s);
    EXPECT_EQ(resp.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << resp;
    EXPECT_NE(resp.find("Connection: keep-alive"), std::string::npos);
    EXPECT_NE(resp.find("x-request-id: req-"), std::string::npos);
    EXPECT_NE(resp.find("POST /a " + std::to_string(body.size())), std::string::npos) << resp;
  }
  // Pipelined: two requests in one write.
  asio::write(s, asio::buffer(std::string("GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\n")));
  std::string both;
  char buf[4096];
  while (both.find("GET /p2 0") == std::string::npos) {
    boost::system::error_code ec;
    const size_t n = s.read_some(asio::buffer(buf), ec);
    if (ec) break;
    both.append(buf, n);
  }
  EXPECT_NE(both.find("GET /p1 0"), std::string::npos);
  EXPECT_LT(both.find("GET /p1 0"), both.find("GET /p2 0"));
}

TEST_F(HttpServerTest, EchoesAPlainClientRequestIdOnly) {
  start(echo_handler());
  auto s = connect();
  asio::write(s, asio::buffer(std::string("GET / HTTP/1.1\r\nX-Request-Id: my-id_1.2\r\n\r\n")));
  EXPECT_NE(read_response(s).find("x-request-id: my-id_1.2\r\n"), std::string::npos);
  asio::write(s, asio::buffer(std::string("GET / HTTP/1.1\r\nX-Request-Id: bad id<script>\r\n\r\n")));
  const std::string r = read_response(s);
  EXPECT_EQ(r.find("<script>"), std::string::npos);
  EXPECT_NE(r.find("x-request-id: req-"), std::string::npos);
}

TEST_F(HttpServerTest, LimitsGive413And431AndMalformedGives400ThroughTheHandler) {
  HttpServerOptions o;
  o.max_body_bytes = 1000;
  o.max_header_bytes = 2000;
  std::vector<HttpRequest> seen;
  std::mutex mu;
  start(echo_handler(&seen, &mu), o);
  {
    auto s = connect();
    asio::write(s, asio::buffer(
                       std::string("POST /v1/x HTTP/1.1\r\nX-Request-Id: big-1\r\nContent-Length: 5000\r\n\r\n")));
    const std::string r = read_response(s);
    EXPECT_EQ(r.rfind("HTTP/1.1 413", 0), 0u) << r;
    EXPECT_NE(r.find("request body exceeds 1000 bytes"), std::string::npos) << r;
    EXPECT_NE(r.find("x-request-id: big-1\r\n"), std::string::npos) << r;
    EXPECT_NE(r.find("Connection: close"), std::string::npos) << r;
  }
  {
    auto s = connect();
    asio::write(s, asio::buffer("GET / HTTP/1.1\r\nX-Big: " + std::string(5000, 'a') + "\r\n\r\n"));
    const std::string r = read_response(s);
    EXPECT_EQ(r.rfind("HTTP/1.1 431", 0), 0u) << r;
    EXPECT_NE(r.find("request headers exceed 2000 bytes"), std::string::npos) << r;
    EXPECT_NE(r.find("x-request-id: req-"), std::string::npos) << r;
  }
  {
    auto s = connect();
    asio::write(s, asio::buffer(std::string("GARBAGE\r\n\r\n")));
    EXPECT_EQ(read_response(s).rfind("HTTP/1.1 400", 0), 0u);
  }
  {
    std::lock_guard<std::mutex> l(mu);
    ASSERT_EQ(seen.size(), 3u);
    EXPECT_EQ(seen[0].transport_status, 413);
    EXPECT_EQ(seen[0].transport_error, "request body exceeds 1000 bytes");
    EXPECT_EQ(seen[0].method, "POST");  // the head had been parsed
    EXPECT_EQ(seen[0].path, "/v1/x");
    EXPECT_EQ(seen[0].request_id, "big-1");
    EXPECT_EQ(seen[0].peer.rfind("127.0.0.1:", 0), 0u) << seen[0].peer;
    EXPECT_FALSE(seen[0].tls);
    EXPECT_GT(seen[0].received_at, 0);
    EXPECT_EQ(seen[1].transport_status, 431);
    EXPECT_EQ(seen[1].transport_error, "request headers exceed 2000 bytes");
    EXPECT_TRUE(seen[1].body.empty());
    EXPECT_EQ(seen[1].request_id.rfind("req-", 0), 0u);
    EXPECT_EQ(seen[2].transport_status, 400);
    EXPECT_NE(seen[2].transport_error.find("malformed HTTP request"), std::string::npos);
  }
  EXPECT_EQ(server_->stats().responses_4xx, 3);
  EXPECT_EQ(server_->stats().requests_total, 0);
  // The server still works, and a normal request carries the peer and no transport status.
  auto s = connect();
  asio::write(s, asio::buffer(std::string("GET /ok HTTP/1.1\r\n\r\n")));
  EXPECT_EQ(read_response(s).rfind("HTTP/1.1 200", 0), 0u);
  std::lock_guard<std::mutex> l(mu);
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[3].transport_status, 0);
  EXPECT_EQ(seen[3].peer, "127.0.0.1:" + std::to_string(s.local_endpoint().port()));
}

TEST_F(HttpServerTest, ReloadTlsWithoutTlsIsAnError) {
  start(echo_handler());
  EXPECT_FALSE(server_->tls_enabled());
  EXPECT_FALSE(server_->reload_tls().ok());
}

TEST_F(HttpServerTest, ChunkedStreamAndDisconnectDetection) {
  std::atomic<int> closed{0};
  std::shared_ptr<Responder> held;
  std::mutex mu;
  start([&](HttpRequest req, std::shared_ptr<Responder> r) {
    if (req.path == "/stream") {
      r->start_stream(200, {{"Content-Type", "text/event-stream"}});
      r->write("data: 1\n\n");
      r->write("data: 2\n\n");
      r->end_stream();
      return;
    }
    r->on_closed([&closed] { closed++; });
    std::lock_guard<std::mutex> l(mu);
    held = r;  // never answered: the client will go away
  });
  {
    auto s = connect();
    asio::write(s, asio::buffer(std::string("GET /stream HTTP/1.1\r\n\r\n")));
    const std::string r = read_response(s);
    EXPECT_NE(r.find("Transfer-Encoding: chunked"), std::string::npos);
    EXPECT_NE(r.find("9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n"), std::string::npos) << r;
  }
  {
    auto s = connect();
    asio::write(s, asio::buffer(std::string("GET /pending HTTP/1.1\r\n\r\n")));
    for (int i = 0; i < 2000; ++i) {
      std::lock_guard<std::mutex> l(mu);
      if (held) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    s.close();
  }
  for (int i = 0; i < 2000 && closed.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(closed.load(), 1);
  std::lock_guard<std::mutex> l(mu);
  EXPECT_TRUE(held->closed());
  held.reset();
}

TEST_F(HttpServerTest, ManyConcurrentConnections) {
  start(echo_handler());
  std::vector<tcp::socket> socks;
  for (int i = 0; i < 200; ++i) socks.push_back(connect());
  for (auto& s : socks) asio::write(s, asio::buffer(std::string("GET /c HTTP/1.1\r\n\r\n")));
  for (auto& s : socks) EXPECT_EQ(read_response(s).rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_GE(server_->stats().connections_open, 200);
}

}  // namespace
}  // namespace citadel::server
