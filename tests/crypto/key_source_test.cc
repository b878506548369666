// Key sources: key files (text, hex, raw), environment variables, external commands (success, failure, timeout).
#include "crypto/key_source.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace citadel::crypto {
namespace {

namespace fs = std::filesystem;

const char* kHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

class KeySourceTest : public ::testing::Test {
 protected:
  KeySourceTest() {
    char tmpl[] = "/tmp/citadel_keys_XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  ~KeySourceTest() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text, mode_t mode = 0600) {
    std::string p = dir_ + "/" + name;
    std::ofstream(p, std::ios::binary) << text;
    chmod(p.c_str(), mode);
    return p;
  }
  static void expect_key_bytes(const Key& k) {
    ASSERT_EQ(k.bytes.size(), kKeyBytes);
    for (size_t i = 0; i < kKeyBytes; ++i) EXPECT_EQ(k.bytes[i], i);
  }
  std::string dir_;
};

TEST_F(KeySourceTest, TextFormatFile) {
  auto k = load_key(write("k", "# model key\nid=model-key@3\ncreated=2026-12-05T00:00:00Z\nkey=" + std::string(kHex) + "\n"));
  ASSERT_TRUE(k.ok()) << k.status().to_string();
  EXPECT_EQ(k->id, "model-key@3");
  EXPECT_EQ(k->created_unix, 1796428800);
  expect_key_bytes(*k);
}

TEST_F(KeySourceTest, HexAndRawFiles) {
  auto h = load_key("file:" + write("h", std::string(kHex) + "\n"));
  ASSERT_TRUE(h.ok()) << h.status().to_string();
  expect_key_bytes(*h);
  EXPECT_EQ(h->id, "");
  EXPECT_GT(h->created_unix, 0);  // the file's mtime
  std::string raw;
  for (int i = 0; i < 32; ++i) raw.push_back(static_cast<char>(i));
  auto r = load_key(write("r", raw));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  expect_key_bytes(*r);
}

TEST_F(KeySourceTest, BadFilesNameTheSpecNotTheBytes) {
  for (const std::string& text : {std::string("key=abcd\n"), std::string("id=x\n"), std::string("nonsense"),
                                 std::string("id=x\nkey=") + kHex + "\ncolour=blue\n"}) {
    const std::string p = write("bad", text);
    auto k = load_key(p);
    ASSERT_FALSE(k.ok()) << text;
    EXPECT_NE(k.status().message().find(p), std::string::npos) << k.status().message();
    EXPECT_EQ(k.status().message().find(kHex), std::string::npos);
  }
  EXPECT_EQ(load_key(dir_ + "/missing").status().code(), StatusCode::kNotFound);
}

TEST_F(KeySourceTest, EnvironmentVariable) {
  setenv("CITADEL_TEST_KEY", (std::string("id=env-key@1\nkey=") + kHex).c_str(), 1);
  auto k = load_key("env:CITADEL_TEST_KEY");
  ASSERT_TRUE(k.ok()) << k.status().to_string();
  EXPECT_EQ(k->id, "env-key@1");
  expect_key_bytes(*k);
  setenv("CITADEL_TEST_KEY", kHex, 1);
  ASSERT_TRUE(load_key("env:CITADEL_TEST_KEY").ok());
  unsetenv("CITADEL_TEST_KEY");
  auto missing = load_key("env:CITADEL_TEST_KEY");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("CITADEL_TEST_KEY"), std::string::npos);
}

TEST_F(KeySourceTest, CommandPrintsTheKey) {
  // Arguments reach the helper unchanged and without a shell (the `;` is an argument, not a command separator).
  const std::string helper = write("vault-helper", std::string("#!/bin/sh\n[ \"$1\" = model ] && [ \"$2\" = \";\" ] || exit 3\n"
                                                               "echo id=vault-key@7\necho key=") + kHex + "\n", 0700);
  auto k = load_key("cmd:" + helper + " model ;");
  ASSERT_TRUE(k.ok()) << k.status().to_string();
  EXPECT_EQ(k->id, "vault-key@7");
  expect_key_bytes(*k);
}

TEST_F(KeySourceTest, FailingCommands) {
  const std::string fails = write("fails", "#!/bin/sh\necho " + std::string(kHex) + "\nexit 2\n", 0700);
  auto k = load_key("cmd:" + fails);
  ASSERT_FALSE(k.ok());
  EXPECT_NE(k.status().message().find("exit status 2"), std::string::npos) << k.status().message();
  EXPECT_EQ(k.status().message().find(kHex), std::string::npos);  // output never echoed
  EXPECT_EQ(load_key("cmd:" + dir_ + "/no-such-helper").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(load_key("cmd:").ok());
  const std::string garbage = write("garbage", "#!/bin/sh\necho hello\n", 0700);
  EXPECT_FALSE(load_key("cmd:" + garbage).ok());
}

TEST_F(KeySourceTest, CommandTimeoutKillsIt) {
  const std::string slow = write("slow", "#!/bin/sh\nexec sleep 30\n", 0700);
  const auto t0 = std::chrono::steady_clock::now();
  auto out = run_key_command({slow}, 300);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_LT(ms.count(), 5000);
}

TEST_F(KeySourceTest, GenerateWriteAndReload) {
  auto k = generate_key("model-key@9");
  ASSERT_TRUE(k.ok());
  const std::string p = dir_ + "/new.key";
  ASSERT_TRUE(write_key_file(p, *k).ok());
  struct stat st {};
  ASSERT_EQ(stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_FALSE(write_key_file(p, *k).ok());  // never overwrites a key
  auto back = load_key(p);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->id, "model-key@9");
  EXPECT_EQ(back->bytes, k->bytes);
  EXPECT_EQ(back->created_unix, k->created_unix);
}

TEST_F(KeySourceTest, RotationAge) {
  Key k;
  k.created_unix = 1000000;
  EXPECT_FALSE(key_older_than(k, 90, 1000000 + 89 * 86400));
  EXPECT_TRUE(key_older_than(k, 90, 1000000 + 91 * 86400));
  k.created_unix = 0;  // unknown: never warns
  EXPECT_FALSE(key_older_than(k, 90, 2000000000));
}

}  // namespace
}  // namespace citadel::crypto
