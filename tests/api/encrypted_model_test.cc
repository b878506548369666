// Encrypted models at rest: a synthetic GGUF encrypted with crypto/envelope.h loads from memory with the same
// tensors (byte for byte), the same logits and the same served name as the plain file, and never without its key;
// an encrypted safetensors file (an embedding model's weights) opens from memory with the same tensors and the
// config.json of its directory, and a model directory with model.safetensors.enc and no plaintext resolves to it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include "api/model_loader.h"
#include "crypto/envelope.h"
#include "crypto/key_source.h"
#include "format/tensor_store.h"
#include "model/synth.h"
#include "runtime/runner_factory.h"

namespace citadel {
namespace {

namespace fs = std::filesystem;

class EncryptedModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/citadel_encmodel_XXXXXX";
    dir_ = new std::string(mkdtemp(tmpl));
    SynthOptions so;
    so.preset = "tiny";
    so.seed = 3;
    so.out = plain();
    ASSERT_TRUE(write_synth(so).ok());
    auto key = crypto::generate_key("model-key@1");
    ASSERT_TRUE(key.ok());
    ASSERT_TRUE(crypto::write_key_file(key_file(), *key).ok());
    // Small chunks: the model spans many of them.
    ASSERT_TRUE(crypto::encrypt_file(plain(), enc(), *key, crypto::Cipher::kAes256Gcm, 64 << 10).ok());
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  static std::string plain() { return *dir_ + "/model.gguf"; }
  static std::string enc() { return *dir_ + "/model.gguf.enc"; }
  static std::string key_file() { return *dir_ + "/model.key"; }
  static std::string* dir_;
};
std::string* EncryptedModelTest::dir_ = nullptr;

// The same tensors (names, shapes, bytes) and as many metadata keys.
void expect_same_tensors(const TensorStore& file, const TensorStore& mem) {
  const auto& a = file.tensors();
  const auto& b = mem.tensors();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].name, b[i].name);
    EXPECT_EQ(a[i].shape, b[i].shape);
    ASSERT_EQ(a[i].nbytes, b[i].nbytes);
    EXPECT_EQ(std::memcmp(a[i].data, b[i].data, a[i].nbytes), 0) << a[i].name;
  }
  EXPECT_EQ(file.metadata().size(), mem.metadata().size());
}

// Logits of one 4-token prefill.
std::vector<float> prefill_logits(engine::ModelRunner* r) {
  EXPECT_TRUE(r->allocate_kv(4, 16).ok());
  engine::Batch b;
  b.tokens = {1, 2, 3, 4};
  b.positions = {0, 1, 2, 3};
  b.seq_of_token = {0, 0, 0, 0};
  b.slots = {0, 1, 2, 3};
  b.query_start = {0, 4};
  b.seq_lens = {4};
  b.block_tables = {0};
  b.max_blocks = 1;
  b.block_size = 16;
  b.logit_rows = {3};
  std::vector<float> logits(static_cast<size_t>(r->n_vocab()));
  EXPECT_TRUE(r->forward(b, logits.data()).ok());
  return logits;
}

TEST_F(EncryptedModelTest, DecryptedStoreAndRunnerMatchThePlainFile) {
  auto key = crypto::load_key(key_file());
  ASSERT_TRUE(key.ok());
  auto buf = crypto::decrypt_to_memory(enc(), *key);
  ASSERT_TRUE(buf.ok()) << buf.status().to_string();
  auto owner = std::make_shared<crypto::SecureBuffer>(std::move(*buf));
  ASSERT_TRUE(register_memory_model(enc(), owner, owner->data(), owner->size()).ok());
  auto from_mem = open_model_file(enc());
  auto mem_runner = runtime::make_model_runner(enc(), runtime::RunnerOptions{});
  unregister_memory_model(enc());
  ASSERT_TRUE(from_mem.ok()) << from_mem.status().to_string();
  ASSERT_TRUE(mem_runner.ok()) << mem_runner.status().to_string();
  owner.reset();  // the store and the runner keep the decrypted bytes alive

  auto from_file = open_model_file(plain());
  ASSERT_TRUE(from_file.ok());
  ASSERT_GT((*from_file)->tensors().size(), 3u);
  expect_same_tensors(**from_file, **from_mem);
  EXPECT_EQ((*from_mem)->path(), enc());

  auto file_runner = runtime::make_model_runner(plain(), runtime::RunnerOptions{});
  ASSERT_TRUE(file_runner.ok());
  const std::vector<float> la = prefill_logits(file_runner->get()), lb = prefill_logits(mem_runner->get());
  ASSERT_EQ(la.size(), lb.size());
  EXPECT_EQ(std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)), 0);
  // Unregistered: the .enc path is the encrypted file again, which is no GGUF.
  EXPECT_FALSE(open_model_file(enc()).ok());
}

TEST_F(EncryptedModelTest, LoadModelHostNeedsTheKey) {
  api::ModelLoadOptions o;
  o.model = enc();
  o.compute_threads = 1;
  o.engine.n_blocks = 64;
  auto no_key = api::load_model_host(o);
  ASSERT_FALSE(no_key.ok());
  EXPECT_EQ(no_key.status().message(), "model " + enc() + " is encrypted: give --key-file");

  const std::string wrong = *dir_ + "/wrong.key";
  auto other = crypto::generate_key("");
  ASSERT_TRUE(crypto::write_key_file(wrong, *other).ok());
  o.key_file = wrong;
  auto bad = api::load_model_host(o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("authentication failed at chunk 0"), std::string::npos)
      << bad.status().message();

  o.key_file = key_file();
  auto host = api::load_model_host(o);
  ASSERT_TRUE(host.ok()) << host.status().to_string();
  EXPECT_EQ((*host)->served_name, "model");  // as for model.gguf
  EXPECT_EQ((*host)->path, enc());
}

TEST_F(EncryptedModelTest, EncryptedSafetensorsOpenFromMemoryWithTheirConfig) {
  const fs::path dir = fs::path(*dir_) / "bert-dir";
  fs::create_directories(dir);
  // Two f32 tensors [2, 2] and [3]: 28 bytes of data after the JSON header.
  const std::string header = R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
                             R"("b":{"dtype":"F32","shape":[3],"data_offsets":[16,28]}})";
  std::string bytes(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  bytes += header;
  for (int i = 0; i < 7; ++i) {
    const float v = 0.5f * static_cast<float>(i) - 1.0f;
    bytes.append(reinterpret_cast<const char*>(&v), 4);
  }
  const std::string plain_st = (dir / "model.safetensors").string(), enc_st = plain_st + ".enc";
  std::ofstream(plain_st, std::ios::binary) << bytes;
  std::ofstream(dir / "config.json") << R"({"model_type":"bert","hidden_size":4,"num_hidden_layers":1})";
  auto key = crypto::load_key(key_file());
  ASSERT_TRUE(key.ok());
  ASSERT_TRUE(crypto::encrypt_file(plain_st, enc_st, *key, crypto::Cipher::kAes256Gcm, 16).ok());
  EXPECT_EQ(api::encrypted_weights_of(dir.string()), dir.string());  // the plaintext is there: it is served
  auto from_file = open_model_file(dir.string());
  ASSERT_TRUE(from_file.ok()) << from_file.status().to_string();
  fs::remove(plain_st);
  EXPECT_EQ(api::encrypted_weights_of(dir.string()), enc_st);
  EXPECT_EQ(api::encrypted_weights_of(plain()), plain());  // a file is itself

  auto dec = api::DecryptedModel::open(enc_st, key_file());
  ASSERT_TRUE(dec.ok()) << dec.status().to_string();
  auto from_mem = open_model_file(enc_st);
  (*dec).reset();  // unregistered: the store keeps the decrypted bytes alive
  ASSERT_TRUE(from_mem.ok()) << from_mem.status().to_string();
  EXPECT_EQ((*from_mem)->format(), "safetensors");
  EXPECT_EQ((*from_mem)->path(), enc_st);
  ASSERT_EQ((*from_file)->tensors().size(), 2u);
  expect_same_tensors(**from_file, **from_mem);
  EXPECT_EQ((*from_mem)->meta_string("general.architecture"), std::optional<std::string>("bert"));
  EXPECT_FALSE(open_model_file(enc_st).ok());  // the encrypted bytes themselves are no model
  // One modified byte: the authenticated decryption refuses the file.
  {
    std::fstream f(enc_st, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(enc_st) / 2));
    char c = 0;
    f.read(&c, 1);
    f.seekp(static_cast<std::streamoff>(fs::file_size(enc_st) / 2));
    c ^= 1;
    f.write(&c, 1);
  }
  auto tampered = api::DecryptedModel::open(enc_st, key_file());
  ASSERT_FALSE(tampered.ok());
  EXPECT_NE(tampered.status().message().find(enc_st), std::string::npos) << tampered.status().message();
}

}  // namespace
}  // namespace citadel
