// citadel rotate-key: re-encrypts an encrypted model under a new key, chunk by chunk through locked memory (no
// plaintext file). --out may equal --in (written to OUT.tmp, then renamed).
//   citadel rotate-key --in F.enc --out F2.enc --old-key-file K1 --new-key-file K2 [--cipher aes-256-gcm|sm4]
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "command.h"
#include "crypto/envelope.h"
#include "crypto/key_source.h"

namespace rotate_key_cmd {

struct RotateOpts {
  std::string in, out, old_key, new_key, cipher;
};

int fail(const std::string& m) {
  std::fprintf(stderr, "citadel rotate-key: %s\n", m.c_str());
  return 1;
}

int run_rotate(const RotateOpts& o) {
  using namespace citadel::crypto;
  std::optional<Cipher> cipher;
  if (!o.cipher.empty()) {
    auto c = parse_cipher(o.cipher);
    if (!c.ok()) return fail(c.status().message());
    cipher = *c;
  }
  auto old_key = load_key(o.old_key);
  if (!old_key.ok()) return fail(old_key.status().message());
  auto new_key = load_key(o.new_key);
  if (!new_key.ok()) return fail(new_key.status().message());
  if (old_key->bytes == new_key->bytes) return fail("the old and new keys are the same key");
  auto before = read_envelope_info(o.in);
  if (!before.ok()) return fail(before.status().message());
  if (auto st = rekey_file(o.in, o.out, *old_key, *new_key, cipher); !st.ok()) return fail(st.message());
  auto after = read_envelope_info(o.out);
  if (!after.ok()) return fail(after.status().message());
  std::printf("re-encrypted %s -> %s (%llu bytes): key '%s' -> '%s', %s -> %s\n", o.in.c_str(), o.out.c_str(),
              static_cast<unsigned long long>(after->plaintext_size), before->key_id.c_str(), after->key_id.c_str(),
              cipher_name(before->cipher), cipher_name(after->cipher));
  return 0;
}

citadel::cli::Registrar reg("rotate-key", "Re-encrypt an encrypted model under a new key (no plaintext on disk)",
                            [](CLI::App& sub) {
  auto o = std::make_shared<RotateOpts>();
  sub.add_option("--in", o->in, "encrypted model")->required();
  sub.add_option("--out", o->out, "re-encrypted output (may equal --in)")->required();
  sub.add_option("--old-key-file", o->old_key, "current key spec: PATH | env:NAME | cmd:PROG ARGS")->required();
  sub.add_option("--new-key-file", o->new_key, "new key spec: PATH | env:NAME | cmd:PROG ARGS")->required();
  sub.add_option("--cipher", o->cipher, "aes-256-gcm | sm4 (default: keep the input's)");
  return [o] { return run_rotate(*o); };
});

}  // namespace rotate_key_cmd
