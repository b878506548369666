#include "server/http_fetch.h"

#include <chrono>
#include <optional>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/ssl.h>

namespace citadel::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

namespace {

struct Url {
  bool https = false;
  std::string host, port, target;
};

Result<Url> parse_url(const std::string& url) {
  Url u;
  std::string rest;
  if (url.rfind("https://", 0) == 0) u.https = true, rest = url.substr(8);
  else if (url.rfind("http://", 0) == 0) rest = url.substr(7);
  else return InvalidArgument("not an http(s) URL: " + url.substr(0, 200));
  const size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  u.target = slash == std::string::npos ? "/" : rest.substr(slash);
  if (authority.find('@') != std::string::npos) return InvalidArgument("URLs with credentials are not accepted");
  const size_t colon = authority.rfind(':');
  if (colon != std::string::npos && authority.find(']') == std::string::npos) {
    u.host = authority.substr(0, colon), u.port = authority.substr(colon + 1);
  } else {
    u.host = authority, u.port = u.https ? "443" : "80";
  }
  if (u.host.empty()) return InvalidArgument("URL without a host: " + url.substr(0, 200));
  return u;
}

template <class Stream>
Result<HttpReply> request(Stream& stream, const Url& u, const HttpCall& call, const FetchOptions& o) {
  const http::verb verb = http::string_to_verb(call.method);
  if (verb == http::verb::unknown) return InvalidArgument("unknown HTTP method " + call.method.substr(0, 16));
  http::request<http::string_body> req{verb, u.target, 11};
  req.set(http::field::host, u.host);
  req.set(http::field::user_agent, "citadel");
  req.set(http::field::accept, "application/json");
  if (!call.bearer.empty()) req.set(http::field::authorization, "Bearer " + call.bearer);
  if (!call.body.empty()) {
    req.set(http::field::content_type, "application/json");
    req.body() = call.body;
  }
  req.prepare_payload();
  const std::string what = call.method + " " + u.host + u.target;
  beast::error_code ec;
  http::write(stream, req, ec);
  if (ec) return IoError(what + ": " + ec.message());
  beast::flat_buffer buf;
  http::response_parser<http::string_body> parser;
  parser.body_limit(o.max_bytes);
  http::read(stream, buf, parser, ec);
  if (ec) return IoError(what + ": " + ec.message());
  auto& res = parser.get();
  return HttpReply{static_cast<int>(res.result_int()), std::move(res.body())};
}

}  // namespace

Result<std::string> http_get(const std::string& url, const FetchOptions& o) {
  auto r = http_call(url, HttpCall{}, o);
  if (!r.ok()) return r.status();
  if (r->status != 200) {
    auto u = parse_url(url);
    return IoError("GET " + (u.ok() ? u->host + u->target : url.substr(0, 200)) + ": HTTP " + std::to_string(r->status));
  }
  return std::move(r->body);
}

Result<HttpReply> http_call(const std::string& url, const HttpCall& call, const FetchOptions& o) {
  auto u = parse_url(url);
  if (!u.ok()) return u.status();
  asio::io_context ioc;
  beast::error_code ec;
  tcp::resolver resolver(ioc);
  auto results = resolver.resolve(u->host, u->port, ec);
  if (ec) return IoError("resolve " + u->host + ": " + ec.message());
  const auto deadline = std::chrono::seconds(o.timeout_s);
  if (!u->https) {
    beast::tcp_stream stream(ioc);
    stream.expires_after(deadline);
    stream.connect(results, ec);
    if (ec) return IoError("connect " + u->host + ":" + u->port + ": " + ec.message());
    // Synchronous beast calls ignore the stream's timer; a socket-level timeout bounds each read instead.
    struct timeval tv{o.timeout_s, 0};
    ::setsockopt(stream.socket().native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return request(stream, *u, call, o);
  }
  ssl::context ctx(ssl::context::tls_client);
  ctx.set_verify_mode(ssl::verify_peer);
  if (!o.ca_file.empty()) ctx.load_verify_file(o.ca_file, ec);
  else ctx.set_default_verify_paths(ec);
  if (ec) return IoError("TLS trust store: " + ec.message());
  beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
  if (!SSL_set_tlsext_host_name(stream.native_handle(), u->host.c_str()))
    return IoError("TLS: cannot set SNI for " + u->host);
  SSL_set1_host(stream.native_handle(), u->host.c_str());
  beast::get_lowest_layer(stream).connect(results, ec);
  if (ec) return IoError("connect " + u->host + ":" + u->port + ": " + ec.message());
  struct timeval tv{o.timeout_s, 0};
  ::setsockopt(beast::get_lowest_layer(stream).socket().native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  stream.handshake(ssl::stream_base::client, ec);
  if (ec) return IoError("TLS handshake with " + u->host + ": " + ec.message());
  return request(stream, *u, call, o);
}

}  // namespace citadel::server
