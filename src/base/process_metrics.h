// Process and host metrics for the registry (base/metrics.h), refreshed by a collector at every scrape (Linux /proc):
//   citadel:process_resident_memory_bytes, citadel:process_virtual_memory_bytes   (/proc/self/statm)
//   citadel:process_open_fds, citadel:process_max_fds                              (/proc/self/fd, RLIMIT_NOFILE)
//   citadel:process_cpu_seconds_total                                              (/proc/self/stat utime + stime)
//   citadel:process_start_time_seconds (Unix), citadel:process_uptime_seconds
//   citadel:host_memory_total_bytes, citadel:host_memory_available_bytes, citadel:host_memory_usage_perc (0..1)
//                                                                                  (/proc/meminfo)
//   citadel:build_info{version, commit} 1
// A /proc file that cannot be read leaves its gauge at the last value (never an error at scrape time).
// Thread-safety: call once at start-up; the collector runs under the registry's collect lock.
#pragma once

#include <string>

#include "base/metrics.h"

namespace citadel::metrics {

void register_process_metrics(Registry& reg, const std::string& version, const std::string& commit);

// The parsers, exposed for tests: resident bytes from a statm line ("size resident ..." in pages); MemTotal and
// MemAvailable (bytes) from /proc/meminfo text; false when a field is missing.
bool parse_statm(const std::string& text, long page_size, double* virtual_bytes, double* resident_bytes);
bool parse_meminfo(const std::string& text, double* total_bytes, double* available_bytes);
// The host's MemTotal and MemAvailable now (/proc/meminfo); false when it cannot be read.
bool read_host_memory(double* total_bytes, double* available_bytes);

}  // namespace citadel::metrics
