// GPU metrics through NVML loaded with dlopen: against a fake libnvidia-ml (tests/nvml/fake_nvml.cc, canned values)
// everywhere, and against the real driver where libnvidia-ml.so.1 loads (skipped elsewhere).
#include "base/nvml_metrics.h"

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace citadel::metrics {
namespace {

// The fake's controls, reached through the same handle the loader gets (dlopen returns one object per path).
struct Fake {
  void* lib = nullptr;
  void (*reset)() = nullptr;
  void (*set_count)(unsigned) = nullptr;
  void (*set_init_result)(int) = nullptr;
  void (*set_utilization)(unsigned, unsigned) = nullptr;
  void (*fail)(unsigned, unsigned) = nullptr;
  unsigned (*utilization_calls)() = nullptr;
  unsigned (*shutdowns)() = nullptr;
};

Fake open_fake() {
  Fake f;
  f.lib = dlopen(CITADEL_FAKE_NVML, RTLD_NOW | RTLD_LOCAL);
  if (!f.lib) return f;
  auto sym = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(f.lib, name));
  };
  sym(f.reset, "fake_nvml_reset");
  sym(f.set_count, "fake_nvml_set_count");
  sym(f.set_init_result, "fake_nvml_set_init_result");
  sym(f.set_utilization, "fake_nvml_set_utilization");
  sym(f.fail, "fake_nvml_fail");
  sym(f.utilization_calls, "fake_nvml_utilization_calls");
  sym(f.shutdowns, "fake_nvml_shutdowns");
  return f;
}

class FakeNvml : public ::testing::Test {
 protected:
  void SetUp() override {
    fake_ = open_fake();
    ASSERT_NE(fake_.lib, nullptr) << dlerror();
    ASSERT_TRUE(fake_.reset && fake_.set_count && fake_.set_init_result && fake_.set_utilization && fake_.fail &&
                fake_.utilization_calls && fake_.shutdowns);
    fake_.reset();
  }
  static NvmlOptions options(std::chrono::milliseconds interval = std::chrono::milliseconds(0)) {
    NvmlOptions o;
    o.library = CITADEL_FAKE_NVML;
    o.min_interval = interval;
    return o;
  }
  static bool has(const std::string& text, const std::string& line) {
    return text.find(line + "\n") != std::string::npos;
  }
  Fake fake_;
};

TEST_F(FakeNvml, ExportsEveryDeviceWithValuesLabelsAndFractions) {
  Registry reg;
  ASSERT_EQ(register_gpu_metrics(reg, options()), 2);
  const std::string text = reg.render();
  // gpu 0: 37 %, 20 GiB of 80 GiB, 45 °C, 123456 mW.
  EXPECT_TRUE(has(text, "citadel:gpu_utilization_perc{gpu=\"0\"} 0.37")) << text;
  EXPECT_TRUE(has(text, "citadel:gpu_memory_used_bytes{gpu=\"0\"} 21474836480")) << text;
  EXPECT_TRUE(has(text, "citadel:gpu_memory_total_bytes{gpu=\"0\"} 85899345920")) << text;
  EXPECT_TRUE(has(text, "citadel:gpu_memory_usage_perc{gpu=\"0\"} 0.25")) << text;
  EXPECT_TRUE(has(text, "citadel:gpu_temperature_celsius{gpu=\"0\"} 45")) << text;
  EXPECT_TRUE(has(text, "citadel:gpu_power_watts{gpu=\"0\"} 123.456")) << text;
  // gpu 1: 100 %, 76 GiB of 80 GiB (0.95), 81 °C, 700 W; its name carries quotes (escaped in the label).
  EXPECT_TRUE(has(text, "citadel:gpu_utilization_perc{gpu=\"1\"} 1")) << text;
  EXPECT_TRUE(has(text, "citadel:gpu_memory_usage_perc{gpu=\"1\"} 0.95")) << text;
  EXPECT_TRUE(has(text, "citadel:gpu_temperature_celsius{gpu=\"1\"} 81")) << text;
  EXPECT_TRUE(has(text, "citadel:gpu_power_watts{gpu=\"1\"} 700")) << text;
  EXPECT_TRUE(has(text, "citadel:gpu_info{gpu=\"0\",name=\"Fake H100 80GB HBM3\","
                        "uuid=\"GPU-00000000-1111-2222-3333-444444444444\"} 1"))
      << text;
  EXPECT_TRUE(has(text, "citadel:gpu_info{gpu=\"1\",name=\"Fake \\\"quoted\\\" GPU\","
                        "uuid=\"GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee\"} 1"))
      << text;
  EXPECT_TRUE(has(text, "# TYPE citadel:gpu_utilization_perc gauge")) << text;
  EXPECT_EQ(reg.samples("citadel:gpu_info").size(), 2u);
  EXPECT_EQ(reg.sum("citadel:gpu_memory_total_bytes"), 2 * 85899345920.0);
  for (const char* name : {"citadel:gpu_utilization_perc", "citadel:gpu_memory_usage_perc"})
    for (const auto& s : reg.samples(name)) EXPECT_TRUE(s.value >= 0 && s.value <= 1) << name;
}

TEST_F(FakeNvml, AFailingCallLeavesOutThatSeriesOnlyForThatScrape) {
  Registry reg;
  ASSERT_EQ(register_gpu_metrics(reg, options()), 2);
  std::string text = reg.render();  // every series read once: a failure must take them out, not leave them stale
  ASSERT_TRUE(has(text, "citadel:gpu_utilization_perc{gpu=\"1\"} 1")) << text;
  ASSERT_TRUE(has(text, "citadel:gpu_memory_usage_perc{gpu=\"1\"} 0.95")) << text;
  fake_.fail(1, 1 | 2);  // gpu 1: utilisation (Unknown Error) and memory (Not Supported) fail
  text = reg.render();
  EXPECT_EQ(text.find("citadel:gpu_utilization_perc{gpu=\"1\"}"), std::string::npos) << text;
  EXPECT_EQ(text.find("citadel:gpu_memory_used_bytes{gpu=\"1\"}"), std::string::npos) << text;
  EXPECT_EQ(text.find("citadel:gpu_memory_usage_perc{gpu=\"1\"}"), std::string::npos) << text;
  EXPECT_TRUE(has(text, "citadel:gpu_temperature_celsius{gpu=\"1\"} 81")) << text;  // the others stay
  EXPECT_TRUE(has(text, "citadel:gpu_power_watts{gpu=\"1\"} 700")) << text;
  EXPECT_TRUE(has(text, "citadel:gpu_utilization_perc{gpu=\"0\"} 0.37")) << text;  // the other device stays
  EXPECT_EQ(reg.samples("citadel:gpu_utilization_perc").size(), 1u);
  // Every call failing for gpu 0 as well: still no crash, still the info series.
  fake_.fail(0, 1 | 2 | 4 | 8);
  text = reg.render();
  EXPECT_EQ(text.find("citadel:gpu_power_watts{gpu=\"0\"}"), std::string::npos) << text;
  EXPECT_EQ(reg.samples("citadel:gpu_info").size(), 2u);
  // Recovered: back at the next scrape.
  fake_.fail(0, 0), fake_.fail(1, 0);
  text = reg.render();
  EXPECT_TRUE(has(text, "citadel:gpu_utilization_perc{gpu=\"1\"} 1")) << text;
  EXPECT_TRUE(has(text, "citadel:gpu_memory_usage_perc{gpu=\"1\"} 0.95")) << text;
  EXPECT_TRUE(has(text, "citadel:gpu_power_watts{gpu=\"0\"} 123.456")) << text;
}

TEST_F(FakeNvml, ReadsAtMostOncePerInterval) {
  Registry reg;
  ASSERT_EQ(register_gpu_metrics(reg, options(std::chrono::hours(1))), 2);
  EXPECT_TRUE(has(reg.render(), "citadel:gpu_utilization_perc{gpu=\"0\"} 0.37"));
  const unsigned calls = fake_.utilization_calls();
  EXPECT_EQ(calls, 2u);  // one per device
  fake_.set_utilization(0, 90);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(has(reg.render(), "citadel:gpu_utilization_perc{gpu=\"0\"} 0.37"));
  EXPECT_EQ(fake_.utilization_calls(), calls);  // served from the previous read
}

TEST_F(FakeNvml, ZeroIntervalReadsEveryScrape) {
  Registry reg;
  ASSERT_EQ(register_gpu_metrics(reg, options()), 2);
  EXPECT_TRUE(has(reg.render(), "citadel:gpu_utilization_perc{gpu=\"0\"} 0.37"));
  fake_.set_utilization(0, 90);
  EXPECT_TRUE(has(reg.render(), "citadel:gpu_utilization_perc{gpu=\"0\"} 0.9"));
}

TEST_F(FakeNvml, ShutsDownWithTheRegistry) {
  const unsigned before = fake_.shutdowns();
  {
    Registry reg;
    ASSERT_EQ(register_gpu_metrics(reg, options()), 2);
    reg.render();
    EXPECT_EQ(fake_.shutdowns(), before);
  }
  EXPECT_EQ(fake_.shutdowns(), before + 1);
}

TEST_F(FakeNvml, NoDeviceOrFailedInitRegistersNothing) {
  {
    fake_.set_count(0);
    Registry reg;
    EXPECT_EQ(register_gpu_metrics(reg, options()), 0);
    EXPECT_TRUE(reg.names().empty());
    EXPECT_EQ(reg.render(), "");
  }
  {
    fake_.reset();
    fake_.set_init_result(9);  // NVML_ERROR_DRIVER_NOT_LOADED
    Registry reg;
    EXPECT_EQ(register_gpu_metrics(reg, options()), 0);
    EXPECT_TRUE(reg.names().empty());
  }
}

TEST_F(FakeNvml, EnvironmentVariableNamesTheLibrary) {
  setenv("CITADEL_NVML_LIBRARY", CITADEL_FAKE_NVML, 1);
  Registry reg;
  const int n = register_gpu_metrics(reg);  // no library in the options: the variable's
  unsetenv("CITADEL_NVML_LIBRARY");
  EXPECT_EQ(n, 2);
  EXPECT_TRUE(has(reg.render(), "citadel:gpu_temperature_celsius{gpu=\"0\"} 45"));
}

TEST(NvmlAbsent, MissingLibraryOrSymbolRegistersNothing) {
  for (const char* lib : {"/nonexistent/libnvidia-ml.so.1", "libm.so.6" /* loads, has no NVML symbol */}) {
    Registry reg;
    NvmlOptions o;
    o.library = lib;
    EXPECT_EQ(register_gpu_metrics(reg, o), 0) << lib;
    EXPECT_TRUE(reg.names().empty()) << lib;
    EXPECT_EQ(reg.render(), "") << lib;
  }
}

// The real driver: only where libnvidia-ml.so.1 loads (scripts/gpu/nvml_check.sh runs it on a GPU host).
TEST(NvmlReal, ReportsTheDevicesOfThisHost) {
  void* probe = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!probe) GTEST_SKIP() << "libnvidia-ml.so.1 does not load here (no NVIDIA driver): " << dlerror();
  dlclose(probe);
  Registry reg;
  NvmlOptions o;
  o.library = "libnvidia-ml.so.1";
  const int n = register_gpu_metrics(reg, o);
  ASSERT_GE(n, 1) << "the driver loads but NVML reports no device";
  const std::string text = reg.render();
  std::printf("%s", text.c_str());  // the exposition, for the record of the GPU run
  EXPECT_EQ(reg.samples("citadel:gpu_info").size(), static_cast<size_t>(n));
  const auto total = reg.samples("citadel:gpu_memory_total_bytes");
  ASSERT_EQ(total.size(), static_cast<size_t>(n)) << text;
  for (const auto& s : total) EXPECT_GT(s.value, 0) << "gpu " << s.labels[0];
  for (const auto& s : reg.samples("citadel:gpu_memory_usage_perc")) EXPECT_TRUE(s.value >= 0 && s.value <= 1);
  const auto util = reg.samples("citadel:gpu_utilization_perc");
  EXPECT_GE(util.size(), 1u) << "no device reported its utilisation (MIG mode reports none)\n" << text;
  for (const auto& s : util) EXPECT_TRUE(s.value >= 0 && s.value <= 1) << "gpu " << s.labels[0] << ": " << s.value;
  for (const auto& s : reg.samples("citadel:gpu_temperature_celsius")) EXPECT_TRUE(s.value > 0 && s.value < 130);
  for (const auto& s : reg.samples("citadel:gpu_power_watts")) EXPECT_TRUE(s.value > 0 && s.value < 2000);
}

}  // namespace
}  // namespace citadel::metrics
