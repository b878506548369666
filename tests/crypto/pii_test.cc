#include "crypto/pii.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/test_util.h"

namespace citadel::crypto {
namespace {

PiiMasker make_masker(PiiOptions options = {}) {
  auto m = PiiMasker::create(std::move(options));
  EXPECT_TRUE(m.ok()) << m.status().to_string();
  return std::move(m).value();
}

using Found = std::vector<std::pair<std::string, std::string>>;  // (kind name, matched text)

Found found(const PiiMasker& m, std::string_view text) {
  Found out;
  for (const PiiFinding& f : m.find(text)) out.emplace_back(pii_kind_name(f.kind), std::string(text.substr(f.begin, f.end - f.begin)));
  return out;
}

// Valid UTF-8 (no overlongs/surrogates checks needed here: the inputs are built from whole characters).
bool is_char_boundary(std::string_view s, size_t i) {
  return i == 0 || i == s.size() || (static_cast<unsigned char>(s[i]) & 0xC0) != 0x80;
}

TEST(Pii, Corpus) {
  const std::string path = testing::golden("crypto/pii_corpus.jsonl");
  std::ifstream in(path);
  ASSERT_TRUE(in) << path << ": missing (python3 tools/reference/make_pii_corpus.py)";
  const PiiMasker m = make_masker();
  int cases = 0, tp = 0, fp = 0, fn = 0, negatives = 0, clean_negatives = 0;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    const std::string text = j.at("text").get<std::string>();
    Found expect;
    for (const auto& e : j.at("expect")) expect.emplace_back(e.at("kind").get<std::string>(), e.at("match").get<std::string>());
    const Found got = found(m, text);
    ++cases;
    EXPECT_EQ(got, expect) << "text: " << text;
    for (const auto& g : got) (std::find(expect.begin(), expect.end(), g) != expect.end() ? tp : fp)++;
    for (const auto& e : expect) fn += std::find(got.begin(), got.end(), e) == got.end();
    if (expect.empty()) {
      ++negatives;
      clean_negatives += got.empty();
    }
    const std::string masked = m.mask(text);
    for (const auto& e : expect) EXPECT_EQ(masked.find(e.second), std::string::npos) << masked;
    EXPECT_EQ(m.contains_pii(text), !got.empty());
  }
  EXPECT_GE(cases, 60);
  const double precision = tp + fp == 0 ? 1.0 : static_cast<double>(tp) / (tp + fp);
  const double recall = tp + fn == 0 ? 1.0 : static_cast<double>(tp) / (tp + fn);
  std::printf("pii corpus: %d cases (%d without PII, %d of them clean), %d expected findings: tp=%d fp=%d fn=%d "
              "precision=%.3f recall=%.3f\n",
              cases, negatives, clean_negatives, tp + fn, tp, fp, fn, precision, recall);
}

TEST(Pii, PlaceholdersAndUtf8) {
  const PiiMasker m = make_masker();
  EXPECT_EQ(m.mask("身份证11010519491231002X，手机+86 138 0013 8000，座机010-62345678。"),
            "身份证[ID]，手机[PHONE]，座机[PHONE]。");
  EXPECT_EQ(m.mask("卡4111111111111111给a.b@example.com从10.1.2.3和fe80::1"), "卡[CARD]给[EMAIL]从[IP]和[IP]");
  EXPECT_EQ(m.mask("没有个人信息"), "没有个人信息");
}

TEST(Pii, ResidentIdWinsOverCard) {
  // 18 digits that are both a valid resident id and Luhn-valid with an issuer-range lead digit (computed by
  // tools/reference/make_pii_corpus.py's make_id + luhn_ok).
  const PiiMasker m = make_masker();
  for (const char* id : {"330106198506120357", "440305198506120007", "610113198506120155"}) {
    EXPECT_EQ(found(m, id), (Found{{"resident_id", id}}));
  }
  PiiOptions no_ids;
  no_ids.mask_resident_id = false;
  EXPECT_EQ(found(make_masker(no_ids), "330106198506120357"), (Found{{"bank_card", "330106198506120357"}}));
}

TEST(Pii, OptionsTurnDetectorsOff) {
  PiiOptions o;
  o.mask_ipv4 = false;
  o.mask_email = false;
  o.accept_legacy_resident_id = false;
  const PiiMasker m = make_masker(o);
  EXPECT_TRUE(m.find("host 10.0.0.1 mail a@example.com old 110105491231002").empty());
  EXPECT_EQ(found(m, "::ffff:10.0.0.1"), (Found{{"ipv6", "::ffff:10.0.0.1"}}));
}

TEST(Pii, CustomPatterns) {
  PiiOptions o;
  o.extra_patterns = {{"employee_id", "EMP-[0-9]{6}"}, {"patient", "病历号[0-9]+"}, {"mrn", "MRN\\d{4}"}};
  const PiiMasker m = make_masker(o);
  const std::string text = "员工EMP-123456的病历号778899，MRN1234；手机13800138000";
  const auto f = m.find(text);
  ASSERT_EQ(f.size(), 4u);
  EXPECT_EQ(f[0].name, "employee_id");
  EXPECT_EQ(f[1].name, "patient");
  EXPECT_EQ(f[2].kind, PiiKind::kCustom);
  EXPECT_EQ(f[3].kind, PiiKind::kMobilePhone);
  EXPECT_EQ(m.mask(text), "员工[EMPLOYEE_ID]的[PATIENT]，[MRN]；手机[PHONE]");

  // A byte-level pattern that would cut a character in half is widened to the whole character.
  PiiOptions cut;
  cut.extra_patterns = {{"half", "\\xE4"}};
  const PiiMasker h = make_masker(cut);
  const std::string zh = "中文";  // E4 B8 AD E6 96 87
  const auto hf = h.find(zh);
  ASSERT_EQ(hf.size(), 1u);
  EXPECT_EQ(hf[0].begin, 0u);
  EXPECT_EQ(hf[0].end, 3u);
  EXPECT_EQ(h.mask(zh), "[HALF]文");
}

TEST(Pii, CreateRejectsBadPatterns) {
  auto expect_bad = [](std::vector<std::pair<std::string, std::string>> pats, const std::string& needle) {
    PiiOptions o;
    o.extra_patterns = std::move(pats);
    auto m = PiiMasker::create(o);
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(m.status().message().find(needle), std::string::npos) << m.status().message();
  };
  expect_bad({{"broken", "([a-z"}}, "broken");
  expect_bad({{"empty", "\\d*"}}, "empty string");
  expect_bad({{"bad name", "x"}}, "bad name");
  expect_bad({{"", "x"}}, "name");
  expect_bad({{"dup", "x"}, {"dup", "y"}}, "twice");
}

// Random mixes of digits, separators, CJK text, '@', ':' and '.', plus raw bytes: no crash, findings sorted,
// non-overlapping, in range, on character boundaries for valid UTF-8, and mask() keeps every unmatched byte.
TEST(Pii, FuzzInvariants) {
  PiiOptions o;
  o.extra_patterns = {{"tok", "T[0-9]{2}"}};
  const PiiMasker m = make_masker(o);
  std::mt19937_64 rng(20261205);
  const std::vector<std::string> pieces = {"0", "1", "3", "8", "9", "13800138000", "+86", " ", "-", ".", ":", "::",
                                           "@", "a", "X", "中", "文", "（", "）", "(", ")", "ff", "example.com", "T12",
                                           "11010519491231002X", "4111111111111111", "010", "转", "\n", "é"};
  for (int iter = 0; iter < 20000; ++iter) {
    std::string s;
    const bool raw = iter % 4 == 3;
    const int n = static_cast<int>(rng() % 40);
    for (int k = 0; k < n; ++k) {
      if (raw) {
        s += static_cast<char>(rng() % 256);
      } else {
        s += pieces[rng() % pieces.size()];
      }
    }
    const auto f = m.find(s);
    size_t last = 0;
    for (const PiiFinding& x : f) {
      ASSERT_LE(last, x.begin) << s;
      ASSERT_LT(x.begin, x.end) << s;
      ASSERT_LE(x.end, s.size()) << s;
      if (!raw) {
        ASSERT_TRUE(is_char_boundary(s, x.begin) && is_char_boundary(s, x.end)) << s;
      }
      last = x.end;
    }
    std::string rebuilt;  // mask() output must be the gaps plus placeholders, in order
    size_t pos = 0;
    for (const PiiFinding& x : f) {
      rebuilt += s.substr(pos, x.begin - pos) + m.placeholder(x);
      pos = x.end;
    }
    rebuilt += s.substr(pos);
    ASSERT_EQ(m.mask(s), rebuilt) << s;
  }
}

TEST(Pii, ConcurrentUse) {
  const PiiMasker m = make_masker();
  const std::string text = "手机13800138000，邮箱a@example.com，IP 192.168.0.1，卡4111111111111111";
  const std::string want = m.mask(text);
  std::vector<std::string> got(2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) got[t] = m.mask(text);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(got[0], want);
  EXPECT_EQ(got[1], want);
}

// Inputs built to make a careless scanner rescan (long runs behind many '@', ':' or digit starts) stay linear.
TEST(Pii, PathologicalInputsStayFast) {
  const PiiMasker m = make_masker();
  const size_t n = 1u << 20;
  const std::vector<std::string> inputs = {
      std::string(n / 2, '@') + std::string(n / 2, 'a'), std::string(n, '1'), std::string(n, ':'),
      [&] { std::string s; while (s.size() < n) s += "1 "; return s; }(),
      [&] { std::string s; while (s.size() < n) s += "a.b@"; return s; }(),
      [&] { std::string s; while (s.size() < n) s += "1.1."; return s; }(),
      [&] { std::string s; while (s.size() < n) s += "ab:"; return s; }()};
  for (const std::string& text : inputs) {
    const auto t0 = std::chrono::steady_clock::now();
    const size_t found_n = m.find(text).size();
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("pii pathological '%s...': %zu findings, %.2f ms\n", text.substr(0, 8).c_str(), found_n, ms);
    EXPECT_LT(ms, 2000.0);
  }
}

// Not a benchmark (those live in bench/): prints the time for 1 MB of mixed log/prompt text; the bound only catches
// something pathological.
TEST(Pii, MegabyteMixedText) {
  const PiiMasker m = make_masker();
  const std::vector<std::string> lines = {
      "2026-12-05T12:30:45Z INFO request_id=9f2c1a7e route=/v1/chat/completions status=200 tokens=1234 ms=56\n",
      "用户咨询：我的身份证号是11010519491231002X，手机13800138000，请帮我查询账户余额。\n",
      "client 192.168.10.20:51234 -> upstream [2001:db8::42]:443 bytes=65536\n",
      "Please summarise the following contract between the parties dated 2026-12-05, amount 1,234,567.89 CNY.\n",
      "联系 zhang.san@example.com.cn 或拨打 010-62345678 转 8001，卡号 4111 1111 1111 1111。\n",
      "订单号 202612051230451234 已发货，预计 3 天送达，运单 SF1234567890123。\n"};
  std::string text;
  for (size_t k = 0; text.size() < (1u << 20); ++k) text += lines[k % lines.size()];
  const auto t0 = std::chrono::steady_clock::now();
  const std::string masked = m.mask(text);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const size_t n = m.find(text).size();
  std::printf("pii mask: %zu bytes, %zu findings, %.2f ms (%.0f MB/s)\n", text.size(), n, ms,
              static_cast<double>(text.size()) / 1e3 / ms);
  EXPECT_EQ(masked.find("13800138000"), std::string::npos);
  EXPECT_LT(ms, 2000.0);
}

}  // namespace
}  // namespace citadel::crypto
