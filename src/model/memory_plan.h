// What a model needs in memory and whether it fits a device: the weights as stored, the KV cache per token from its
// architecture's KV layout (model/arch.h), and per device either how many tokens of KV fit beside the weights (after a
// reserve for activations, workspaces and the runtime) or by how much the weights alone exceed it. Used by
// `citadel inspect` (files) and `citadel synth --dry-run` (presets such as DeepSeek-V3's 671B shape, which no single
// device holds).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace citadel {

struct MemoryNeed {
  uint64_t weight_bytes = 0;       // every tensor as stored
  int64_t n_layers = 0;
  int64_t kv_values_per_layer = 0;  // per token; 0 when Citadel has no recipe for the architecture
  std::vector<int> tp_sizes = {1};  // rank counts of 1, 2, 4, 8 the model splits into (model/shard.h tp_supported)
  uint64_t kv_bytes_per_token(int bytes_per_value) const {
    return static_cast<uint64_t>(n_layers * kv_values_per_layer) * static_cast<uint64_t>(bytes_per_value);
  }
};

MemoryNeed memory_need(const ModelConfig& c, uint64_t weight_bytes);

struct DeviceFit {
  std::string device;       // "one 80 GB GPU"
  uint64_t memory = 0;      // bytes, all of the device's memory
  int kv_bytes_per_value = 2;
  bool fits = false;        // the weights, the reserve and one full-context sequence of KV fit
  int64_t kv_tokens = 0;    // tokens of KV beside the weights (0 when the weights do not fit)
  std::string verdict;      // one line saying so, with the numbers
};

// n on one device (or `count` devices splitting weights and KV evenly, tensor parallel). reserve: bytes kept per
// device for activations and the runtime. context: tokens one full-length sequence needs.
DeviceFit fit_on(const MemoryNeed& n, const std::string& device, uint64_t memory_per_device, int count,
                 int kv_bytes_per_value, uint64_t reserve_per_device, int64_t context);

// The fewest devices of memory_per_device (a rank count of n.tp_sizes) that hold the weights, the reserve on each and
// one `context`-token sequence of KV (split evenly, tensor parallel); 0 when none of n.tp_sizes does.
int fewest_devices(const MemoryNeed& n, uint64_t memory_per_device, uint64_t reserve_per_device, int64_t context);

// One 80 GB GPU, one 141 GB GPU, eight of either (KV in bf16), and this host's RAM (KV in f32, as the CPU
// backend keeps it); then, for 80 GB and 141 GB GPUs where one is not enough, the fewest that are (fewest_devices).
std::vector<DeviceFit> standard_fits(const MemoryNeed& n, uint64_t host_ram, int64_t context);

// Physical memory of this host (sysconf), 0 when unknown.
uint64_t host_ram_bytes();

}  // namespace citadel
