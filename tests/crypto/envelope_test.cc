// Envelope encryption: known-answer tests for the primitives (NIST GCM, GM/T SM3 and SM4, fixtures from Python's
// `cryptography`), round trips at chunk edges for every cipher, and every tamper case we can think of.
#include "crypto/envelope.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "tests/test_util.h"

namespace citadel::crypto {
namespace {

namespace fs = std::filesystem;
using primitives::Bytes;

Bytes hex(const std::string& s) {
  Bytes b;
  for (size_t i = 0; i + 1 < s.size(); i += 2) b.push_back(static_cast<uint8_t>(std::stoi(s.substr(i, 2), nullptr, 16)));
  return b;
}
std::string to_hex(const Bytes& b) {
  static const char* k = "0123456789abcdef";
  std::string s;
  for (uint8_t x : b) s += {k[x >> 4], k[x & 15]};
  return s;
}
Bytes concat(const Bytes& a, const Bytes& b) {
  Bytes r = a;
  r.insert(r.end(), b.begin(), b.end());
  return r;
}
Bytes str_bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

nlohmann::json load_json(const std::string& name) {
  std::ifstream f(testing::golden("crypto/" + name));
  EXPECT_TRUE(f) << name;
  return nlohmann::json::parse(f);
}

Key test_key(const std::string& id, uint8_t seed) {
  Key k;
  k.id = id;
  for (size_t i = 0; i < kKeyBytes; ++i) k.bytes.push_back(static_cast<uint8_t>(seed * 31 + i));
  return k;
}

Bytes read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
void write_file(const std::string& p, const Bytes& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/citadel_envelope_XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& n) const { return path_ + "/" + n; }

 private:
  std::string path_;
};

// --- primitives -------------------------------------------------------------------------------------------------

struct GcmCase {
  const char *key, *iv, *pt, *aad, *ct, *tag;
};
// AES-256 test cases 13-16 of McGrew & Viega, "The Galois/Counter Mode of Operation" (NIST GCM spec).
const char* kK15 = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
const GcmCase kNistGcm[] = {
    {"0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000", "", "", "",
     "530f8afbc74536b9a963b4f1c4cb738b"},
    {"0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000",
     "00000000000000000000000000000000", "", "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"},
    {kK15, "cafebabefacedbaddecaf888",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657"
     "ba637b391aafd255",
     "",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0a"
     "bcc9f662898015ad",
     "b094dac5d93471bdec1a502270e3cc6c"},
    {kK15, "cafebabefacedbaddecaf888",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657"
     "ba637b39",
     "feedfacedeadbeeffeedfacedeadbeefabaddad2",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0a"
     "bcc9f662",
     "76fc6ece0f4e1768cddf8853bb2d551b"},
};

TEST(GcmPrimitive, NistTestCases13To16) {
  for (const GcmCase& c : kNistGcm) {
    auto sealed = primitives::gcm_seal("AES-256-GCM", hex(c.key), hex(c.iv), hex(c.aad), hex(c.pt));
    ASSERT_TRUE(sealed.ok()) << sealed.status().to_string();
    EXPECT_EQ(to_hex(*sealed), std::string(c.ct) + c.tag);
    auto opened = primitives::gcm_open("AES-256-GCM", hex(c.key), hex(c.iv), hex(c.aad), *sealed);
    ASSERT_TRUE(opened.ok());
    EXPECT_EQ(to_hex(*opened), c.pt);
    Bytes bad = *sealed;
    bad.back() ^= 1;
    EXPECT_EQ(primitives::gcm_open("AES-256-GCM", hex(c.key), hex(c.iv), hex(c.aad), bad).status().code(),
              StatusCode::kDataLoss);
  }
}

TEST(GcmPrimitive, MatchesPythonCryptography) {
  for (const auto& v : load_json("aes_gcm.json")) {
    auto sealed = primitives::gcm_seal("AES-256-GCM", hex(v["key"]), hex(v["iv"]), hex(v["aad"]), hex(v["pt"]));
    ASSERT_TRUE(sealed.ok());
    EXPECT_EQ(to_hex(*sealed), v["ct"].get<std::string>() + v["tag"].get<std::string>());
  }
}

TEST(Sm4Primitive, GmT0002Example) {
  const Bytes k = hex("0123456789abcdeffedcba9876543210");
  auto c = primitives::sm4_ecb_encrypt(k, k);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(to_hex(*c), "681edf34d206965e86b3e94f536e4246");
}

TEST(Sm4Primitive, GmT0002MillionIterations) {
  // The standard's second example: encrypt the block 1,000,000 times under the same key (one EVP context: ~0.3 s).
  const Bytes k = hex("0123456789abcdeffedcba9876543210");
  EVP_CIPHER* c = EVP_CIPHER_fetch(nullptr, "SM4-ECB", nullptr);
  ASSERT_NE(c, nullptr);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  ASSERT_EQ(EVP_EncryptInit_ex2(ctx, c, k.data(), nullptr, nullptr), 1);
  EVP_CIPHER_CTX_set_padding(ctx, 0);
  Bytes block = k, out(16);
  for (int i = 0; i < 1000000; ++i) {
    int n = 0;
    ASSERT_EQ(EVP_EncryptUpdate(ctx, out.data(), &n, block.data(), 16), 1);
    block = out;
  }
  EVP_CIPHER_CTX_free(ctx);
  EVP_CIPHER_free(c);
  EXPECT_EQ(to_hex(block), "595298c7c6fd271f0402f804c33d3f66");
}

TEST(Sm3Primitive, GmT0004Examples) {
  EXPECT_EQ(to_hex(*primitives::digest("SM3", str_bytes("abc"))),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0");
  std::string abcd;
  for (int i = 0; i < 16; ++i) abcd += "abcd";
  EXPECT_EQ(to_hex(*primitives::digest("SM3", str_bytes(abcd))),
            "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732");
}

TEST(Primitives, MatchPythonCryptography) {
  auto j = load_json("primitives.json");
  for (const auto& v : j["sm3"]) EXPECT_EQ(to_hex(*primitives::digest("SM3", hex(v["msg"]))), v["digest"]);
  for (const auto& v : j["hmac_sm3"])
    EXPECT_EQ(to_hex(*primitives::hmac("SM3", hex(v["key"]), hex(v["msg"]))), v["mac"]);
  for (const auto& v : j["hkdf"]) {
    const std::string md = v["digest"], okm = v["okm"];
    auto r = primitives::hkdf(md.c_str(), hex(v["ikm"]), hex(v["salt"]), hex(v["info"]), okm.size() / 2);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(to_hex(*r), okm) << md;
  }
  for (const auto& v : j["sm4_ctr"]) EXPECT_EQ(to_hex(*primitives::sm4_ctr(hex(v["key"]), hex(v["iv"]), hex(v["pt"]))), v["ct"]);
}

// --- envelopes ----------------------------------------------------------------------------------------------------

TEST(Envelope, DecryptsFilesMadeByPythonCryptography) {
  TempDir dir;
  int checked = 0;
  for (const auto& v : load_json("envelopes.json")) {
    const std::string cipher = v["cipher"];
    if (cipher == "sm4-gcm" && !sm4_gcm_available()) continue;  // OpenSSL 3.0 has no SM4-GCM
    Key key;
    key.id = v["key_id"];
    Bytes kb = hex(v["key"]);
    key.bytes.assign(kb.begin(), kb.end());
    const std::string path = dir.file("fx.enc");
    write_file(path, hex(v["file"]));
    auto info = read_envelope_info(path);
    ASSERT_TRUE(info.ok()) << info.status().to_string();
    EXPECT_STREQ(cipher_name(info->cipher), cipher.c_str());
    EXPECT_EQ(info->key_id, key.id);
    auto pt = decrypt_to_memory(path, key);
    ASSERT_TRUE(pt.ok()) << cipher << ": " << pt.status().to_string();
    EXPECT_EQ(to_hex(Bytes(pt->data(), pt->data() + pt->size())), v["plaintext"]) << cipher;
    ++checked;
  }
  EXPECT_GE(checked, 8);
}

std::vector<Cipher> ciphers() {
  std::vector<Cipher> c = {Cipher::kAes256Gcm, Cipher::kSm4CtrHmacSm3};
  if (sm4_gcm_available()) c.push_back(Cipher::kSm4Gcm);
  return c;
}

TEST(Envelope, RoundTripsAtChunkEdges) {
  TempDir dir;
  const size_t chunk = 64;
  std::mt19937 rng(7);
  const Key key = test_key("model-key@1", 1);
  for (Cipher c : ciphers()) {
    for (size_t size : {size_t{0}, size_t{1}, chunk - 1, chunk, chunk + 1, 3 * chunk}) {
      Bytes pt(size);
      for (auto& b : pt) b = static_cast<uint8_t>(rng());
      write_file(dir.file("in"), pt);
      ASSERT_TRUE(encrypt_file(dir.file("in"), dir.file("x.enc"), key, c, chunk).ok());
      EXPECT_FALSE(fs::exists(dir.file("x.enc.tmp")));
      auto info = read_envelope_info(dir.file("x.enc"));
      ASSERT_TRUE(info.ok());
      EXPECT_EQ(info->plaintext_size, size);
      EXPECT_EQ(info->n_chunks, size == 0 ? 1 : (size + chunk - 1) / chunk);
      auto mem = decrypt_to_memory(dir.file("x.enc"), key);
      ASSERT_TRUE(mem.ok()) << cipher_name(c) << " " << size << ": " << mem.status().to_string();
      EXPECT_EQ(Bytes(mem->data(), mem->data() + mem->size()), pt);
      ASSERT_TRUE(decrypt_file(dir.file("x.enc"), dir.file("out"), key).ok());
      EXPECT_EQ(read_file(dir.file("out")), pt);
      // Encryption is randomised per file (fresh file id): the same input never gives the same bytes.
      ASSERT_TRUE(encrypt_file(dir.file("in"), dir.file("y.enc"), key, c, chunk).ok());
      EXPECT_NE(read_file(dir.file("x.enc")), read_file(dir.file("y.enc")));
    }
  }
}

TEST(Envelope, RekeyChangesKeyCipherAndChunkInPlace) {
  TempDir dir;
  Bytes pt(1000);
  for (size_t i = 0; i < pt.size(); ++i) pt[i] = static_cast<uint8_t>(i * 7);
  write_file(dir.file("in"), pt);
  const Key k1 = test_key("k@1", 1), k2 = test_key("k@2", 2);
  ASSERT_TRUE(encrypt_file(dir.file("in"), dir.file("m.enc"), k1, Cipher::kAes256Gcm, 100).ok());
  for (size_t chunk : {size_t{0}, size_t{37}, size_t{4096}}) {
    Status st = rekey_file(dir.file("m.enc"), dir.file("m.enc"), chunk == 37 ? k1 : k1, k2,
                           chunk == 37 ? std::optional(Cipher::kSm4CtrHmacSm3) : std::nullopt, chunk);
    ASSERT_TRUE(st.ok()) << st.to_string();
    auto info = read_envelope_info(dir.file("m.enc"));
    EXPECT_EQ(info->key_id, "k@2");
    auto mem = decrypt_to_memory(dir.file("m.enc"), k2);
    ASSERT_TRUE(mem.ok()) << mem.status().to_string();
    EXPECT_EQ(Bytes(mem->data(), mem->data() + mem->size()), pt);
    EXPECT_FALSE(decrypt_to_memory(dir.file("m.enc"), Key{"", k1.bytes, 0}).ok());
    ASSERT_TRUE(rekey_file(dir.file("m.enc"), dir.file("m.enc"), k2, k1).ok());  // back, for the next round
  }
}

// Every tampering must fail to decrypt, with a one-line error naming the file, and leave no output file.
class Tamper : public ::testing::TestWithParam<Cipher> {
 protected:
  void SetUp() override {
    Bytes pt(kChunk * 3 + 10);
    for (size_t i = 0; i < pt.size(); ++i) pt[i] = static_cast<uint8_t>(i);
    write_file(dir_.file("in"), pt);
    ASSERT_TRUE(encrypt_file(dir_.file("in"), dir_.file("ok.enc"), key_, GetParam(), kChunk).ok());
    good_ = read_file(dir_.file("ok.enc"));
    header_ = good_.size() - pt.size() - 4 * tag();
  }
  size_t tag() const { return GetParam() == Cipher::kSm4CtrHmacSm3 ? 32 : 16; }
  size_t chunk_at(size_t i) const { return header_ + i * (kChunk + tag()); }
  Bytes chunk_bytes(size_t i) const {
    return Bytes(good_.begin() + chunk_at(i), good_.begin() + chunk_at(i) + kChunk + tag());
  }
  // Returns the error message (empty when decryption wrongly succeeded).
  std::string fails(const Bytes& file, const Key* key = nullptr) {
    const std::string path = dir_.file("bad.enc");
    write_file(path, file);
    auto mem = decrypt_to_memory(path, key ? *key : key_);
    Status st = decrypt_file(path, dir_.file("out"), key ? *key : key_);
    EXPECT_FALSE(fs::exists(dir_.file("out"))) << "plaintext left on disk";
    EXPECT_FALSE(fs::exists(dir_.file("out.tmp"))) << "partial plaintext left on disk";
    if (mem.ok() || st.ok()) return "";
    EXPECT_EQ(mem.status().message(), st.message());
    EXPECT_EQ(st.message().find('\n'), std::string::npos);
    EXPECT_NE(st.message().find(path), std::string::npos) << st.message();
    return st.message();
  }
  static constexpr size_t kChunk = 256;
  TempDir dir_;
  Key key_ = test_key("model-key@3", 3);
  Bytes good_;
  size_t header_ = 0;
};

TEST_P(Tamper, FlippedBytes) {
  for (size_t pos : {size_t{13}, size_t{20}, size_t{30}, header_ - 1, chunk_at(1) + 5, chunk_at(1) + kChunk + 3,
                     good_.size() - 1}) {
    Bytes f = good_;
    f[pos] ^= 0x40;
    EXPECT_NE(fails(f), "") << "byte " << pos;
  }
  Bytes f = good_;
  f[header_ + 1] ^= 1;
  EXPECT_NE(fails(f).find("authentication failed at chunk 0: wrong key or modified file"), std::string::npos);
}

TEST_P(Tamper, ChunksDroppedSwappedDuplicated) {
  Bytes head(good_.begin(), good_.begin() + header_);
  Bytes c0 = chunk_bytes(0), c1 = chunk_bytes(1), c2 = chunk_bytes(2);
  Bytes last(good_.begin() + chunk_at(3), good_.end());
  EXPECT_NE(fails(concat(concat(concat(head, c0), c2), last)), "");                      // drop
  EXPECT_NE(fails(concat(concat(concat(concat(head, c1), c0), c2), last)), "");          // swap
  EXPECT_NE(fails(concat(concat(concat(concat(head, c0), c0), c2), last)), "");          // duplicate in place
  EXPECT_NE(fails(concat(concat(concat(concat(concat(head, c0), c1), c1), c2), last)), "");  // duplicate extra
  EXPECT_NE(fails(concat(concat(concat(head, c0), c1), c2)), "");                        // last chunk missing
  EXPECT_NE(fails(concat(good_, c2)), "");                                               // appended chunk
}

TEST_P(Tamper, Truncated) {
  for (size_t n : {size_t{5}, header_ - 1, header_, chunk_at(1), chunk_at(2) + 17, good_.size() - 1}) {
    EXPECT_NE(fails(Bytes(good_.begin(), good_.begin() + n)), "") << "truncated to " << n;
  }
  EXPECT_NE(fails(Bytes(good_.begin(), good_.begin() + chunk_at(2))).find("truncated"), std::string::npos);
}

TEST_P(Tamper, WrongKeyAndOtherKeyId) {
  Key wrong = test_key("", 9);  // no id: only authentication can tell
  EXPECT_NE(fails(good_, &wrong).find("authentication failed at chunk 0: wrong key or modified file"),
            std::string::npos);
  Key other = test_key("model-key@4", 3);
  EXPECT_NE(fails(good_, &other).find("encrypted with key 'model-key@3'"), std::string::npos);
}

TEST_P(Tamper, VersionMagicCipher) {
  Bytes f = good_;
  f[11] = 7;
  EXPECT_NE(fails(f).find("unknown version 7"), std::string::npos);
  f = good_;
  f[0] = 'X';
  EXPECT_NE(fails(f).find("not an encrypted file"), std::string::npos);
  f = good_;
  f[12] = 9;
  EXPECT_NE(fails(f).find("unknown cipher"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(AllCiphers, Tamper, ::testing::ValuesIn(ciphers()),
                         [](const auto& info) {
                           std::string n = cipher_name(info.param);
                           for (char& ch : n) if (ch == '-') ch = '_';
                           return n;
                         });

TEST(Envelope, CipherNames) {
  EXPECT_EQ(*parse_cipher("aes-256-gcm"), Cipher::kAes256Gcm);
  EXPECT_EQ(*parse_cipher("sm4"), sm4_gcm_available() ? Cipher::kSm4Gcm : Cipher::kSm4CtrHmacSm3);
  EXPECT_EQ(parse_cipher("sm4-gcm").ok(), sm4_gcm_available());
  EXPECT_FALSE(parse_cipher("rot13").ok());
}

TEST(Envelope, BadArguments) {
  TempDir dir;
  write_file(dir.file("in"), Bytes(10, 1));
  const Key key = test_key("k", 1);
  EXPECT_FALSE(encrypt_file(dir.file("in"), dir.file("o"), key, Cipher::kAes256Gcm, 0).ok());
  EXPECT_FALSE(encrypt_file(dir.file("missing"), dir.file("o"), key, Cipher::kAes256Gcm).ok());
  Key short_key = key;
  short_key.bytes.assign(key.bytes.begin(), key.bytes.begin() + 16);  // (resize() trips a GCC 12 false warning)
  EXPECT_FALSE(encrypt_file(dir.file("in"), dir.file("o"), short_key, Cipher::kAes256Gcm).ok());
  EXPECT_FALSE(fs::exists(dir.file("o")));
  EXPECT_FALSE(fs::exists(dir.file("o.tmp")));
  EXPECT_FALSE(is_encrypted_file(dir.file("in")));
}

TEST(SecureBuffer, ZeroedLockedOrNotAndMovable) {
  auto b = SecureBuffer::create(10000);
  ASSERT_TRUE(b.ok());
  for (size_t i = 0; i < b->size(); ++i) ASSERT_EQ(b->data()[i], 0);
  b->data()[9999] = 5;
  SecureBuffer moved = std::move(*b);
  EXPECT_EQ(b->data(), nullptr);
  EXPECT_EQ(moved.data()[9999], 5);
  moved.reset();
  EXPECT_EQ(moved.size(), 0u);
  auto empty = SecureBuffer::create(0);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->data(), nullptr);
}

}  // namespace
}  // namespace citadel::crypto
