#include "server/service_notify.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace citadel::server {
namespace {

// The sockaddr for an address: a filesystem path, or "@name" for the abstract namespace (a leading NUL byte, and
// the length counts only the name: abstract names are not NUL-terminated).
Status make_address(const std::string& address, sockaddr_un* sa, socklen_t* len) {
  std::memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (address.size() < 2 || (address[0] != '/' && address[0] != '@'))
    return InvalidArgument("NOTIFY_SOCKET must be an absolute path or @abstract-name, got '" + address + "'");
  if (address.size() >= sizeof sa->sun_path)
    return InvalidArgument("NOTIFY_SOCKET is longer than a unix socket address (" + std::to_string(address.size()) +
                           " bytes)");
  std::memcpy(sa->sun_path, address.data(), address.size());
  if (address[0] == '@') sa->sun_path[0] = '\0';
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.size() + (address[0] == '/' ? 1 : 0));
  return OkStatus();
}

}  // namespace

Result<ServiceNotifier> ServiceNotifier::create(const std::string& address, std::chrono::microseconds watchdog) {
  ServiceNotifier n;
  n.watchdog_ = watchdog;
  if (address.empty()) return n;
  sockaddr_un sa;
  socklen_t len = 0;
  RETURN_IF_ERROR(make_address(address, &sa, &len));
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return IoError(std::string("notify socket: ") + std::strerror(errno));
  // Not connected: every message is addressed (sendto), so a manager that re-created its socket still gets it.
  n.fd_ = fd;
  n.address_ = address;
  std::memcpy(&n.sa_, &sa, sizeof sa);
  n.sa_len_ = len;
  return n;
}

Result<ServiceNotifier> ServiceNotifier::from_environment() {
  const char* sock = std::getenv("NOTIFY_SOCKET");
  std::chrono::microseconds watchdog{0};
  if (const char* w = std::getenv("WATCHDOG_USEC"); w && *w) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long usec = std::strtoull(w, &end, 10);
    if (errno != 0 || *end != '\0' || usec == 0)
      return InvalidArgument(std::string("WATCHDOG_USEC must be a positive integer, got '") + w + "'");
    watchdog = std::chrono::microseconds(usec);
    // The manager names the process the watchdog is for; a child that inherited the variables is not it.
    if (const char* pid = std::getenv("WATCHDOG_PID"); pid && *pid && std::atoll(pid) != static_cast<long long>(getpid()))
      watchdog = std::chrono::microseconds(0);
  }
  return create(sock ? sock : "", watchdog);
}

ServiceNotifier::ServiceNotifier(ServiceNotifier&& o) noexcept
    : fd_(o.fd_), address_(std::move(o.address_)), watchdog_(o.watchdog_), sa_len_(o.sa_len_) {
  std::memcpy(&sa_, &o.sa_, sizeof sa_);
  o.fd_ = -1;
}

ServiceNotifier& ServiceNotifier::operator=(ServiceNotifier&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_, address_ = std::move(o.address_), watchdog_ = o.watchdog_, sa_len_ = o.sa_len_;
    std::memcpy(&sa_, &o.sa_, sizeof sa_);
    o.fd_ = -1;
  }
  return *this;
}

ServiceNotifier::~ServiceNotifier() {
  if (fd_ >= 0) ::close(fd_);
}

std::chrono::milliseconds ServiceNotifier::watchdog_ping_every() const {
  if (!enabled() || watchdog_.count() <= 0) return std::chrono::milliseconds(0);
  return std::max(std::chrono::milliseconds(1), std::chrono::duration_cast<std::chrono::milliseconds>(watchdog_ / 2));
}

Status ServiceNotifier::notify(std::string_view message) const {
  if (fd_ < 0) return OkStatus();
  ssize_t n;
  do {
    n = ::sendto(fd_, message.data(), message.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&sa_), sa_len_);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return IoError("notify socket " + address_ + ": " + std::strerror(errno));
  if (static_cast<size_t>(n) != message.size()) return IoError("notify socket " + address_ + ": short write");
  return OkStatus();
}

}  // namespace citadel::server
