// Every (template, conversation) pair rendered by jinja2 (tools/reference/make_chat_fixtures.py) must come out
// byte-identical from our engine; where jinja2 raised, our engine must return an error.
#include <ctime>
#include <fstream>
#include <map>
#include <sstream>

#include <gtest/gtest.h>

#include "chat/chat_template.h"
#include "tests/test_util.h"

namespace citadel::chat {
namespace {

using nlohmann::ordered_json;

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Replaces every occurrence of `from` (the generation date) with `to` (today) in the expected text.
std::string replace_date(std::string s, const std::string& from, const std::string& to) {
  if (from.empty() || from == to) return s;
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
  return s;
}

std::string today() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

TEST(ChatGolden, MatchesJinja2ForEveryTemplateAndConversation) {
  std::string text = read_file(citadel::testing::golden("chat/chat_fixtures.json"));
  ASSERT_FALSE(text.empty()) << "missing tests/golden/chat/chat_fixtures.json";
  ordered_json doc = ordered_json::parse(text);
  std::map<std::string, ChatTemplate> templates;
  std::map<std::string, std::pair<int, int>> matched;  // template -> (ok cases matched, error cases matched)
  size_t n = 0;
  const std::string fixture_date = doc.value("today", ""), now_date = today();
  for (const auto& c : doc["cases"]) {
    std::string name = c["template"];
    if (!templates.count(name)) {
      auto t = ChatTemplate::parse(read_file(citadel::testing::golden("chat/templates/" + name + ".jinja")));
      ASSERT_TRUE(t.ok()) << name << ": " << t.status().to_string();
      templates.emplace(name, std::move(t).value());
    }
    const auto& in = c["inputs"];
    ChatInputs inputs;
    inputs.messages = in["messages"];
    inputs.tools = in["tools"];
    inputs.add_generation_prompt = in["add_generation_prompt"];
    inputs.bos_token = in["bos_token"];
    inputs.eos_token = in["eos_token"];
    inputs.extra_context = in["extra_context"];
    auto r = render(templates.at(name), inputs);
    std::string label = name + "/" + c["conversation"].get<std::string>() + "/" + inputs.extra_context.dump() +
                        (inputs.add_generation_prompt ? "/gen" : "/nogen");
    if (c["ok"].get<bool>()) {
      ASSERT_TRUE(r.ok()) << label << ": " << r.status().to_string();
      std::string expected = replace_date(c["output"].get<std::string>(), fixture_date, now_date);
      EXPECT_EQ(*r, expected) << label;
      if (*r == expected) ++matched[name].first;
    } else {
      EXPECT_FALSE(r.ok()) << label << ": jinja2 raised " << c["error"] << " but we rendered:\n" << *r;
      if (!r.ok()) ++matched[name].second;
    }
    ++n;
  }
  EXPECT_GE(n, 250u);
  EXPECT_GE(templates.size(), 8u);
  for (const auto& [name, m] : matched)
    std::printf("[chat golden] %-26s %d rendered identically, %d errors matched\n", name.c_str(), m.first, m.second);
}

}  // namespace
}  // namespace citadel::chat
