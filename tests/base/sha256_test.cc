#include "base/sha256.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "base/rng.h"
#include "tests/test_util.h"

namespace citadel {
namespace {

// NIST FIPS 180-4 example vectors (csrc.nist.gov SHA256.pdf, SHA2_Additional).
TEST(Sha256, NistVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  // One million 'a', fed in uneven pieces to exercise the buffering.
  Sha256 h;
  std::string chunk(997, 'a');
  size_t left = 1000000;
  while (left > 0) {
    const size_t n = std::min(left, chunk.size());
    h.update(chunk.data(), n);
    left -= n;
  }
  EXPECT_EQ(to_hex(h.finish()), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

std::vector<uint8_t> splitmix_bytes(uint64_t seed, size_t n) {
  std::vector<uint8_t> out(n);  // [n] little-endian splitmix64 words
  uint64_t s = seed;
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t w = splitmix64_next(s);
    for (size_t b = 0; b < 8 && i + b < n; ++b) out[i + b] = static_cast<uint8_t>(w >> (8 * b));
  }
  return out;
}

// Digests made by python hashlib (tools/reference/sha256_fixture.py).
TEST(Sha256, MatchesHashlibOnRandomBuffer) {
  std::ifstream f(testing::golden("base/sha256.json"));
  ASSERT_TRUE(f.good()) << "missing fixture tests/golden/base/sha256.json";
  const auto j = nlohmann::json::parse(f);
  const auto buf = splitmix_bytes(j["seed"].get<uint64_t>(), 1 << 20);
  EXPECT_EQ(sha256_hex(buf.data(), buf.size()), j["random_1mib"].get<std::string>());
  for (const auto& [len, hex] : j["prefixes"].items()) {
    EXPECT_EQ(sha256_hex(buf.data(), std::stoul(len)), hex.get<std::string>()) << "prefix " << len;
  }
  // Same buffer through the file path.
  const auto path = std::filesystem::temp_directory_path() / "citadel_sha256_test.bin";
  {
    std::ofstream o(path, std::ios::binary);
    o.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(buf.size()));
  }
  auto r = sha256_file(path.string());
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(*r, j["random_1mib"].get<std::string>());
  std::filesystem::remove(path);
}

TEST(Sha256, MissingFileIsAnError) {
  auto r = sha256_file("/nonexistent/citadel/file.bin");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("/nonexistent/citadel/file.bin"), std::string::npos);
}

}  // namespace
}  // namespace citadel
