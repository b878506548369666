// GPU metrics for the registry (base/metrics.h), read from NVML (the NVIDIA driver's management library) loaded at
// run time with dlopen: no link dependency, no CUDA or NVML header; a host without the driver simply has no GPU
// series. Per device (label gpu = the NVML index, as nvidia-smi numbers them):
//   citadel:gpu_utilization_perc      fraction of the last sample period a kernel ran (0..1; NVML's percent / 100)
//   citadel:gpu_memory_used_bytes, citadel:gpu_memory_total_bytes
//   citadel:gpu_memory_usage_perc     used / total (0..1)
//   citadel:gpu_temperature_celsius   the GPU die sensor
//   citadel:gpu_power_watts           board power draw (NVML milliwatts / 1000)
//   citadel:gpu_info{gpu, name, uuid} 1
// The devices are those NVML sees, whichever device the models run on (a CPU-serving process on a GPU host still
// reports the cards). CUDA_VISIBLE_DEVICES does not apply to NVML: the index is the physical one.
//
// Reading: a collector at scrape time, at most once per min_interval (the previous values are served in between);
// the calls are cheap driver queries (no device synchronisation). A call that fails for one device leaves that
// device's series of that call out of this scrape (Gauge::clear), never an error at scrape time; failures are
// logged as a warning at most once per minute (with the count of those not logged).
// Loading: the library is opened once per registration and kept open for the process (never dlclose'd: NVML's
// threads may outlive nvmlShutdown); nvmlInit_v2 once; nvmlShutdown when the registry is destroyed.
// Thread-safety: call at start-up; the collector runs under the registry's collect lock (no other locking).
#pragma once

#include <chrono>
#include <string>

#include "base/metrics.h"

namespace citadel::metrics {

struct NvmlOptions {
  // The library to dlopen. Empty: $CITADEL_NVML_LIBRARY when set (tests point it at a fake), else
  // "libnvidia-ml.so.1" (the driver's soname; the unversioned .so is only in the CUDA toolkit's stubs).
  std::string library;
  std::chrono::milliseconds min_interval{1000};  // between two reads of the devices
};

// Registers the series above for every device NVML reports and the collector that refreshes them. Returns the number
// of devices registered; 0 when the library cannot be loaded, lacks a symbol, fails to initialise or reports no
// device: then nothing is registered and one info line is logged. Never fails otherwise.
int register_gpu_metrics(Registry& reg, const NvmlOptions& options = {});

}  // namespace citadel::metrics
