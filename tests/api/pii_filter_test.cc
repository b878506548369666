// The prompt PII policy's text walk over OpenAI request shapes (api/openai/pii_filter.h): which texts are scanned
// and masked, which are left alone, the reject error, the audit detail; and open_state's merged migration order.
#include "api/openai/pii_filter.h"

#include <gtest/gtest.h>

#include <ctime>
#include <filesystem>

#include "api/debug_model.h"
#include "api/state.h"
#include "auth/key_store.h"

namespace citadel::api {
namespace {

using ojson = nlohmann::ordered_json;

// Valid by construction (checked independently: GB 11643 check character, Luhn).
constexpr const char* kMobile = "13800138000";
constexpr const char* kId = "11010519491231002X";
constexpr const char* kCard = "6222021234567890128";

crypto::PiiMasker masker() {
  crypto::PiiOptions o;
  o.extra_patterns = {{"employee_id", "EMP-[0-9]{6}"}};
  auto m = crypto::PiiMasker::create(o);
  EXPECT_TRUE(m.ok()) << m.status().message();
  return std::move(*m);
}

ParsedRequest chat(ojson messages, ojson tools = nullptr) {
  ParsedRequest r;
  r.endpoint = Endpoint::kChat;
  r.messages = std::move(messages);
  r.tools = std::move(tools);
  return r;
}

TEST(PiiFilter, ChatStringsOfEveryRoleAreMasked) {
  const auto m = masker();
  ParsedRequest r = chat(ojson::array({
      {{"role", "system"}, {"content", std::string("Escalate to 010-62345678 if needed.")}},
      {{"role", "user"}, {"content", std::string("我的手机号是") + kMobile + "，身份证号" + kId + "。"}},
      {{"role", "assistant"}, {"content", nullptr},
       {"tool_calls", ojson::array({{{"id", "call_1"}, {"type", "function"},
                                     {"function", {{"name", "lookup"},
                                                   {"arguments", std::string("{\"card\": \"") + kCard + "\"}"}}}}})}},
      {{"role", "tool"}, {"tool_call_id", "call_1"}, {"content", "owner mail: li.lei@example.com, EMP-004211"}},
  }));
  const PiiScan s = walk_request_text(m, &r, /*mask=*/true, nullptr);
  EXPECT_EQ(s.total, 6);
  EXPECT_EQ(s.counts.at("mobile_phone"), 1);
  EXPECT_EQ(s.counts.at("resident_id"), 1);
  EXPECT_EQ(s.counts.at("bank_card"), 1);
  EXPECT_EQ(s.counts.at("landline"), 1);
  EXPECT_EQ(s.counts.at("email"), 1);
  EXPECT_EQ(s.counts.at("employee_id"), 1);
  EXPECT_EQ(s.counts_text(), "bank_card=1,email=1,employee_id=1,landline=1,mobile_phone=1,resident_id=1");
  EXPECT_EQ(r.messages[0]["content"], "Escalate to [PHONE] if needed.");
  EXPECT_EQ(r.messages[1]["content"], "我的手机号是[PHONE]，身份证号[ID]。");
  EXPECT_EQ(r.messages[2]["tool_calls"][0]["function"]["arguments"], "{\"card\": \"[CARD]\"}");
  EXPECT_EQ(r.messages[3]["content"], "owner mail: [EMAIL], [EMPLOYEE_ID]");
  // Structural strings are not text for the model.
  EXPECT_EQ(r.messages[2]["tool_calls"][0]["id"], "call_1");
  EXPECT_EQ(r.messages[3]["tool_call_id"], "call_1");
  EXPECT_EQ(r.messages[1]["role"], "user");
  const std::string all = r.messages.dump();
  for (const char* v : {kMobile, kId, kCard, "li.lei@example.com", "62345678", "004211"})
    EXPECT_EQ(all.find(v), std::string::npos) << v;
}

TEST(PiiFilter, ContentPartsTextMaskedOtherPartsUntouched) {
  const auto m = masker();
  const ojson image = {{"type", "image_url"},
                       {"image_url", {{"url", std::string("https://img.example/") + kMobile + ".png"}}}};
  ParsedRequest r = chat(ojson::array({{{"role", "user"},
                                        {"content", ojson::array({{{"type", "text"}, {"text", std::string("call ") + kMobile}},
                                                                  image,
                                                                  {{"type", "text"}, {"text", "no data here"}}})}}}));
  const PiiScan s = walk_request_text(m, &r, true, nullptr);
  EXPECT_EQ(s.total, 1);
  const ojson& parts = r.messages[0]["content"];
  EXPECT_EQ(parts[0]["text"], "call [PHONE]");
  EXPECT_EQ(parts[1], image);  // byte for byte
  EXPECT_EQ(parts[2]["text"], "no data here");
}

TEST(PiiFilter, ToolDefinitionsAndNamesAreScanned) {
  const auto m = masker();
  ojson tools = ojson::array({{{"type", "function"},
                               {"function", {{"name", "notify"},
                                             {"description", "Sends a text to ops (ops@bank.example)"},
                                             {"parameters", {{"type", "object"},
                                                             {"properties", {{"to", {{"type", "string"}}}}}}}}}}});
  ParsedRequest r = chat(ojson::array({{{"role", "user"}, {"name", "ops@bank.example"}, {"content", "hi"}}}), tools);
  const PiiScan s = walk_request_text(m, &r, true, nullptr);
  EXPECT_EQ(s.total, 2);
  EXPECT_EQ(r.tools[0]["function"]["description"], "Sends a text to ops ([EMAIL])");
  EXPECT_EQ(r.tools[0]["function"]["name"], "notify");
  EXPECT_TRUE(r.tools[0]["function"]["parameters"]["properties"].contains("to"));  // keys stay
  EXPECT_EQ(r.messages[0]["name"], "[EMAIL]");
}

TEST(PiiFilter, ParsedChatRequestIsCovered) {
  // The real parser's output (content parts concatenated into a string) goes through the same walk.
  ParsedRequest r;
  auto body = ojson::parse(std::string(R"({"model": "m", "messages": [{"role": "user", "content": [)"
                                       R"({"type": "text", "text": "card )") + kCard + R"("}]}]})");
  ASSERT_FALSE(parse_chat_request(body, &r).has_value());
  const auto m = masker();
  EXPECT_EQ(walk_request_text(m, &r, true, nullptr).total, 1);
  EXPECT_EQ(r.messages[0]["content"], "card [CARD]");
}

TEST(PiiFilter, CompletionPromptsStringsAndTokenIds) {
  const auto m = masker();
  auto codec = make_debug_codec();  // bytes: token id = byte, BOS 257
  ParsedRequest r;
  r.endpoint = Endpoint::kCompletion;
  r.prompt_texts = {std::string("id ") + kId, "nothing", std::string("mail a@b.example.org")};
  EXPECT_EQ(walk_request_text(m, &r, true, codec.get()).total, 2);
  EXPECT_EQ(r.prompt_texts, (std::vector<std::string>{"id [ID]", "nothing", "mail [EMAIL]"}));

  ParsedRequest t;
  t.endpoint = Endpoint::kCompletion;
  const std::string text = std::string("tel ") + kMobile;
  t.prompt_token_lists = {codec->encode(text, false, false), codec->encode("clean", false, false)};
  const auto clean_ids = t.prompt_token_lists[1];
  // Without a codec token ids are not scanned; with one, they are decoded, masked and re-encoded.
  EXPECT_EQ(walk_request_text(m, &t, true, nullptr).total, 0);
  EXPECT_EQ(walk_request_text(m, &t, true, codec.get()).total, 1);
  EXPECT_EQ(t.prompt_token_lists[0], codec->encode("tel [PHONE]", true, true));
  EXPECT_EQ(t.prompt_token_lists[1], clean_ids);
}

TEST(PiiFilter, FalsePositiveLookalikesAreLeftAlone) {
  const auto m = masker();
  ParsedRequest r;
  r.endpoint = Endpoint::kCompletion;
  r.prompt_texts = {"订单号 ORD20260131123456789 已于 2026-01-31 14:05:09 发货，金额 13800.00 元",
                    "Order 2026013112345678 shipped; version 1.2.3.4; ISBN 978-7-111-54742-6; ts 1706700000123"};
  const auto before = r.prompt_texts;
  const PiiScan s = walk_request_text(m, &r, true, nullptr);
  EXPECT_EQ(s.total, 0) << s.summary();
  EXPECT_EQ(s.summary(), "none");
  EXPECT_EQ(r.prompt_texts, before);
}

TEST(PiiFilter, RejectNamesKindsAndCountsNeverValues) {
  const auto m = masker();
  ParsedRequest r = chat(ojson::array(
      {{{"role", "user"}, {"content", std::string("手机 ") + kMobile + " 或 13912345678，卡号 " + kCard}}}));
  const ParsedRequest before = r;
  RequestContext ctx;
  auto e = apply_pii_policy(auth::PiiPolicy::kReject, &m, &r, nullptr, &ctx);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->status, 400);
  EXPECT_EQ(e->code, "pii_detected");
  EXPECT_EQ(e->type, "invalid_request_error");
  EXPECT_EQ(e->param, "messages");
  EXPECT_NE(e->message.find("3 findings (1 bank_card, 2 mobile_phone)"), std::string::npos) << e->message;
  for (const char* v : {kMobile, "13912345678", kCard}) EXPECT_EQ(e->message.find(v), std::string::npos);
  EXPECT_EQ(r.messages, before.messages);  // reject never rewrites
  const ExchangeRecord rec = ctx.snapshot();
  EXPECT_EQ(rec.detail.at("pii_policy"), "reject");
  EXPECT_EQ(rec.detail.at("pii_findings"), "bank_card=1,mobile_phone=2");
}

TEST(PiiFilter, PolicyOffMaskAndCleanReject) {
  const auto m = masker();
  const ojson msgs = ojson::array({{{"role", "user"}, {"content", std::string("call ") + kMobile}}});
  ParsedRequest off = chat(msgs);
  RequestContext ctx_off;
  EXPECT_FALSE(apply_pii_policy(auth::PiiPolicy::kOff, &m, &off, nullptr, &ctx_off).has_value());
  EXPECT_EQ(off.messages, msgs);
  EXPECT_TRUE(ctx_off.snapshot().detail.empty());  // nothing recorded without a policy
  ParsedRequest masked = chat(msgs);
  RequestContext ctx;
  EXPECT_FALSE(apply_pii_policy(auth::PiiPolicy::kMask, &m, &masked, nullptr, &ctx).has_value());
  EXPECT_EQ(masked.messages[0]["content"], "call [PHONE]");
  EXPECT_EQ(ctx.snapshot().detail.at("pii_findings"), "mobile_phone=1");
  ParsedRequest clean = chat(ojson::array({{{"role", "user"}, {"content", "hello"}}}));
  RequestContext ctx_clean;
  EXPECT_FALSE(apply_pii_policy(auth::PiiPolicy::kReject, &m, &clean, nullptr, &ctx_clean).has_value());
  EXPECT_EQ(ctx_clean.snapshot().detail.at("pii_findings"), "none");
  ParsedRequest p;
  p.endpoint = Endpoint::kCompletion;
  p.prompt_texts = {kId};
  auto e = apply_pii_policy(auth::PiiPolicy::kReject, &m, &p, nullptr, nullptr);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->param, "prompt");
  EXPECT_NE(e->message.find("1 finding (1 resident_id)"), std::string::npos) << e->message;
  // No masker with a policy: fail closed.
  ParsedRequest q = chat(msgs);
  auto f = apply_pii_policy(auth::PiiPolicy::kMask, nullptr, &q, nullptr, nullptr);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->status, 500);
}

TEST(PiiPatternList, ParsesAndRefuses) {
  auto a = crypto::parse_pii_pattern_list(" employee_id=EMP-[0-9]{6} ; case_no=CASE/[0-9]+=x;; ");
  ASSERT_TRUE(a.ok()) << a.status().message();
  ASSERT_EQ(a->size(), 2u);
  EXPECT_EQ((*a)[0], (std::pair<std::string, std::string>{"employee_id", "EMP-[0-9]{6}"}));
  EXPECT_EQ((*a)[1], (std::pair<std::string, std::string>{"case_no", "CASE/[0-9]+=x"}));
  EXPECT_TRUE(crypto::parse_pii_pattern_list("").ok());
  EXPECT_TRUE(crypto::parse_pii_pattern_list("")->empty());
  EXPECT_FALSE(crypto::parse_pii_pattern_list("noequals").ok());
  EXPECT_FALSE(crypto::parse_pii_pattern_list("name=").ok());
  // Names and regexes are judged by the masker.
  crypto::PiiOptions o;
  o.extra_patterns = *crypto::parse_pii_pattern_list("bad name=x");
  EXPECT_FALSE(crypto::PiiMasker::create(o).ok());
  o.extra_patterns = *crypto::parse_pii_pattern_list("semi=A\\x3bB");
  auto m = crypto::PiiMasker::create(o);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->mask("x A;B y"), "x [SEMI] y");
}

// auth (1, 3) and audit (2, ...) steps interleave: open_state applies them in ascending order on a fresh database.
TEST(OpenState, AppliesAuthAndAuditMigrationsInOrder) {
  std::string dir = (std::filesystem::temp_directory_path() / "citadel-state-XXXXXX").string();
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  {
    StateOptions o;
    o.data_dir = dir;
    o.audit = false;
    auto s = open_state(o);
    ASSERT_TRUE(s.ok()) << s.status().message();
    auto rows = (*s)->db->query("SELECT version FROM schema_migrations ORDER BY version");
    ASSERT_TRUE(rows.ok());
    std::vector<int64_t> versions;
    for (const auto& r : *rows) versions.push_back(store::as_int(r[0]));
    ASSERT_GE(versions.size(), 3u);
    for (size_t i = 0; i < versions.size(); ++i) EXPECT_EQ(versions[i], static_cast<int64_t>(i + 1));
    auto t = (*s)->keys->get_tenant("default");
    ASSERT_TRUE(t.ok()) << t.status().message();
    EXPECT_EQ(t->pii, auth::PiiPolicy::kOff);
  }
  std::filesystem::remove_all(dir);
}

// The age check the maintenance thread runs at start and daily: the model key (watched) and the audit signing key
// (made by open_state now) warn once past key_max_age_days and not before; a key of unknown age is never warned about.
TEST(OpenState, KeyAgeCheckWarnsPastTheLimitOnly) {
  std::string dir = (std::filesystem::temp_directory_path() / "citadel-state-XXXXXX").string();
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  {
    StateOptions o;
    o.data_dir = dir;
    o.key_max_age_days = 90;
    auto s = open_state(o);
    ASSERT_TRUE(s.ok()) << s.status().message();
    const int64_t now = static_cast<int64_t>(std::time(nullptr));
    const int64_t day = 86400;
    (*s)->watch_key("model key", "k-2026-09", now - 60 * day);
    (*s)->watch_key("model key", "k-unknown", 0);
    EXPECT_EQ((*s)->check_key_ages(now), 0);
    EXPECT_EQ((*s)->check_key_ages(now + 30 * day), 0);               // model key 90 days: at the limit
    EXPECT_EQ((*s)->check_key_ages(now + 31 * day + 60), 1);          // model key 91 days, signing key 31
    EXPECT_EQ((*s)->check_key_ages(now + 91 * day + 60), 2);          // both past 90 days
    ASSERT_EQ((*s)->watched_keys().size(), 2u);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace citadel::api
