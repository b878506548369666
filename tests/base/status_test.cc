#include "base/status.h"

#include <gtest/gtest.h>

#include "base/half.h"
#include "kernels/quant/types.h"

namespace citadel {
namespace {

Result<int> parse_positive(int x) {
  if (x <= 0) return InvalidArgument("not positive: " + std::to_string(x));
  return x;
}

Status twice(int x, int* out) {
  ASSIGN_OR_RETURN(int v, parse_positive(x));
  *out = 2 * v;
  return OkStatus();
}

TEST(Status, ResultCarriesValueOrError) {
  int out = 0;
  EXPECT_TRUE(twice(3, &out).ok());
  EXPECT_EQ(out, 6);
  Status st = twice(-1, &out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.with_context("f.gguf").message(), "f.gguf: not positive: -1");
}

TEST(Half, RoundTripsEveryF16) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;  // NaN payloads are not preserved bit-exactly
    EXPECT_EQ(f32_to_f16(f16_to_f32(static_cast<uint16_t>(h))), h) << std::hex << h;
  }
}

TEST(Half, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);
}

TEST(DType, BlockSizesMatchGgml) {
  EXPECT_EQ(dtype_row_bytes(DType::kQ4_K, 512), 288u);
  EXPECT_EQ(dtype_row_bytes(DType::kQ8_0, 64), 68u);
  EXPECT_EQ(dtype_row_bytes(DType::kQ8_0, 33), 0u);
  EXPECT_EQ(dtype_info(99), nullptr);
}

}  // namespace
}  // namespace citadel
