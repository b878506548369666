// A stand-in for libnvidia-ml.so.1, built as a shared library for the tests only: it exports the NVML entry points
// the GPU metrics use, with the documented C ABI and canned values, plus fake_nvml_* controls the tests reach
// through dlsym on the same handle (one copy of the state per process). Not thread-safe (the tests are not threaded).
#include <cstdio>
#include <cstring>

namespace {

constexpr int kSuccess = 0;
constexpr int kErrorUninitialized = 1;  // NVML_ERROR_UNINITIALIZED
constexpr int kErrorInvalidArgument = 2;
constexpr int kErrorNotSupported = 3;
constexpr int kErrorInsufficientSize = 7;
constexpr int kErrorUnknown = 999;
constexpr unsigned kMaxDevices = 4;

struct Device {
  unsigned util_gpu, util_memory;           // percent
  unsigned long long total, free_, used;    // bytes
  unsigned temperature;                     // °C
  unsigned milliwatts;
  const char* name;
  const char* uuid;
  unsigned fail_mask;                       // bit per call (see fake_nvml_fail)
};

struct State {
  Device devices[kMaxDevices];
  unsigned count;
  int init_result;
  int initialised;
  unsigned utilization_calls;
  unsigned shutdowns;
};

State g;

void reset() {
  std::memset(&g, 0, sizeof g);
  g.count = 2;
  // gpu 0: an H100-like card a quarter full; gpu 1: busier, hotter.
  g.devices[0] = {37, 12, 85899345920ull, 64424509440ull, 21474836480ull, 45, 123456, "Fake H100 80GB HBM3",
                  "GPU-00000000-1111-2222-3333-444444444444", 0};
  g.devices[1] = {100, 80, 85899345920ull, 4294967296ull, 81604378624ull, 81, 700000,
                  "Fake \"quoted\" GPU", "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", 0};
  g.devices[2] = g.devices[3] = g.devices[0];
}

struct Init {
  Init() { reset(); }
} init_once;

const Device* device(void* handle) {
  for (unsigned i = 0; i < g.count; ++i)
    if (handle == &g.devices[i]) return &g.devices[i];
  return nullptr;
}

// 0 or the error for a call that was told to fail for this device.
int check(void* handle, unsigned bit) {
  if (!g.initialised) return kErrorUninitialized;
  const Device* d = device(handle);
  if (!d) return kErrorInvalidArgument;
  return (d->fail_mask & bit) ? (bit == 2u ? kErrorNotSupported : kErrorUnknown) : kSuccess;
}

int copy(const char* s, char* out, unsigned length) {
  if (std::strlen(s) + 1 > length) return kErrorInsufficientSize;
  std::snprintf(out, length, "%s", s);
  return kSuccess;
}

}  // namespace

struct FakeUtilization {
  unsigned gpu, memory;
};
struct FakeMemory {
  unsigned long long total, free, used;
};

extern "C" {

// ---- controls for the tests
void fake_nvml_reset() { reset(); }
void fake_nvml_set_count(unsigned n) { g.count = n < kMaxDevices ? n : kMaxDevices; }
void fake_nvml_set_init_result(int r) { g.init_result = r; }
void fake_nvml_set_utilization(unsigned dev, unsigned percent) { g.devices[dev].util_gpu = percent; }
// mask bits: 1 utilisation, 2 memory (fails NOT_SUPPORTED), 4 temperature, 8 power.
void fake_nvml_fail(unsigned dev, unsigned mask) { g.devices[dev].fail_mask = mask; }
unsigned fake_nvml_utilization_calls() { return g.utilization_calls; }
unsigned fake_nvml_shutdowns() { return g.shutdowns; }

// ---- NVML
int nvmlInit_v2() {
  if (g.init_result != kSuccess) return g.init_result;
  g.initialised = 1;
  return kSuccess;
}
int nvmlShutdown() {
  ++g.shutdowns;
  g.initialised = 0;
  return kSuccess;
}
int nvmlDeviceGetCount_v2(unsigned* count) {
  if (!g.initialised) return kErrorUninitialized;
  *count = g.count;
  return kSuccess;
}
int nvmlDeviceGetHandleByIndex_v2(unsigned index, void** handle) {
  if (!g.initialised) return kErrorUninitialized;
  if (index >= g.count) return kErrorInvalidArgument;
  *handle = &g.devices[index];
  return kSuccess;
}
int nvmlDeviceGetUtilizationRates(void* handle, FakeUtilization* u) {
  ++g.utilization_calls;
  if (int r = check(handle, 1)) return r;
  *u = {device(handle)->util_gpu, device(handle)->util_memory};
  return kSuccess;
}
int nvmlDeviceGetMemoryInfo(void* handle, FakeMemory* m) {
  if (int r = check(handle, 2)) return r;
  const Device* d = device(handle);
  *m = {d->total, d->free_, d->used};
  return kSuccess;
}
int nvmlDeviceGetTemperature(void* handle, int sensor, unsigned* celsius) {
  if (int r = check(handle, 4)) return r;
  if (sensor != 0) return kErrorInvalidArgument;  // only NVML_TEMPERATURE_GPU exists
  *celsius = device(handle)->temperature;
  return kSuccess;
}
int nvmlDeviceGetPowerUsage(void* handle, unsigned* milliwatts) {
  if (int r = check(handle, 8)) return r;
  *milliwatts = device(handle)->milliwatts;
  return kSuccess;
}
int nvmlDeviceGetName(void* handle, char* name, unsigned length) {
  if (int r = check(handle, 0)) return r;
  return copy(device(handle)->name, name, length);
}
int nvmlDeviceGetUUID(void* handle, char* uuid, unsigned length) {
  if (int r = check(handle, 0)) return r;
  return copy(device(handle)->uuid, uuid, length);
}
const char* nvmlErrorString(int r) {
  switch (r) {
    case kSuccess: return "Success";
    case kErrorUninitialized: return "Uninitialized";
    case kErrorInvalidArgument: return "Invalid Argument";
    case kErrorNotSupported: return "Not Supported";
    default: return "Unknown Error";
  }
}

}  // extern "C"
