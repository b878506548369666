// QuotaManager: request and token budgets that concurrent requests can never overrun, shared by every replica
// that opens the same state database.
//
// Model: each scope ("key:<id>", "tenant:<id>", "oidc:<sub>") has usage rows per minute window (window_start =
// now - now % 60) and per UTC day (now - now % 86400), and one lease row per in-flight request. reserve() checks
// every scope of a request and, only if all allow, counts the request and its reserved tokens (prompt + the most it
// may generate) in both windows and takes a lease per scope: all inside ONE store transaction, which excludes every
// other writer of the database (auth/schema.h; store/database.h), so N concurrent reserves against a budget of K
// grant exactly min(N, K) whatever process or thread they run in. settle() replaces the reservation with the real
// token count and releases the leases. A lease that is never settled (a crashed replica) stops counting toward the
// concurrency limit at its expires_at (now + lease_ttl_s); its reserved tokens stay counted. Pick lease_ttl_s above
// the longest a request may run, or a long stream stops holding its concurrency slot.
//
// Limits: QuotaLimits' fields, nullopt or negative = unlimited. `tokens` passed to reserve() is what the request
// may consume at most (prompt + max completion tokens): the budget check is against that reservation.
// Housekeeping: expired leases and usage rows older than two days are purged by purge(), which reserve() runs
// itself about once per 256 calls (per QuotaManager).
// Thread-safety: every method may be called from any thread; the Database must outlive the QuotaManager.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "auth/identity.h"
#include "base/status.h"
#include "store/database.h"

namespace citadel::auth {

struct QuotaScope {
  std::string scope;   // "key:<id>", "tenant:<id>" or "oidc:<sub>" (any text; compared exactly)
  QuotaLimits limits;  // effective limits of this scope
};

// For the OpenAI x-ratelimit-* headers: -1 = unlimited (the header is then omitted).
struct RateLimitInfo {
  int64_t limit_requests = -1, remaining_requests = -1, reset_requests_s = 0;
  int64_t limit_tokens = -1, remaining_tokens = -1, reset_tokens_s = 0;
};

struct QuotaDecision {
  bool allowed = true;
  // When denied: "requests_per_minute" | "tokens_per_minute" | "concurrent_requests" | "daily_tokens" |
  // "max_tokens_per_request", the scope that denied and a message for the client naming the numbers.
  std::string limit;
  std::string scope;
  std::string message;
  // Seconds until a retry can succeed: rpm/tpm -> the next minute (>= 1), daily -> the next UTC midnight,
  // concurrent -> 1; 0 when no retry can ever succeed (the request alone exceeds a limit).
  int retry_after_s = 0;
  RateLimitInfo info;  // of the first scope (the key), counting this request when allowed
};

// Counters of one scope (for the admin API).
struct QuotaUsage {
  int64_t requests_this_minute = 0, tokens_this_minute = 0;
  int64_t requests_today = 0, tokens_today = 0;
  int64_t in_flight = 0;  // unexpired leases
};

class QuotaManager {
 public:
  explicit QuotaManager(store::Database* db) : db_(db) {}
  ~QuotaManager();  // applies what settle_later() queued

  // Checks and, if every scope allows, records one request of `tokens` tokens (see the file comment).
  // request_id must be unique among unsettled requests (kInvalidArgument if it already holds leases).
  // max_completion_tokens is checked against each scope's max_tokens_per_request. Denials are an ok Result with
  // allowed = false; an error is a store failure (nothing was recorded).
  Result<QuotaDecision> reserve(const std::string& request_id, const std::vector<QuotaScope>& scopes, int64_t tokens,
                                int64_t max_completion_tokens, int64_t now, int lease_ttl_s);
  // Replaces the reservation of request_id by `actual_tokens` in the windows it was counted in (counts never drop
  // below 0) and releases its leases. Idempotent: an unknown or already settled request is a no-op.
  Status settle(const std::string& request_id, int64_t actual_tokens, int64_t now);
  // settle(), off the caller's thread: queued, then applied in batches (one transaction each) by a worker thread,
  // and by this manager's next reserve() inside its own transaction before it checks anything, so a client whose
  // request just ended never finds its own slot or tokens still held on this manager. Another replica sees the
  // settlement once the worker ran (typically within a millisecond).
  void settle_later(const std::string& request_id, int64_t actual_tokens, int64_t now);
  // Applies everything queued so far (tests, shutdown).
  Status flush();
  // The scope's rate-limit state now (nothing recorded).
  Result<RateLimitInfo> peek(const QuotaScope& scope, int64_t now);
  Result<QuotaUsage> usage(const std::string& scope, int64_t now);
  // Deletes expired leases and usage rows older than two days.
  Status purge(int64_t now);
  // false: reserve() never purges (a maintenance thread calls purge() instead, keeping it off the request path).
  void set_auto_purge(bool on) { auto_purge_ = on; }

 private:
  struct PendingSettle {
    std::string request_id;
    int64_t actual_tokens, now;
  };
  std::vector<PendingSettle> take_pending();
  void requeue(std::vector<PendingSettle> batch);
  void settler_loop();

  store::Database* db_;
  std::atomic<uint64_t> reserves_{0};
  std::atomic<bool> auto_purge_{true};
  std::mutex pending_mu_;  // guards the four below
  std::condition_variable pending_cv_;
  std::vector<PendingSettle> pending_;
  std::thread settler_;     // started by the first settle_later()
  bool stopping_ = false;
};

}  // namespace citadel::auth
