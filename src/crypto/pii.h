// PII masking ("data desensitisation"): finds personal data in free text (prompts, outputs, log lines) and replaces it
// with typed placeholders before the text is stored, logged or shown to someone who must not see it.
//
// Built-in detectors are hand-written byte scanners (one linear pass plus memchr for '@' and ':'), not std::regex:
// they run over every log line and prompt. std::regex is used only for operator-supplied extra patterns.
//
// What is detected (each rule errs on the side of NOT matching ambiguous numbers such as dates, amounts, order ids):
// - kCnResidentId: GB 11643-1999 18-character id (17 digits + digit/X/x): valid province code, birth date 1900-01-01
//   .. 2099-12-31 (real calendar, leap years), ISO 7064 MOD 11-2 check character; also grouped 6-8-4 with one
//   consistent space or dash. The legacy 15-digit form (province code + 19YYMMDD date, no check digit) is accepted
//   unless the same digits pass Luhn as a bank card (then it is reported as kBankCard; both are masked anyway).
// - kMobilePhone: 1[3-9] + 9 digits, contiguous or 3-4-4 with one consistent space or dash, optionally prefixed by
//   "+86", "0086" or "86" (then optionally one space or dash).
// - kLandline: area code by the real numbering plan (010 and 02x take 3 digits, every other 0xxx takes 4) then a dash
//   or a space, or the area code in ASCII or full-width parentheses; local number 7-8 digits starting 2-9 (exactly 8
//   after 010/02x); optional extension "-123", "转123", " ext 123"/"ext.123" (1-6 digits). "+86"/"0086" with the
//   area code's 0 dropped is accepted. Unseparated 11-12 digit runs are NOT landlines (too ambiguous).
// - kBankCard: 13-19 digits passing Luhn, contiguous or in groups (4-4-4-4[-1..4], 4-6-5, 4-6-4) with one consistent
//   space or dash; first digit 3-6 or 9, or 2221..2720 (Mastercard 2-series): this rejects timestamps and date-led
//   order numbers ("2026...") that happen to pass Luhn. An 18-character valid resident id is never a card (id wins).
// - kEmail: practical RFC 5322 subset: local part [A-Za-z0-9._%+-] (no leading/trailing/double dot, <= 64 bytes),
//   domain of >= 2 LDH labels, alphabetic TLD of >= 2 letters, <= 253 bytes. No quoted local parts, no IDN.
// - kIpv4: dotted quad, octets 0-255 without leading zeros ("1.02.3.4" is not an address: not matched at all), not
//   part of a longer dotted run ("10.0.0.1.2", "1.2.3.4.in-addr") and not right after a word "v"/"ver"/"version"/
//   "版本" ("version 1.2.3.4"). A ":port" suffix is left in place.
// - kIpv6: 8 groups, or "::"-compressed, optionally ending in an embedded IPv4; compressed forms need at least one
//   decimal digit in a group (so C++ "a::b" is not an address); zone ids ("%eth0") are not part of the match.
// - kCustom: each PiiOptions::extra_patterns entry (ECMAScript regex), run line by line; a match is widened to whole
//   UTF-8 characters so it never splits one.
//
// Boundaries: a digit-based match is never part of a longer digit run, never touches an ASCII letter or '_' (so hex
// hashes and ids like "ORD2026..." are left alone; "Tel13800138000" is therefore missed, by choice), never
// continues a dotted or dashed number ("1.138...", "...-5"), and a grouped form never starts right after a 4-digit
// group and a space (the inside of "1234 5678 9012 3456 7890"). Only ASCII digits count: full-width digits (０-９) are out
// of scope (they are rare in machine text and a normalising pass belongs to the caller).
//
// Overlaps: candidates are resolved leftmost-longest; on equal spans the priority is id > mobile > card > legacy id >
// landline > email > ipv6 > ipv4 > custom. Findings are sorted by begin and never overlap.
//
// Placeholders written by mask() (exact tokens): kCnResidentId "[ID]", kMobilePhone and kLandline "[PHONE]",
// kBankCard "[CARD]", kEmail "[EMAIL]", kIpv4 and kIpv6 "[IP]", kCustom "[" + upper-cased name + "]".
//
// UTF-8: built-in matches begin and end on ASCII bytes, custom matches are widened to character boundaries, so
// mask() never splits a multi-byte character and leaves every unmatched byte (valid UTF-8 or not) as it was.
//
// Thread-safety: a PiiMasker is immutable after create(); all const methods may be called concurrently.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"

namespace citadel::crypto {

enum class PiiKind { kCnResidentId, kMobilePhone, kLandline, kBankCard, kEmail, kIpv4, kIpv6, kCustom };

// "resident_id", "mobile_phone", "landline", "bank_card", "email", "ipv4", "ipv6", "custom".
const char* pii_kind_name(PiiKind kind);

struct PiiFinding {
  PiiKind kind = PiiKind::kCustom;
  size_t begin = 0;  // byte offset of the first byte of the match
  size_t end = 0;    // byte offset one past the last byte; begin < end <= text.size()
  std::string name;  // kCustom: the pattern's name; empty otherwise
};

struct PiiOptions {
  // name -> ECMAScript regex. Names are 1-32 of [A-Za-z0-9_]; the placeholder is "[" + upper(name) + "]". Patterns
  // are compiled by create() (a bad one is an InvalidArgument naming it) and must not match the empty string only.
  std::vector<std::pair<std::string, std::string>> extra_patterns;
  bool mask_resident_id = true;
  bool accept_legacy_resident_id = true;  // the 15-digit pre-1999 form
  bool mask_mobile_phone = true;
  bool mask_landline = true;
  bool mask_bank_card = true;
  bool mask_email = true;
  bool mask_ipv4 = true;
  bool mask_ipv6 = true;
};

// Operator patterns as one line of text (serve's `pii_extra_patterns`): "name=regex" entries separated by ';', e.g.
// "employee_id=EMP-[0-9]{6};case_no=CASE/[0-9]{4}-[0-9]+". The first '=' of an entry ends the name; whitespace
// around entries is ignored, empty entries are skipped. A regex that needs a literal ';' writes it as \x3b. Errors
// (an entry without '=' or with an empty regex) name the entry; names and regexes are checked by PiiMasker::create.
Result<std::vector<std::pair<std::string, std::string>>> parse_pii_pattern_list(std::string_view spec);

class PiiMasker {
 public:
  static Result<PiiMasker> create(PiiOptions options);

  // Every finding in text, sorted by begin, non-overlapping. O(text.size()) for the built-in detectors.
  std::vector<PiiFinding> find(std::string_view text) const;

  // text with each finding replaced by its placeholder (see the table above); other bytes unchanged.
  std::string mask(std::string_view text) const;

  bool contains_pii(std::string_view text) const;

  // The placeholder mask() writes for a finding.
  std::string placeholder(const PiiFinding& finding) const;

 private:
  struct Custom;
  PiiMasker(PiiOptions options, std::shared_ptr<const std::vector<Custom>> customs);

  PiiOptions options_;
  std::shared_ptr<const std::vector<Custom>> customs_;  // compiled extra_patterns, shared by copies (immutable)
};

}  // namespace citadel::crypto
