// Engine unit tests: operators, filters, whitespace control, scoping (expected outputs checked against jinja2 by
// tools/reference/make_chat_fixtures.py -> engine_fixtures.json), errors with line/column, and resource limits.
#include <chrono>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "chat/builtin_templates.h"
#include "chat/chat_template.h"
#include "tests/test_util.h"

namespace citadel::chat {
namespace {

Result<std::string> render_text(const std::string& src, const RenderLimits& limits = {}) {
  ASSIGN_OR_RETURN(ChatTemplate t, ChatTemplate::parse(src));
  return render(t, ChatInputs{}, limits);
}

TEST(JinjaEngine, MatchesJinja2OnEngineCases) {
  std::ifstream f(citadel::testing::golden("chat/engine_fixtures.json"));
  std::stringstream ss;
  ss << f.rdbuf();
  auto doc = nlohmann::ordered_json::parse(ss.str());
  int n = 0;
  for (const auto& c : doc["cases"]) {
    std::string tmpl = c["template"];
    auto r = render_text(tmpl);
    if (c["ok"].get<bool>()) {
      ASSERT_TRUE(r.ok()) << tmpl << ": " << r.status().to_string();
      EXPECT_EQ(*r, c["output"].get<std::string>()) << tmpl;
    } else {
      EXPECT_FALSE(r.ok()) << tmpl << " rendered " << *r;
    }
    ++n;
  }
  EXPECT_GE(n, 30);
}

TEST(JinjaEngine, ParseErrorsNameLineAndColumn) {
  auto r = ChatTemplate::parse("ok\n  {% if x %}\n{{ 1 + }}\n{% endif %}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message().rfind("line 3, column 8:", 0), 0u) << r.status().message();
  auto r2 = ChatTemplate::parse("{% for x in y %}never closed");
  ASSERT_FALSE(r2.ok());
  EXPECT_NE(r2.status().message().find("endfor"), std::string::npos) << r2.status().message();
  EXPECT_FALSE(ChatTemplate::parse("{% bogus %}").ok());
  EXPECT_FALSE(ChatTemplate::parse("{{ 'unterminated }}").ok());
  EXPECT_FALSE(ChatTemplate::parse("{{ (1 }}").ok());
}

TEST(JinjaEngine, RuntimeErrorsNameLineAndColumn) {
  auto r = render_text("line1\n{{ raise_exception('bad role') }}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("line 2, column 4"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("bad role"), std::string::npos);
  auto r2 = render_text("{{ 1 // 0 }}");
  ASSERT_FALSE(r2.ok());
  EXPECT_NE(r2.status().message().find("division by zero"), std::string::npos);
}

TEST(JinjaEngine, HugeRangeStopsQuickly) {
  auto t0 = std::chrono::steady_clock::now();
  auto r = render_text("{% for i in range(10**9) %}x{% endfor %}");
  EXPECT_FALSE(r.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
}

TEST(JinjaEngine, StepLimitStopsNestedLoops) {
  RenderLimits lim;
  lim.max_steps = 100000;
  auto r = render_text("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", lim);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
}

TEST(JinjaEngine, OutputAndStringLimits) {
  RenderLimits lim;
  lim.max_output_bytes = 1000;
  EXPECT_FALSE(render_text("{% for i in range(2000) %}x{% endfor %}", lim).ok());
  EXPECT_FALSE(render_text("{{ 'x' * 100000000000 }}").ok());
  EXPECT_FALSE(render_text("{% set ns = namespace(s='xx') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
                           "{% endfor %}").ok());
}

TEST(JinjaEngine, DeepMacroRecursionStops) {
  auto r = render_text("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  auto ok = render_text("{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(5) }}");
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(*ok, "54321");
}

TEST(JinjaEngine, DeeplyNestedSourceIsRejectedNotCrashed) {
  std::string deep(100000, '(');
  EXPECT_FALSE(ChatTemplate::parse("{{ " + deep + "1" + " }}").ok());
  std::string ifs;
  for (int i = 0; i < 5000; ++i) ifs += "{% if true %}";
  EXPECT_FALSE(ChatTemplate::parse(ifs).ok());
}

TEST(JinjaEngine, InputsReachTheTemplate) {
  auto t = ChatTemplate::parse("{{ bos_token }}{{ messages[0].content }}{{ tools is none }}{{ enable_thinking }}"
                               "{{ add_generation_prompt }}");
  ASSERT_TRUE(t.ok());
  ChatInputs in;
  in.messages = nlohmann::ordered_json::parse(R"([{"role":"user","content":"hi"}])");
  in.bos_token = "<s>";
  in.add_generation_prompt = true;
  in.extra_context["enable_thinking"] = false;
  auto r = render(*t, in);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(*r, "<s>hiTrueFalseTrue");
}

TEST(BuiltinTemplates, EveryBuiltinParsesAndRenders) {
  ChatInputs in;
  in.messages = nlohmann::ordered_json::parse(
      R"([{"role":"system","content":"S"},{"role":"user","content":"U"},{"role":"assistant","content":"<think>r</think>A"}])");
  in.add_generation_prompt = true;
  in.bos_token = "<B>";
  for (const auto& name : builtin_template_names()) {
    auto t = builtin_template(name);
    ASSERT_TRUE(t.ok()) << name << ": " << t.status().to_string();
    auto r = render(*t, in);
    ASSERT_TRUE(r.ok()) << name << ": " << r.status().to_string();
    EXPECT_NE(r->find('U'), std::string::npos) << name;
  }
  auto r1 = render(*builtin_template("deepseek-r1"), in);
  EXPECT_EQ(*r1, "<B>S<｜User｜>U<｜Assistant｜>A<｜end▁of▁sentence｜><｜Assistant｜><think>\n");
  auto chatml = render(*builtin_template("chatml"), in);
  EXPECT_EQ(*chatml, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
                     "<think>r</think>A<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(builtin_template("nope").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace citadel::chat

namespace citadel::chat {
namespace {

// Every prefix of every real template either parses or fails with a located error; never crashes.
TEST(JinjaEngine, TruncatedTemplatesFailCleanly) {
  for (const char* name : {"qwen2.5", "llama3.1", "deepseek-r1-distill-qwen", "gemma3"}) {
    std::ifstream f(citadel::testing::golden(std::string("chat/templates/") + name + ".jinja"));
    std::stringstream ss;
    ss << f.rdbuf();
    std::string src = ss.str();
    ASSERT_FALSE(src.empty()) << name;
    for (size_t cut = 0; cut < src.size(); cut += 7) {
      auto t = ChatTemplate::parse(src.substr(0, cut));
      if (!t.ok()) {
        EXPECT_EQ(t.status().message().rfind("line ", 0), 0u) << name << " cut " << cut << ": "
                                                              << t.status().message();
        continue;
      }
      ChatInputs in;
      in.messages = nlohmann::ordered_json::parse(R"([{"role":"user","content":"hi"}])");
      (void)render(*t, in);
    }
  }
}

}  // namespace
}  // namespace citadel::chat
