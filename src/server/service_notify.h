// The service manager's notification protocol (systemd's sd_notify, Type=notify services), written directly over
// a unix datagram socket (no libsystemd): the manager puts the socket's address in $NOTIFY_SOCKET (a path, or "@name"
// for the abstract namespace) and, with WatchdogSec=, the watchdog period in $WATCHDOG_USEC (and the pid it is
// meant for in $WATCHDOG_PID). Messages are newline-separated VAR=VALUE lines: READY=1 (start-up done),
// STOPPING=1 (shutdown begun), WATCHDOG=1 (alive; due at least every WATCHDOG_USEC), STATUS=free text.
// Without $NOTIFY_SOCKET every call is a no-op that succeeds, so serve behaves the same outside systemd.
// Thread-safety: notify() may be called from any thread (one sendto per message on a socket opened once).
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <chrono>
#include <string>
#include <string_view>

#include "base/status.h"

namespace citadel::server {

class ServiceNotifier {
 public:
  // Reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID. A malformed value is an error (logged by the caller,
  // the server then runs without notifications) rather than a silent no-op.
  static Result<ServiceNotifier> from_environment();
  // For tests: an explicit socket address ("" = disabled) and watchdog period (0 = none).
  static Result<ServiceNotifier> create(const std::string& address, std::chrono::microseconds watchdog);

  ServiceNotifier() = default;
  ServiceNotifier(ServiceNotifier&& o) noexcept;
  ServiceNotifier& operator=(ServiceNotifier&& o) noexcept;
  ServiceNotifier(const ServiceNotifier&) = delete;
  ServiceNotifier& operator=(const ServiceNotifier&) = delete;
  ~ServiceNotifier();

  bool enabled() const { return fd_ >= 0; }
  const std::string& address() const { return address_; }
  // The watchdog timeout the manager enforces (0: no watchdog for this process).
  std::chrono::microseconds watchdog() const { return watchdog_; }
  // How often to send WATCHDOG=1: half the timeout, as sd_watchdog_enabled(3) advises (0: never).
  std::chrono::milliseconds watchdog_ping_every() const;

  // Sends one message (e.g. "READY=1\nSTATUS=serving"). kIo when the manager's socket refuses it.
  Status notify(std::string_view message) const;

 private:
  int fd_ = -1;
  std::string address_;
  std::chrono::microseconds watchdog_{0};
  sockaddr_un sa_{};  // the manager's address
  socklen_t sa_len_ = 0;
};

}  // namespace citadel::server
