#include "base/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>

namespace citadel::metrics {
namespace {

std::string read_file(const char* path) {
  std::ifstream f(path);
  if (!f) return {};
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

double count_fds() {
  DIR* d = opendir("/proc/self/fd");
  if (!d) return -1;
  double n = 0;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') ++n;
  closedir(d);
  return n - 1;  // the directory stream's own descriptor
}

// utime + stime (fields 14 and 15) of /proc/self/stat, in seconds; -1 when unreadable.
double cpu_seconds() {
  const std::string s = read_file("/proc/self/stat");
  const size_t paren = s.rfind(')');  // the command name may hold spaces and parentheses
  if (paren == std::string::npos) return -1;
  std::istringstream in(s.substr(paren + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {  // field 3 is the state
    if (i == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
    if (i == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
  }
  const long hz = sysconf(_SC_CLK_TCK);
  return hz > 0 ? static_cast<double>(utime + stime) / static_cast<double>(hz) : -1;
}

}  // namespace

bool parse_statm(const std::string& text, long page_size, double* virtual_bytes, double* resident_bytes) {
  unsigned long long size = 0, resident = 0;
  if (std::sscanf(text.c_str(), "%llu %llu", &size, &resident) != 2) return false;
  *virtual_bytes = static_cast<double>(size) * static_cast<double>(page_size);
  *resident_bytes = static_cast<double>(resident) * static_cast<double>(page_size);
  return true;
}

bool parse_meminfo(const std::string& text, double* total_bytes, double* available_bytes) {
  bool got_total = false, got_avail = false;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    unsigned long long kb = 0;
    if (std::sscanf(line.c_str(), "MemTotal: %llu kB", &kb) == 1) *total_bytes = 1024.0 * kb, got_total = true;
    else if (std::sscanf(line.c_str(), "MemAvailable: %llu kB", &kb) == 1)
      *available_bytes = 1024.0 * kb, got_avail = true;
  }
  return got_total && got_avail;
}

bool read_host_memory(double* total_bytes, double* available_bytes) {
  return parse_meminfo(read_file("/proc/meminfo"), total_bytes, available_bytes);
}

void register_process_metrics(Registry& reg, const std::string& version, const std::string& commit) {
  auto* rss = reg.gauge("citadel:process_resident_memory_bytes", "Resident memory of the process.")->get();
  auto* vms = reg.gauge("citadel:process_virtual_memory_bytes", "Virtual memory of the process.")->get();
  auto* fds = reg.gauge("citadel:process_open_fds", "Open file descriptors.")->get();
  auto* max_fds = reg.gauge("citadel:process_max_fds", "The file descriptor limit (RLIMIT_NOFILE).")->get();
  auto* cpu = reg.counter("citadel:process_cpu_seconds_total", "User and system CPU time of the process.")->get();
  auto* start = reg.gauge("citadel:process_start_time_seconds", "When the metrics started (Unix seconds).")->get();
  auto* uptime = reg.gauge("citadel:process_uptime_seconds", "Seconds since the metrics started.")->get();
  auto* mem_total = reg.gauge("citadel:host_memory_total_bytes", "Memory of the host (MemTotal).")->get();
  auto* mem_avail = reg.gauge("citadel:host_memory_available_bytes", "Available memory of the host (MemAvailable).")
                        ->get();
  auto* mem_perc = reg.gauge("citadel:host_memory_usage_perc",
                             "Fraction of the host's memory in use: 1 - MemAvailable / MemTotal (0..1).")->get();
  reg.gauge("citadel:build_info", "Build of this server (value 1).", {"version", "commit"})->with({version, commit})
      ->set(1);
  start->set(static_cast<double>(std::time(nullptr)));
  const auto t0 = std::chrono::steady_clock::now();
  const long page = sysconf(_SC_PAGESIZE);
  reg.add_collector([=] {
    double v = 0, r = 0;
    if (parse_statm(read_file("/proc/self/statm"), page, &v, &r)) vms->set(v), rss->set(r);
    if (const double n = count_fds(); n >= 0) fds->set(n);
    if (rlimit rl{}; getrlimit(RLIMIT_NOFILE, &rl) == 0) max_fds->set(static_cast<double>(rl.rlim_cur));
    if (const double c = cpu_seconds(); c >= 0) cpu->set_total(c);
    uptime->set(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    double total = 0, avail = 0;
    if (parse_meminfo(read_file("/proc/meminfo"), &total, &avail) && total > 0) {
      mem_total->set(total), mem_avail->set(avail);
      mem_perc->set(1.0 - avail / total);
    }
  });
}

}  // namespace citadel::metrics
