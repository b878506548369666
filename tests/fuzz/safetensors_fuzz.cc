// libFuzzer target for the safetensors header parser (single file in memory, no config.json).
#include <cstddef>
#include <cstdint>

#include "format/tensor_store.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto r = citadel::parse_safetensors(data, size, "fuzz.safetensors");
  if (r.ok()) {
    volatile uint8_t sink = 0;
    for (const auto& t : (*r)->tensors()) {
      if (t.nbytes) sink = sink + t.data[0] + t.data[t.nbytes - 1];
    }
  }
  return 0;
}
