#include "model/memory_plan.h"

#include <unistd.h>

#include <cstdio>

#include "model/arch.h"
#include "model/shard.h"

namespace citadel {
namespace {

std::string gb(uint64_t bytes) {
  char b[32];
  std::snprintf(b, sizeof(b), "%.1f GB", static_cast<double>(bytes) / 1e9);
  return b;
}

}  // namespace

MemoryNeed memory_need(const ModelConfig& c, uint64_t weight_bytes) {
  MemoryNeed n;
  n.weight_bytes = weight_bytes;
  n.n_layers = c.n_layers;
  if (const ArchSpec* a = find_arch(c.arch)) n.kv_values_per_layer = a->kv_layout(c).values_per_token();
  for (int k : {2, 4, 8}) {
    if (c.n_heads > 0 && tp_supported(c, k).ok()) n.tp_sizes.push_back(k);
  }
  return n;
}

DeviceFit fit_on(const MemoryNeed& n, const std::string& device, uint64_t memory_per_device, int count,
                 int kv_bytes_per_value, uint64_t reserve_per_device, int64_t context) {
  DeviceFit f;
  f.device = device;
  f.memory = memory_per_device * static_cast<uint64_t>(count);
  f.kv_bytes_per_value = kv_bytes_per_value;
  const uint64_t reserve = reserve_per_device * static_cast<uint64_t>(count);
  const uint64_t per_token = n.kv_bytes_per_token(kv_bytes_per_value);
  if (n.weight_bytes + reserve > f.memory) {
    const uint64_t usable = memory_per_device > reserve_per_device ? memory_per_device - reserve_per_device : 1;
    const uint64_t need = (n.weight_bytes + usable - 1) / usable;
    f.verdict = "does not fit: the weights (" + gb(n.weight_bytes) + ") and the " + gb(reserve) + " reserve exceed " +
                gb(f.memory) + " by " + gb(n.weight_bytes + reserve - f.memory) + "; the weights alone need at least " +
                std::to_string(need) + " devices of " + gb(memory_per_device);
    return f;
  }
  const uint64_t left = f.memory - n.weight_bytes - reserve;
  f.kv_tokens = per_token ? static_cast<int64_t>(left / per_token) : 0;
  f.fits = per_token > 0 && f.kv_tokens >= context;
  char kv[64];
  std::snprintf(kv, sizeof(kv), "%.1f KB", static_cast<double>(per_token) / 1e3);
  f.verdict = (f.fits ? "fits: " : "does not fit a full context: ") + gb(n.weight_bytes) + " of weights, " +
              gb(left) + " left for KV = " + std::to_string(f.kv_tokens) + " tokens at " + kv + "/token (" +
              std::to_string(n.n_layers) + " x " + std::to_string(n.kv_values_per_layer) + " values, " +
              std::to_string(kv_bytes_per_value) + " B each)";
  if (!f.fits && per_token) f.verdict += "; one " + std::to_string(context) + "-token sequence needs more";
  if (!per_token) f.verdict = "unknown KV layout (no recipe for this architecture); " + gb(left) + " left beside the weights";
  return f;
}

int fewest_devices(const MemoryNeed& n, uint64_t memory_per_device, uint64_t reserve_per_device, int64_t context) {
  for (int k : n.tp_sizes) {
    if (fit_on(n, "", memory_per_device, k, 2, reserve_per_device, context).fits) return k;
  }
  return 0;
}

std::vector<DeviceFit> standard_fits(const MemoryNeed& n, uint64_t host_ram, int64_t context) {
  constexpr uint64_t kGB = 1000ull * 1000 * 1000;
  const uint64_t gpu_reserve = 4 * kGB;  // activations, CUDA context, cuBLAS workspace, graphs
  std::vector<DeviceFit> fits = {fit_on(n, "one 80 GB GPU", 80 * kGB, 1, 2, gpu_reserve, context),
                                 fit_on(n, "one 141 GB GPU", 141 * kGB, 1, 2, gpu_reserve, context),
                                 fit_on(n, "eight 80 GB GPUs (tensor parallel)", 80 * kGB, 8, 2, gpu_reserve, context),
                                 fit_on(n, "eight 141 GB GPUs (tensor parallel)", 141 * kGB, 8, 2, gpu_reserve, context),
                                 fit_on(n, "this host's RAM", host_ram, 1, 4, 2 * kGB, context)};
  for (uint64_t mem : {80 * kGB, 141 * kGB}) {
    const int k = fewest_devices(n, mem, gpu_reserve, context);
    if (k < 2) continue;  // one is enough, or no split of the model's heads is
    fits.push_back(fit_on(n, "the fewest " + std::to_string(mem / kGB) + " GB GPUs: " + std::to_string(k) +
                                 " (tensor parallel " + std::to_string(k) + ")",
                          mem, k, 2, gpu_reserve, context));
  }
  return fits;
}

uint64_t host_ram_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

}  // namespace citadel
