// libFuzzer target: any bytes into the GGUF parser must give a store or an error, never a crash, a sanitizer
// report, or a read outside the input. Built with -DCITADEL_FUZZ=ON (clang); run by scripts/test.d/fuzz.sh.
#include <cstddef>
#include <cstdint>

#include "format/tensor_store.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto r = citadel::parse_gguf(data, size, "fuzz.gguf");
  if (r.ok()) {
    // Touch what a loader would: every tensor's first and last byte (ASan flags anything outside the input).
    volatile uint8_t sink = 0;
    for (const auto& t : (*r)->tensors()) {
      if (t.nbytes) sink = sink + t.data[0] + t.data[t.nbytes - 1];
    }
    for (const auto& [k, v] : (*r)->metadata()) {
      (void)v.as_int();
      (void)v.as_float();
    }
  }
  return 0;
}
