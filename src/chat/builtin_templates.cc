#include "chat/builtin_templates.h"

#include <utility>

namespace citadel::chat {
namespace {

// Written for this project in the shape of each family's published template.
const std::pair<const char*, const char*> kTemplates[] = {
    {"chatml",
     "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
     "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"},
    {"llama3",
     "{{- bos_token }}{%- for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
     "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
     "{%- if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"},
    {"deepseek-r1",
     "{%- set ns = namespace(system_prompt='') %}{%- for message in messages %}{%- if message['role'] == 'system' %}"
     "{%- set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}"
     "{%- for message in messages %}{%- if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}"
     "{%- elif message['role'] == 'assistant' and message['content'] is not none %}"
     "{%- set content = message['content'] %}{%- if '</think>' in content %}"
     "{%- set content = content.split('</think>')[-1] %}{%- endif %}"
     "{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}{%- endif %}{%- endfor %}"
     "{%- if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{%- endif %}"},
    {"gemma",
     "{{ bos_token }}{%- for message in messages %}{%- set role = 'model' if message['role'] == 'assistant' "
     "else message['role'] %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
     "{%- endfor %}{%- if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{%- endif %}"},
    {"plain", "{%- for message in messages %}{{ message['content'] }}{% if not loop.last %}{{ '\\n' }}{% endif %}"
              "{%- endfor %}"},
};

}  // namespace

std::vector<std::string> builtin_template_names() {
  std::vector<std::string> names;
  for (const auto& [n, s] : kTemplates) names.emplace_back(n);
  return names;
}

Result<std::string> builtin_template_source(const std::string& name) {
  for (const auto& [n, s] : kTemplates)
    if (name == n) return std::string(s);
  std::string known;
  for (const auto& n : builtin_template_names()) known += (known.empty() ? "" : ", ") + n;
  return NotFound("unknown built-in chat template '" + name + "' (known: " + known + ")");
}

Result<ChatTemplate> builtin_template(const std::string& name) {
  ASSIGN_OR_RETURN(std::string src, builtin_template_source(name));
  return ChatTemplate::parse(std::move(src));
}

}  // namespace citadel::chat
