// citadel encrypt: encrypts a model file at rest (crypto/envelope.h); serve/generate load it with --key-file.
//   citadel encrypt --in model.gguf --out model.gguf.enc --key-file K [--cipher aes-256-gcm|sm4] [--chunk-mb 4]
//   citadel encrypt ... --new-key-file K --key-id model-key@1   (creates K, mode 0600, then encrypts with it)
// Prints one line of what it did; never key bytes. There is deliberately no `citadel decrypt` (plaintext on disk).
#include <cstdio>
#include <memory>
#include <string>

#include "command.h"
#include "crypto/envelope.h"
#include "crypto/key_source.h"

namespace encrypt_cmd {

struct EncryptOpts {
  std::string in, out, key_file, new_key_file, key_id = "model-key@1", cipher = "aes-256-gcm";
  double chunk_mb = 4;
};

int fail(const std::string& m) {
  std::fprintf(stderr, "citadel encrypt: %s\n", m.c_str());
  return 1;
}

int run_encrypt(const EncryptOpts& o) {
  using namespace citadel::crypto;
  if (o.key_file.empty() == o.new_key_file.empty()) return fail("give exactly one of --key-file and --new-key-file");
  auto cipher = parse_cipher(o.cipher);
  if (!cipher.ok()) return fail(cipher.status().message());
  if (!(o.chunk_mb > 0) || o.chunk_mb * (1 << 20) > static_cast<double>(kMaxChunkSize))
    return fail("--chunk-mb: expected a size in (0, 1024]");
  const size_t chunk = static_cast<size_t>(o.chunk_mb * (1 << 20));
  citadel::Result<Key> key = citadel::InvalidArgument("no key");
  if (!o.new_key_file.empty()) {
    key = generate_key(o.key_id);
    if (!key.ok()) return fail(key.status().message());
    if (auto st = write_key_file(o.new_key_file, *key); !st.ok()) return fail(st.message());
  } else {
    key = load_key(o.key_file);
    if (!key.ok()) return fail(key.status().message());
  }
  if (auto st = encrypt_file(o.in, o.out, *key, *cipher, chunk); !st.ok()) return fail(st.message());
  auto info = read_envelope_info(o.out);
  if (!info.ok()) return fail(info.status().message());
  std::printf("encrypted %s -> %s (%llu bytes, %s, key '%s'%s, %llu chunks of %llu bytes)\n", o.in.c_str(),
              o.out.c_str(), static_cast<unsigned long long>(info->plaintext_size), cipher_name(info->cipher),
              info->key_id.c_str(), o.new_key_file.empty() ? "" : (", new key file " + o.new_key_file).c_str(),
              static_cast<unsigned long long>(info->n_chunks), static_cast<unsigned long long>(info->chunk_size));
  return 0;
}

citadel::cli::Registrar reg("encrypt", "Encrypt a model file at rest (AES-256-GCM or SM4)", [](CLI::App& sub) {
  auto o = std::make_shared<EncryptOpts>();
  sub.add_option("--in", o->in, "plaintext model file")->required();
  sub.add_option("--out", o->out, "encrypted output (by convention IN.enc)")->required();
  sub.add_option("--key-file", o->key_file, "key spec: PATH | env:NAME | cmd:PROG ARGS");
  sub.add_option("--new-key-file", o->new_key_file, "create a fresh random key here (mode 0600) and use it");
  sub.add_option("--key-id", o->key_id, "id recorded for --new-key-file (default model-key@1)");
  sub.add_option("--cipher", o->cipher, "aes-256-gcm | sm4 (sm4-gcm where available, else sm4-ctr-hmac-sm3)");
  sub.add_option("--chunk-mb", o->chunk_mb, "plaintext MiB per authenticated chunk (default 4)");
  return [o] { return run_encrypt(*o); };
});

}  // namespace encrypt_cmd
