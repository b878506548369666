// CITADEL-ENC envelopes: header, per-file keys, chunk sealing, and the streaming reader and writer.
#include "crypto/envelope.h"

#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace citadel::crypto {
namespace {

using primitives::Bytes;
using primitives::View;

constexpr size_t kMagicLen = 11;
constexpr size_t kFixedHeader = 44;
constexpr size_t kFileIdLen = 16;
constexpr size_t kAadLen = 32 + 8 + 1;

struct Header {
  Cipher cipher = Cipher::kAes256Gcm;
  uint64_t chunk_size = 0;
  uint64_t plaintext_size = 0;
  uint8_t file_id[kFileIdLen] = {};
  std::string key_id;
  Bytes raw;  // the serialized bytes (hashed into every chunk's AAD)

  uint64_t n_chunks() const {
    return plaintext_size == 0 ? 1 : (plaintext_size + chunk_size - 1) / chunk_size;
  }
  size_t chunk_len(uint64_t i) const {
    uint64_t left = plaintext_size - i * chunk_size;
    return static_cast<size_t>(left < chunk_size ? left : chunk_size);
  }
};

size_t tag_size(Cipher c) { return c == Cipher::kSm4CtrHmacSm3 ? 32 : 16; }
bool is_sm4(Cipher c) { return c != Cipher::kAes256Gcm; }

void put_le(uint8_t* p, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t get_le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | p[i];
  return v;
}
void put_be64(uint8_t* p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<uint8_t>(v);
}

void serialize(Header* h) {
  // Filled in place (not with insert(), which g++ 12 misreads as an overflow under -O2).
  h->raw.assign(kFixedHeader + h->key_id.size(), 0);
  uint8_t* p = h->raw.data();
  std::memcpy(p, kEnvelopeMagic, kMagicLen);
  p[11] = kEnvelopeVersion;
  p[12] = static_cast<uint8_t>(h->cipher);
  p[13] = static_cast<uint8_t>(h->key_id.size());
  put_le(p + 16, h->chunk_size, 4);
  put_le(p + 20, h->plaintext_size, 8);
  std::memcpy(p + 28, h->file_id, kFileIdLen);
  if (!h->key_id.empty()) std::memcpy(p + kFixedHeader, h->key_id.data(), h->key_id.size());
}

// File descriptor that closes itself.
struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

// Reads up to n bytes; fewer only at end of file.
Result<size_t> read_full(int fd, uint8_t* p, size_t n, const std::string& path) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, p + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return IoError(path + ": read: " + std::strerror(errno));
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

Status write_full(int fd, const uint8_t* p, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return IoError(path + ": write: " + std::strerror(errno));
    p += w;
    n -= static_cast<size_t>(w);
  }
  return OkStatus();
}

// OUT.tmp, renamed over OUT by commit(); removed if never committed, so no partial output survives an error.
class TmpFile {
 public:
  static Result<std::unique_ptr<TmpFile>> create(const std::string& path, mode_t mode) {
    auto t = std::unique_ptr<TmpFile>(new TmpFile(path));
    t->fd_.fd = open(t->tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (t->fd_.fd < 0) return IoError(t->tmp_ + ": cannot create: " + std::strerror(errno));
    return t;
  }
  ~TmpFile() {
    if (!committed_) unlink(tmp_.c_str());
  }
  Status write(const uint8_t* p, size_t n) { return write_full(fd_.fd, p, n, tmp_); }
  Status commit() {
    if (fsync(fd_.fd) != 0) return IoError(tmp_ + ": fsync: " + std::strerror(errno));
    if (close(fd_.fd) != 0) {
      fd_.fd = -1;
      return IoError(tmp_ + ": close: " + std::strerror(errno));
    }
    fd_.fd = -1;
    if (rename(tmp_.c_str(), path_.c_str()) != 0)
      return IoError(path_ + ": cannot rename " + tmp_ + " to it: " + std::strerror(errno));
    committed_ = true;
    return OkStatus();
  }

 private:
  explicit TmpFile(const std::string& path) : path_(path), tmp_(path + ".tmp") {}
  std::string path_, tmp_;
  Fd fd_;
  bool committed_ = false;
};

// Per-file keys and the chunk transform (crypto/envelope.h gives the construction).
class ChunkCipher {
 public:
  ChunkCipher() = default;
  ChunkCipher(ChunkCipher&&) = default;
  ChunkCipher& operator=(ChunkCipher&&) = default;
  ~ChunkCipher() {
    if (!aad_.empty()) OPENSSL_cleanse(aad_.data(), aad_.size());
  }

  static Result<ChunkCipher> create(const Header& h, const Key& key) {
    if (key.bytes.size() != kKeyBytes)
      return InvalidArgument("key '" + key.id + "' has " + std::to_string(key.bytes.size()) + " bytes, expected 32");
    ChunkCipher c;
    c.cipher_ = h.cipher;
    const char* md = is_sm4(h.cipher) ? "SM3" : "SHA256";
    const std::string base = std::string("citadel-enc/1 ") + cipher_name(h.cipher);
    auto derive = [&](const std::string& info, size_t n, KeyBytes* out) -> Status {
      auto k = primitives::hkdf(md, View(key.bytes.data(), key.bytes.size()), View(h.file_id, kFileIdLen),
                                View(reinterpret_cast<const uint8_t*>(info.data()), info.size()), n);
      if (!k.ok()) return k.status();
      out->assign(k->begin(), k->end());
      OPENSSL_cleanse(k->data(), k->size());
      return OkStatus();
    };
    RETURN_IF_ERROR(derive(base + " enc", h.cipher == Cipher::kAes256Gcm ? 32 : 16, &c.enc_key_));
    if (h.cipher == Cipher::kSm4CtrHmacSm3) RETURN_IF_ERROR(derive(base + " mac", 32, &c.mac_key_));
    ASSIGN_OR_RETURN(Bytes hh, primitives::digest(md, View(h.raw.data(), h.raw.size())));
    c.aad_.assign(hh.begin(), hh.end());
    c.aad_.resize(kAadLen);
    std::memcpy(c.iv_, h.file_id, 4);
    const char* evp = h.cipher == Cipher::kAes256Gcm ? "AES-256-GCM" : h.cipher == Cipher::kSm4Gcm ? "SM4-GCM" : "SM4-CTR";
    c.evp_.reset(EVP_CIPHER_fetch(nullptr, evp, nullptr));
    if (!c.evp_) return Unsupported(std::string(evp) + " is not available in this OpenSSL");
    c.ctx_.reset(EVP_CIPHER_CTX_new());
    if (!c.ctx_) return Internal("EVP_CIPHER_CTX_new failed");
    return c;
  }

  // in -> out (n bytes each, may not overlap), tag: tag_size(cipher) bytes.
  Status seal(uint64_t index, bool last, const uint8_t* in, size_t n, uint8_t* out, uint8_t* tag) {
    set_chunk(index, last);
    RETURN_IF_ERROR(crypt(true, in, n, out, tag));
    if (cipher_ == Cipher::kSm4CtrHmacSm3) return mac(out, n, tag);
    return OkStatus();
  }
  // False when the tag does not verify; out then holds nothing useful (and is wiped for GCM).
  bool open(uint64_t index, bool last, const uint8_t* in, size_t n, uint8_t* out, const uint8_t* tag) {
    set_chunk(index, last);
    if (cipher_ == Cipher::kSm4CtrHmacSm3) {  // encrypt-then-MAC: verify before decrypting anything
      uint8_t expect[32];
      if (!mac(in, n, expect).ok() || CRYPTO_memcmp(expect, tag, 32) != 0) return false;
      return crypt(false, in, n, out, nullptr).ok();
    }
    bool ok = crypt(false, in, n, out, const_cast<uint8_t*>(tag)).ok();
    if (!ok && n) OPENSSL_cleanse(out, n);
    return ok;
  }

 private:
  struct Free {
    void operator()(EVP_CIPHER* c) const { EVP_CIPHER_free(c); }
    void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
  };

  void set_chunk(uint64_t index, bool last) {
    put_be64(iv_ + 4, index);
    std::memset(iv_ + 12, 0, 4);
    put_be64(aad_.data() + 32, index);
    aad_[40] = last ? 1 : 0;
  }

  Status mac(const uint8_t* ct, size_t n, uint8_t* tag) {
    Bytes data(aad_.begin(), aad_.end());
    data.insert(data.end(), ct, ct + n);
    ASSIGN_OR_RETURN(Bytes t, primitives::hmac("SM3", View(mac_key_.data(), mac_key_.size()), data));
    std::memcpy(tag, t.data(), 32);
    return OkStatus();
  }

  // GCM (tag: out when encrypting, expected when decrypting) or plain CTR (tag unused).
  Status crypt(bool enc, const uint8_t* in, size_t n, uint8_t* out, uint8_t* tag) {
    EVP_CIPHER_CTX* ctx = ctx_.get();
    const bool gcm = cipher_ != Cipher::kSm4CtrHmacSm3;
    EVP_CIPHER_CTX_reset(ctx);
    if (EVP_CipherInit_ex2(ctx, evp_.get(), enc_key_.data(), iv_, enc ? 1 : 0, nullptr) != 1)
      return Internal("cipher init failed");
    int len = 0;
    if (gcm && EVP_CipherUpdate(ctx, nullptr, &len, aad_.data(), static_cast<int>(aad_.size())) != 1)
      return Internal("aad failed");
    // EVP takes int lengths; chunks are at most 1 GiB.
    if (n && EVP_CipherUpdate(ctx, out, &len, in, static_cast<int>(n)) != 1) return Internal("cipher update failed");
    if (gcm && !enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, tag) != 1)
      return Internal("set tag failed");
    uint8_t final_block[32];
    if (EVP_CipherFinal_ex(ctx, final_block, &len) != 1) return DataLoss("authentication failed");
    if (gcm && enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag) != 1)
      return Internal("get tag failed");
    return OkStatus();
  }

  Cipher cipher_ = Cipher::kAes256Gcm;
  KeyBytes enc_key_, mac_key_;
  KeyBytes aad_;  // header hash || be64(index) || is_last
  uint8_t iv_[16] = {};
  std::unique_ptr<EVP_CIPHER, Free> evp_;
  std::unique_ptr<EVP_CIPHER_CTX, Free> ctx_;
};

// Key ids appear in one-line error messages: printable ASCII only.
bool printable(const std::string& s) {
  for (char c : s)
    if (c < 0x20 || c > 0x7e) return false;
  return true;
}

Result<Header> parse_header(int fd, const std::string& path) {
  uint8_t fixed[kFixedHeader];
  ASSIGN_OR_RETURN(size_t got, read_full(fd, fixed, kFixedHeader, path));
  if (got < kMagicLen || std::memcmp(fixed, kEnvelopeMagic, kMagicLen) != 0)
    return InvalidArgument(path + ": not an encrypted file (no CITADEL-ENC magic)");
  if (got < 12 || fixed[11] != kEnvelopeVersion)
    return Unsupported(path + ": unknown version " + (got < 12 ? std::string("?") : std::to_string(fixed[11])) +
                       " (this build reads " + std::to_string(kEnvelopeVersion) + ")");
  if (got < kFixedHeader) return DataLoss(path + ": truncated in the header");
  Header h;
  if (fixed[12] < 1 || fixed[12] > 3) return Unsupported(path + ": unknown cipher id " + std::to_string(fixed[12]));
  h.cipher = static_cast<Cipher>(fixed[12]);
  h.chunk_size = get_le(fixed + 16, 4);
  h.plaintext_size = get_le(fixed + 20, 8);
  std::memcpy(h.file_id, fixed + 28, kFileIdLen);
  if (h.chunk_size == 0 || h.chunk_size > kMaxChunkSize)
    return DataLoss(path + ": chunk size " + std::to_string(h.chunk_size) + " out of range");
  h.key_id.resize(fixed[13]);
  ASSIGN_OR_RETURN(got, read_full(fd, reinterpret_cast<uint8_t*>(h.key_id.data()), h.key_id.size(), path));
  if (got < h.key_id.size()) return DataLoss(path + ": truncated in the header");
  if (!printable(h.key_id)) return DataLoss(path + ": the key id in the header is not printable text (modified file?)");
  h.raw.assign(fixed, fixed + kFixedHeader);
  h.raw.insert(h.raw.end(), h.key_id.begin(), h.key_id.end());
  return h;
}

// Streams the chunks of one envelope, authenticating each before its plaintext is handed out.
class Reader {
 public:
  static Result<std::unique_ptr<Reader>> open(const std::string& path, const Key* key) {
    auto r = std::unique_ptr<Reader>(new Reader(path));
    r->fd_.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (r->fd_.fd < 0) return IoError(path + ": cannot open: " + std::strerror(errno));
    ASSIGN_OR_RETURN(r->h_, parse_header(r->fd_.fd, path));
    if (!key) return r;
    const Header& h = r->h_;
    if (!key->id.empty() && !h.key_id.empty() && key->id != h.key_id)
      return InvalidArgument(path + ": encrypted with key '" + h.key_id + "', but the key given is '" + key->id + "'");
    struct stat st {};
    if (fstat(r->fd_.fd, &st) != 0) return IoError(path + ": cannot stat: " + std::strerror(errno));
    const uint64_t ts = tag_size(h.cipher), n = h.n_chunks();
    // Checked before allocating plaintext_size bytes: a hostile header cannot ask for more than the file backs.
    if (n > (UINT64_MAX - h.plaintext_size) / (ts + 1))
      return DataLoss(path + ": plaintext size " + std::to_string(h.plaintext_size) + " out of range");
    const uint64_t expect = h.raw.size() + h.plaintext_size + n * ts;
    const uint64_t have = static_cast<uint64_t>(st.st_size);
    if (have < expect)
      return DataLoss(path + ": truncated (" + std::to_string(have) + " bytes, the header describes " +
                      std::to_string(expect) + ")");
    if (have > expect) return DataLoss(path + ": unexpected data after the last chunk");
    ASSIGN_OR_RETURN(r->cipher_, ChunkCipher::create(h, *key));
    r->in_.resize(h.chunk_size + ts);
    return r;
  }
  const Header& header() const { return h_; }
  bool done() const { return index_ == h_.n_chunks(); }

  // Decrypts the next chunk into out (room for header().chunk_size bytes) and returns its length.
  Result<size_t> next(uint8_t* out) {
    const size_t n = h_.chunk_len(index_), ts = tag_size(h_.cipher);
    ASSIGN_OR_RETURN(size_t got, read_full(fd_.fd, in_.data(), n + ts, path_));
    if (got < n + ts) return DataLoss(path_ + ": truncated at chunk " + std::to_string(index_));
    const bool last = index_ + 1 == h_.n_chunks();
    if (!cipher_.open(index_, last, in_.data(), n, out, in_.data() + n))
      return DataLoss(path_ + ": authentication failed at chunk " + std::to_string(index_) +
                      ": wrong key or modified file");
    ++index_;
    if (last) {
      uint8_t extra;
      ASSIGN_OR_RETURN(size_t more, read_full(fd_.fd, &extra, 1, path_));
      if (more) return DataLoss(path_ + ": unexpected data after the last chunk");
    }
    return n;
  }

 private:
  explicit Reader(const std::string& path) : path_(path) {}
  std::string path_;
  Fd fd_;
  Header h_;
  ChunkCipher cipher_;
  Bytes in_;  // ciphertext || tag of one chunk
  uint64_t index_ = 0;
};

// Writes one envelope to OUT.tmp; commit() renames it over OUT.
class Writer {
 public:
  static Result<std::unique_ptr<Writer>> create(const std::string& path, const Key& key, Cipher cipher,
                                                size_t chunk_size, uint64_t plaintext_size) {
    if (chunk_size == 0 || chunk_size > kMaxChunkSize)
      return InvalidArgument("chunk size " + std::to_string(chunk_size) + ": expected 1 byte .. 1 GiB");
    if (key.id.size() > 255 || !printable(key.id))
      return InvalidArgument("key id: expected at most 255 printable ASCII characters");
    if (cipher == Cipher::kSm4Gcm && !sm4_gcm_available())
      return Unsupported("sm4-gcm is not available in this OpenSSL (use sm4, which picks sm4-ctr-hmac-sm3)");
    auto w = std::unique_ptr<Writer>(new Writer);
    Header& h = w->h_;
    h.cipher = cipher;
    h.chunk_size = chunk_size;
    h.plaintext_size = plaintext_size;
    h.key_id = key.id;
    if (RAND_bytes(h.file_id, kFileIdLen) != 1) return Internal("RAND_bytes failed");
    serialize(&h);
    ASSIGN_OR_RETURN(w->cipher_, ChunkCipher::create(h, key));
    ASSIGN_OR_RETURN(w->out_, TmpFile::create(path, 0644));
    RETURN_IF_ERROR(w->out_->write(h.raw.data(), h.raw.size()));
    w->buf_.resize(chunk_size + tag_size(cipher));
    return w;
  }
  // Exactly header().chunk_len(next index) bytes.
  Status write_chunk(const uint8_t* p, size_t n) {
    if (index_ >= h_.n_chunks() || n != h_.chunk_len(index_))
      return Internal("envelope writer: chunk " + std::to_string(index_) + " of unexpected length");
    const bool last = index_ + 1 == h_.n_chunks();
    RETURN_IF_ERROR(cipher_.seal(index_, last, p, n, buf_.data(), buf_.data() + n));
    ++index_;
    return out_->write(buf_.data(), n + tag_size(h_.cipher));
  }
  Status commit() {
    if (index_ != h_.n_chunks()) return Internal("envelope writer: committed before the last chunk");
    return out_->commit();
  }
  const Header& header() const { return h_; }

 private:
  Header h_;
  ChunkCipher cipher_;
  std::unique_ptr<TmpFile> out_;
  Bytes buf_;
  uint64_t index_ = 0;
};

}  // namespace

const char* cipher_name(Cipher c) {
  switch (c) {
    case Cipher::kAes256Gcm: return "aes-256-gcm";
    case Cipher::kSm4Gcm: return "sm4-gcm";
    case Cipher::kSm4CtrHmacSm3: return "sm4-ctr-hmac-sm3";
  }
  return "?";
}

bool sm4_gcm_available() {
  EVP_CIPHER* c = EVP_CIPHER_fetch(nullptr, "SM4-GCM", nullptr);
  EVP_CIPHER_free(c);
  return c != nullptr;
}

Result<Cipher> parse_cipher(const std::string& name) {
  if (name == "aes-256-gcm" || name == "aes") return Cipher::kAes256Gcm;
  if (name == "sm4") return sm4_gcm_available() ? Cipher::kSm4Gcm : Cipher::kSm4CtrHmacSm3;
  if (name == "sm4-gcm") {
    if (!sm4_gcm_available()) return Unsupported("sm4-gcm is not available in this OpenSSL (use sm4)");
    return Cipher::kSm4Gcm;
  }
  if (name == "sm4-ctr-hmac-sm3") return Cipher::kSm4CtrHmacSm3;
  return InvalidArgument("cipher '" + name + "': expected aes-256-gcm, sm4, sm4-gcm or sm4-ctr-hmac-sm3");
}

bool is_encrypted_file(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.fd < 0) return false;
  uint8_t magic[kMagicLen];
  auto got = read_full(fd.fd, magic, kMagicLen, path);
  return got.ok() && *got == kMagicLen && std::memcmp(magic, kEnvelopeMagic, kMagicLen) == 0;
}

Result<EnvelopeInfo> read_envelope_info(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<Reader> r, Reader::open(path, nullptr));
  const Header& h = r->header();
  return EnvelopeInfo{h.cipher, h.key_id, h.chunk_size, h.plaintext_size, h.n_chunks()};
}

Status encrypt_file(const std::string& in_path, const std::string& out_path, const Key& key, Cipher cipher,
                    size_t chunk_size) {
  Fd in(::open(in_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (in.fd < 0) return IoError(in_path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (fstat(in.fd, &st) != 0 || !S_ISREG(st.st_mode)) return InvalidArgument(in_path + ": not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  ASSIGN_OR_RETURN(std::unique_ptr<Writer> w, Writer::create(out_path, key, cipher, chunk_size, size));
  ASSIGN_OR_RETURN(SecureBuffer buf, SecureBuffer::create(chunk_size));
  for (uint64_t i = 0; i < w->header().n_chunks(); ++i) {
    const size_t n = w->header().chunk_len(i);
    ASSIGN_OR_RETURN(size_t got, read_full(in.fd, buf.data(), n, in_path));
    if (got != n) return IoError(in_path + ": changed size while being encrypted");
    RETURN_IF_ERROR(w->write_chunk(buf.data(), n).with_context(out_path));
  }
  return w->commit();
}

Status decrypt_file(const std::string& in_path, const std::string& out_path, const Key& key) {
  ASSIGN_OR_RETURN(std::unique_ptr<Reader> r, Reader::open(in_path, &key));
  ASSIGN_OR_RETURN(SecureBuffer buf, SecureBuffer::create(r->header().chunk_size));
  ASSIGN_OR_RETURN(std::unique_ptr<TmpFile> out, TmpFile::create(out_path, 0600));
  while (!r->done()) {
    ASSIGN_OR_RETURN(size_t n, r->next(buf.data()));
    RETURN_IF_ERROR(out->write(buf.data(), n));
  }
  return out->commit();
}

Result<SecureBuffer> decrypt_to_memory(const std::string& path, const Key& key) {
  ASSIGN_OR_RETURN(std::unique_ptr<Reader> r, Reader::open(path, &key));
  ASSIGN_OR_RETURN(SecureBuffer out, SecureBuffer::create(r->header().plaintext_size));
  // Chunks decrypt in place into the output; the reader's own buffer holds only ciphertext.
  uint64_t off = 0;
  while (!r->done()) {
    uint8_t scratch[1];
    ASSIGN_OR_RETURN(size_t n, r->next(out.size() ? out.data() + off : scratch));
    off += n;
  }
  return out;
}

Status rekey_file(const std::string& in_path, const std::string& out_path, const Key& old_key, const Key& new_key,
                  std::optional<Cipher> cipher, size_t chunk_size) {
  ASSIGN_OR_RETURN(std::unique_ptr<Reader> r, Reader::open(in_path, &old_key));
  const Header& in = r->header();
  const size_t out_chunk = chunk_size ? chunk_size : static_cast<size_t>(in.chunk_size);
  ASSIGN_OR_RETURN(std::unique_ptr<Writer> w, Writer::create(out_path, new_key, cipher.value_or(in.cipher),
                                                             out_chunk, in.plaintext_size));
  // Plaintext passes through one locked buffer: input chunks are appended, output chunks taken from the front.
  ASSIGN_OR_RETURN(SecureBuffer in_buf, SecureBuffer::create(in.chunk_size));
  ASSIGN_OR_RETURN(SecureBuffer acc, SecureBuffer::create(in.chunk_size + out_chunk));
  size_t have = 0;
  uint64_t out_index = 0;
  while (!r->done()) {
    ASSIGN_OR_RETURN(size_t n, r->next(in_buf.data()));
    if (n) std::memcpy(acc.data() + have, in_buf.data(), n);
    have += n;
    size_t off = 0;
    while (out_index < w->header().n_chunks()) {
      const size_t want = w->header().chunk_len(out_index);
      if (have - off < want || (want == 0 && !r->done())) break;
      RETURN_IF_ERROR(w->write_chunk(acc.size() ? acc.data() + off : nullptr, want));
      off += want;
      ++out_index;
    }
    if (off && have > off) std::memmove(acc.data(), acc.data() + off, have - off);
    have -= off;
  }
  return w->commit();
}

}  // namespace citadel::crypto
