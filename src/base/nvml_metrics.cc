#include "base/nvml_metrics.h"

#include <dlfcn.h>

#include <cstdlib>
#include <memory>
#include <optional>
#include <vector>

#include "base/log.h"

namespace citadel::metrics {
namespace {

// The few NVML declarations used here, written from the documented C ABI (nvml.h is not on every machine, and the
// server must not need it to build). Every function returns nvmlReturn_t, a C enum (int-sized): 0 is NVML_SUCCESS.
using NvmlReturn = int;
constexpr NvmlReturn kNvmlSuccess = 0;
struct NvmlDeviceOpaque;
using NvmlDevice = NvmlDeviceOpaque*;  // nvmlDevice_t: an opaque handle, valid until nvmlShutdown
struct NvmlUtilization {               // nvmlUtilization_t
  unsigned int gpu;                    // percent of the last sample period during which a kernel ran
  unsigned int memory;                 // percent of it during which device memory was read or written
};
struct NvmlMemory {  // nvmlMemory_t (version 1), bytes
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
constexpr int kNvmlTemperatureGpu = 0;     // NVML_TEMPERATURE_GPU (nvmlTemperatureSensors_t)
constexpr unsigned kNvmlNameBytes = 96;    // NVML_DEVICE_NAME_V2_BUFFER_SIZE
constexpr unsigned kNvmlUuidBytes = 96;    // NVML_DEVICE_UUID_V2_BUFFER_SIZE
constexpr auto kErrorLogInterval = std::chrono::minutes(1);

struct NvmlApi {
  NvmlReturn (*init)();                                           // nvmlInit_v2
  NvmlReturn (*shutdown)();                                       // nvmlShutdown
  NvmlReturn (*device_count)(unsigned int*);                      // nvmlDeviceGetCount_v2
  NvmlReturn (*handle_by_index)(unsigned int, NvmlDevice*);       // nvmlDeviceGetHandleByIndex_v2
  NvmlReturn (*utilization)(NvmlDevice, NvmlUtilization*);        // nvmlDeviceGetUtilizationRates
  NvmlReturn (*memory)(NvmlDevice, NvmlMemory*);                  // nvmlDeviceGetMemoryInfo
  NvmlReturn (*temperature)(NvmlDevice, int, unsigned int*);      // nvmlDeviceGetTemperature (°C)
  NvmlReturn (*power)(NvmlDevice, unsigned int*);                 // nvmlDeviceGetPowerUsage (milliwatts)
  NvmlReturn (*name)(NvmlDevice, char*, unsigned int);            // nvmlDeviceGetName
  NvmlReturn (*uuid)(NvmlDevice, char*, unsigned int);            // nvmlDeviceGetUUID
  const char* (*error_string)(NvmlReturn);                        // nvmlErrorString

  std::string describe(NvmlReturn r) const {
    const char* s = error_string ? error_string(r) : nullptr;
    return (s ? std::string(s) : std::string("error")) + " (" + std::to_string(r) + ")";
  }
};

// dlopen + dlsym of every entry point; nullopt (and *why) when the library or a symbol is missing.
std::optional<NvmlApi> load_nvml(const std::string& path, std::string* why) {
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* e = dlerror();
    *why = e ? e : ("cannot load " + path);
    return std::nullopt;
  }
  NvmlApi api{};
  bool ok = true;
  auto sym = [&](auto& fn, const char* name) {
    void* p = dlsym(lib, name);
    if (!p && ok) *why = path + " has no symbol " + name, ok = false;
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(p);
  };
  sym(api.init, "nvmlInit_v2");
  sym(api.shutdown, "nvmlShutdown");
  sym(api.device_count, "nvmlDeviceGetCount_v2");
  sym(api.handle_by_index, "nvmlDeviceGetHandleByIndex_v2");
  sym(api.utilization, "nvmlDeviceGetUtilizationRates");
  sym(api.memory, "nvmlDeviceGetMemoryInfo");
  sym(api.temperature, "nvmlDeviceGetTemperature");
  sym(api.power, "nvmlDeviceGetPowerUsage");
  sym(api.name, "nvmlDeviceGetName");
  sym(api.uuid, "nvmlDeviceGetUUID");
  sym(api.error_string, "nvmlErrorString");
  if (!ok) {
    dlclose(lib);  // never initialised: nothing of it runs
    return std::nullopt;
  }
  return api;  // the handle stays open for the process (see the header)
}

struct DeviceSeries {
  unsigned int index = 0;
  NvmlDevice handle = nullptr;
  Gauge *util = nullptr, *mem_used = nullptr, *mem_total = nullptr, *mem_perc = nullptr, *temp = nullptr,
        *power = nullptr;
};

// What the collector owns: the API, the devices, the rate limit and the error-log limit. Touched only by the
// collector (under the registry's collect lock) and by the destructor.
class NvmlCollector {
 public:
  NvmlCollector(NvmlApi api, std::vector<DeviceSeries> devices, std::chrono::milliseconds min_interval)
      : api_(api), devices_(std::move(devices)), min_interval_(min_interval) {}
  ~NvmlCollector() { api_.shutdown(); }
  NvmlCollector(const NvmlCollector&) = delete;
  NvmlCollector& operator=(const NvmlCollector&) = delete;

  void collect() {
    const auto now = std::chrono::steady_clock::now();
    if (last_read_ && now - *last_read_ < min_interval_) return;  // serve the previous read
    last_read_ = now;
    for (DeviceSeries& d : devices_) read(d, now);
  }

 private:
  void read(DeviceSeries& d, std::chrono::steady_clock::time_point now) {
    NvmlUtilization u{};
    if (NvmlReturn r = api_.utilization(d.handle, &u); r == kNvmlSuccess) {
      d.util->set(u.gpu / 100.0);
    } else {
      d.util->clear();
      failed("nvmlDeviceGetUtilizationRates", d.index, r, now);
    }
    NvmlMemory m{};
    if (NvmlReturn r = api_.memory(d.handle, &m); r == kNvmlSuccess) {
      d.mem_used->set(static_cast<double>(m.used));
      d.mem_total->set(static_cast<double>(m.total));
      if (m.total > 0) d.mem_perc->set(static_cast<double>(m.used) / static_cast<double>(m.total));
      else d.mem_perc->clear();
    } else {
      d.mem_used->clear(), d.mem_total->clear(), d.mem_perc->clear();
      failed("nvmlDeviceGetMemoryInfo", d.index, r, now);
    }
    unsigned int celsius = 0;
    if (NvmlReturn r = api_.temperature(d.handle, kNvmlTemperatureGpu, &celsius); r == kNvmlSuccess) {
      d.temp->set(celsius);
    } else {
      d.temp->clear();
      failed("nvmlDeviceGetTemperature", d.index, r, now);
    }
    unsigned int milliwatts = 0;
    if (NvmlReturn r = api_.power(d.handle, &milliwatts); r == kNvmlSuccess) {
      d.power->set(milliwatts / 1000.0);
    } else {
      d.power->clear();
      failed("nvmlDeviceGetPowerUsage", d.index, r, now);
    }
  }

  void failed(const char* call, unsigned int gpu, NvmlReturn r, std::chrono::steady_clock::time_point now) {
    if (last_log_ && now - *last_log_ < kErrorLogInterval) {
      ++unlogged_;
      return;
    }
    std::string msg = "gpu metrics: " + std::string(call) + " failed for gpu " + std::to_string(gpu) + ": " +
                      api_.describe(r) + "; its series are left out of this scrape";
    if (unlogged_) msg += " (" + std::to_string(unlogged_) + " more failures in the last minute were not logged)";
    log_warn(msg);
    last_log_ = now;
    unlogged_ = 0;
  }

  const NvmlApi api_;
  std::vector<DeviceSeries> devices_;
  const std::chrono::milliseconds min_interval_;
  std::optional<std::chrono::steady_clock::time_point> last_read_, last_log_;
  size_t unlogged_ = 0;
};

std::string device_string(NvmlReturn (*fn)(NvmlDevice, char*, unsigned int), NvmlDevice h,
                          unsigned int bytes) {
  std::vector<char> buf(bytes + 1, '\0');
  if (fn(h, buf.data(), bytes) != kNvmlSuccess) return "unknown";
  buf[bytes] = '\0';  // NVML terminates within `bytes`; never trust a driver (or a fake) to
  return std::string(buf.data());
}

}  // namespace

int register_gpu_metrics(Registry& reg, const NvmlOptions& options) {
  std::string path = options.library;
  if (path.empty()) {
    const char* env = std::getenv("CITADEL_NVML_LIBRARY");
    path = env && *env ? env : "libnvidia-ml.so.1";
  }
  std::string why;
  std::optional<NvmlApi> api = load_nvml(path, &why);
  if (!api) {
    log_info("gpu metrics: NVML not available (" + why + "); no citadel:gpu_* series");
    return 0;
  }
  if (NvmlReturn r = api->init(); r != kNvmlSuccess) {
    log_info("gpu metrics: nvmlInit_v2 failed: " + api->describe(r) + "; no citadel:gpu_* series");
    return 0;
  }
  unsigned int count = 0;
  if (NvmlReturn r = api->device_count(&count); r != kNvmlSuccess || count == 0) {
    log_info("gpu metrics: NVML reports no device" + (r == kNvmlSuccess ? std::string() : ": " + api->describe(r)) +
             "; no citadel:gpu_* series");
    api->shutdown();
    return 0;
  }
  struct Found {
    unsigned int index;
    NvmlDevice handle;
  };
  std::vector<Found> found;
  for (unsigned int i = 0; i < count; ++i) {
    NvmlDevice h = nullptr;
    if (NvmlReturn r = api->handle_by_index(i, &h); r == kNvmlSuccess) found.push_back({i, h});
    else log_warn("gpu metrics: no handle for gpu " + std::to_string(i) + ": " + api->describe(r) + "; skipped");
  }
  if (found.empty()) {
    log_info("gpu metrics: no NVML device could be opened; no citadel:gpu_* series");
    api->shutdown();
    return 0;
  }

  auto* util = reg.gauge("citadel:gpu_utilization_perc",
                         "Fraction of the last NVML sample period during which a kernel ran on the GPU (0..1).",
                         {"gpu"});
  auto* used = reg.gauge("citadel:gpu_memory_used_bytes", "GPU memory in use (NVML, all processes).", {"gpu"});
  auto* total = reg.gauge("citadel:gpu_memory_total_bytes", "GPU memory of the device (NVML).", {"gpu"});
  auto* perc = reg.gauge("citadel:gpu_memory_usage_perc", "Fraction of the GPU's memory in use: used / total (0..1).",
                         {"gpu"});
  auto* temp = reg.gauge("citadel:gpu_temperature_celsius", "GPU die temperature (NVML).", {"gpu"});
  auto* power = reg.gauge("citadel:gpu_power_watts", "Board power draw of the GPU (NVML).", {"gpu"});
  auto* info = reg.gauge("citadel:gpu_info", "A GPU NVML reports (value 1): its index, product name and UUID.",
                         {"gpu", "name", "uuid"});
  std::vector<DeviceSeries> devices;
  std::string names;
  for (const Found& f : found) {
    const std::string gpu = std::to_string(f.index);
    const std::string name = device_string(api->name, f.handle, kNvmlNameBytes);
    info->with({gpu, name, device_string(api->uuid, f.handle, kNvmlUuidBytes)})->set(1);
    DeviceSeries d{f.index, f.handle, util->with({gpu}), used->with({gpu}), total->with({gpu}),
                   perc->with({gpu}), temp->with({gpu}), power->with({gpu})};
    for (Gauge* g : {d.util, d.mem_used, d.mem_total, d.mem_perc, d.temp, d.power}) g->clear();  // until read
    devices.push_back(d);
    names += (names.empty() ? "" : ", ") + gpu + ": " + name;
  }
  auto collector = std::make_shared<NvmlCollector>(*api, std::move(devices), options.min_interval);
  reg.add_collector([collector] { collector->collect(); });
  log_info("gpu metrics: NVML from " + path + ", " + std::to_string(found.size()) + " device(s) (" + names + ")");
  return static_cast<int>(found.size());
}

}  // namespace citadel::metrics
