// citadel audit verify|export|rotate-key|purge: the tamper-evident audit log of a data directory (or --state-db),
// also while `citadel serve` runs on it.
//   citadel audit verify [--data-dir DIR] [--state-db URL] [--key F] [--keyring F]   exit 0 when the whole chain,
//                              every checkpoint signature (current key or a retired key of the keyring) and the head
//                              file check out; else 1 and the first bad record
//   citadel audit export [--format jsonl] [--since T] [--until T] [--out F]   records as JSON lines, then a last line
//                              with the verification status; audited itself
//   citadel audit rotate-key [--key F] [--keyring F]   new signing key; the old public half goes to the keyring
//                              (default KEY.retired); recorded as encryption.key_rotation; a running server on the
//                              same key file signs with the new key from its next commit
//   citadel audit purge [--retention-days N] [--now T]   applies retention now (a signed anchor keeps the rest
//                              verifiable); recorded as retention.purge
//   citadel audit content --request-id ID --content-key K   the stored (encrypted) prompt and output of a request,
//                              decrypted, as JSON; wrong key or modified content: one line, exit 1
// T: Unix seconds or an RFC 3339 UTC time.
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "api/state.h"
#include "audit/audit_content.h"
#include "audit/audit_log.h"
#include "base/clock.h"
#include "crypto/key_source.h"
#include "command.h"

namespace audit_cmd {

using namespace citadel;

struct AuditArgs {
  std::string data_dir, state_db, key_file, head_file, keyring_file;
  std::string format = "jsonl", since, until, out;
  int64_t retention_days = 180;
  std::string now;
  std::string request_id, content_key;
};

Result<int64_t> parse_time_arg(const std::string& s, const char* what) {
  const auto t = parse_time_ms(s);
  if (!t) return InvalidArgument(std::string(what) + ": '" + s + "' is not Unix seconds or an RFC 3339 UTC time");
  return *t;
}

int fail(const char* cmd, const Status& st) {
  std::fprintf(stderr, "citadel audit %s: %s\n", cmd, st.message().c_str());
  return 1;
}

void print_report(const audit::VerifyReport& r, FILE* f) {
  if (r.ok) {
    std::fprintf(f, "audit log OK: %lld records, %lld signed checkpoints verified\n",
                 static_cast<long long>(r.records), static_cast<long long>(r.checkpoints));
  } else {
    std::fprintf(f, "audit log BROKEN at record %lld: %s (%lld records checked)\n",
                 static_cast<long long>(r.first_bad_seq), r.reason.c_str(), static_cast<long long>(r.records));
  }
}

// rotate-key and purge change the log through the AuditLog of the state (--key is then the private signing key).
int run_rotate(api::State& s) {
  auto r = s.audit->rotate_signing_key("cli");
  if (!r.ok()) return fail("rotate-key", r.status());
  std::printf("audit signing key rotated: %s -> %s (version %d); the old public key is kept in %s\n",
              r->old_key_id.c_str(), r->new_key_id.c_str(), r->new_version, s.audit->options().keyring_file.c_str());
  return 0;
}

int run_purge(const AuditArgs& a, api::State& s) {
  int64_t now_ms = static_cast<int64_t>(std::time(nullptr)) * 1000;
  if (!a.now.empty()) {
    auto t = parse_time_arg(a.now, "--now");
    if (!t.ok()) return fail("purge", t.status());
    now_ms = *t;
  }
  auto n = s.audit->purge(now_ms, "cli");
  if (!n.ok()) return fail("purge", n.status());
  std::printf("audit retention purge: %lld records older than %lld days removed\n", static_cast<long long>(*n),
              static_cast<long long>(a.retention_days));
  return 0;
}

int run_audit(const std::string& cmd, const AuditArgs& a) {
  const bool changes = cmd == "rotate-key" || cmd == "purge";
  if (a.retention_days < 1) return fail(cmd.c_str(), InvalidArgument("--retention-days must be at least 1"));
  api::StateOptions so;
  so.data_dir = a.data_dir, so.state_db = a.state_db;
  so.audit = cmd == "export" || changes;  // export is itself an audited act; verify only reads
  if (cmd == "rotate-key") {
    const std::string key =
        !a.key_file.empty() ? a.key_file : (a.data_dir.empty() ? api::default_data_dir() : a.data_dir) + "/audit.key";
    std::error_code ec;
    if (!std::filesystem::exists(key, ec))
      return fail("rotate-key", NotFound(key + ": no audit signing key to rotate (serve creates one at start)"));
  }
  if (changes) {
    so.audit_key_file = a.key_file;
    so.audit_keyring_file = a.keyring_file;
    so.audit_retention_days = a.retention_days;
  }
  auto state = api::open_state(so);
  if (!state.ok()) return fail(cmd.c_str(), state.status());
  api::State& s = **state;
  if (cmd == "rotate-key") return run_rotate(s);
  if (cmd == "purge") return run_purge(a, s);
  const std::string key = a.key_file.empty() ? s.audit_key_file : a.key_file;
  const std::string head = a.head_file.empty() ? s.audit_head_file : a.head_file;
  if (cmd == "verify") {
    auto rep = audit::verify_audit(*s.db, key, head, a.keyring_file);
    if (!rep.ok()) return fail("verify", rep.status());
    // Stored content: every blob the chain names must be there, unmodified (the record holds its SHA-256).
    auto cc = audit::check_content(*s.db);
    if (!cc.ok()) return fail("verify", cc.status());
    if (rep->ok && !cc->ok()) rep->ok = false, rep->first_bad_seq = cc->first_bad_seq, rep->reason = cc->reason;
    print_report(*rep, stdout);
    return rep->ok ? 0 : 1;
  }
  if (cmd == "content") {
    if (a.request_id.empty() || a.content_key.empty())
      return fail("content", InvalidArgument("--request-id and --content-key are required"));
    auto k = crypto::load_key(a.content_key);
    if (!k.ok()) return fail("content", k.status());
    auto entries = audit::read_content(*s.db, a.request_id, *k);
    if (!entries.ok()) return fail("content", entries.status());
    for (const auto& e : *entries) {
      nlohmann::json j = {{"seq", e.seq}, {"request_id", e.request_id}};
      j.update(e.content);
      std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    }
    return 0;
  }
  if (a.format != "jsonl") return fail("export", InvalidArgument("--format: only jsonl is supported"));
  auto since = parse_time_arg(a.since, "--since");
  if (!since.ok()) return fail("export", since.status());
  auto until = parse_time_arg(a.until, "--until");
  if (!until.ok()) return fail("export", until.status());
  std::ofstream file;
  if (!a.out.empty()) {
    file.open(a.out, std::ios::binary | std::ios::trunc);
    if (!file) return fail("export", IoError(a.out + ": cannot write"));
  }
  std::ostream& out = a.out.empty() ? std::cout : file;
  const Status st = audit::export_jsonl(*s.db, out, *since, *until);
  if (!st.ok()) return fail("export", st);
  auto rep = audit::verify_audit(*s.db, key, head, a.keyring_file);
  nlohmann::json v = {{"verification", rep.ok() && rep->ok ? "ok" : "broken"}};
  if (rep.ok()) v["records"] = rep->records, v["first_bad_seq"] = rep->first_bad_seq, v["reason"] = rep->reason;
  else v["reason"] = rep.status().message();
  out << v.dump() << "\n";
  out.flush();
  audit::AuditEvent e;
  e.kind = "audit.export";
  e.principal = "cli";
  e.detail = {{"since_ms", *since}, {"until_ms", *until}, {"verification", v["verification"]}};
  if (s.audit) s.audit->append(std::move(e));
  if (rep.ok()) print_report(*rep, stderr);
  return 0;
}

citadel::cli::Registrar reg("audit", "Verify or export the tamper-evident audit log", [](CLI::App& sub) {
  auto a = std::make_shared<AuditArgs>();
  auto cmd = std::make_shared<std::string>();
  sub.require_subcommand(1);
  auto common = [a](CLI::App* c) {
    c->add_option("--data-dir", a->data_dir, "state directory (default as serve: ~/.local/share/citadel)");
    c->add_option("--state-db", a->state_db, "state database (SQLite path or postgresql:// URL)");
    c->add_option("--key", a->key_file, "signing key or its public half (default DATA_DIR/audit.key)");
    c->add_option("--head", a->head_file, "head file (default DATA_DIR/audit.head)");
    c->add_option("--keyring", a->keyring_file, "retired public keys (default KEY.retired)");
  };
  auto* verify = sub.add_subcommand("verify", "check the hash chain, the signatures and the head; exit 1 on a break");
  common(verify);
  auto* exp = sub.add_subcommand("export", "records as JSON lines, then the verification status");
  exp->add_option("--format", a->format, "jsonl");
  exp->add_option("--since", a->since, "Unix seconds or RFC 3339 UTC");
  exp->add_option("--until", a->until, "Unix seconds or RFC 3339 UTC");
  exp->add_option("--out", a->out, "file (default stdout)");
  common(exp);
  auto* rot = sub.add_subcommand("rotate-key", "new signing key; the old public half goes to the keyring");
  common(rot);
  auto* purge = sub.add_subcommand("purge", "delete records past retention now (a signed anchor keeps the rest)");
  purge->add_option("--retention-days", a->retention_days, "keep this many days (default 180)");
  purge->add_option("--now", a->now, "the time to apply retention at (Unix seconds or RFC 3339 UTC; tests)");
  common(purge);
  auto* content = sub.add_subcommand("content", "the stored prompt and output of a request, decrypted, as JSON");
  content->add_option("--request-id", a->request_id, "the request's id (x-request-id)")->required();
  content->add_option("--content-key", a->content_key, "the content key: PATH | env:NAME | cmd:PROG ARGS")->required();
  common(content);
  for (auto* c : {verify, exp, rot, purge, content}) c->callback([cmd, c] { *cmd = c->get_name(); });
  return [a, cmd] { return run_audit(*cmd, *a); };
});

}  // namespace audit_cmd
