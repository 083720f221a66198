// Built-in chat templates: the formats of the model families' own templates
// (Hugging Face tokenizer_config.json), string content only.
#include "runtime/chat/builtin_templates.h"

#include <string>

namespace kestrel::chat {
namespace {

// ChatML (Qwen, many fine-tunes): <|im_start|>role\ncontent<|im_end|>\n
constexpr std::string_view kChatml =
    "{%- for message in messages -%}\n"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "{{- '<|im_start|>assistant\\n' -}}\n"
    "{%- endif -%}\n";

// Gemma 2 / 3: a system message is folded into the first user turn; roles
// must alternate; the assistant is "model".
constexpr std::string_view kGemma =
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {{- message['content'] | trim -}}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n";

// Llama 3 / 3.1 (without tools).
constexpr std::string_view kLlama3 =
    "{% set loop_messages = messages %}"
    "{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

// Llama 2 chat: [INST] turns, the system message in <<SYS>> inside the first.
constexpr std::string_view kLlama2 =
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "{%- set loop_messages = messages[1:] -%}\n"
    "{%- set system_message = messages[0]['content'] -%}\n"
    "{%- else -%}\n"
    "{%- set loop_messages = messages -%}\n"
    "{%- set system_message = false -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}\n"
    "{%- endif -%}\n"
    "{%- if loop.index0 == 0 and system_message != false -%}\n"
    "{%- set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] -%}\n"
    "{%- else -%}\n"
    "{%- set content = message['content'] -%}\n"
    "{%- endif -%}\n"
    "{%- if message['role'] == 'user' -%}\n"
    "{{- bos_token + '[INST] ' + content | trim + ' [/INST]' -}}\n"
    "{%- elif message['role'] == 'assistant' -%}\n"
    "{{- ' ' + content | trim + ' ' + eos_token -}}\n"
    "{%- endif -%}\n"
    "{%- endfor -%}\n";

// Phi-3 mini.
constexpr std::string_view kPhi3 =
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}";

}  // namespace

const std::vector<std::string_view>& builtin_names() {
  static const std::vector<std::string_view> kNames = {"chatml", "gemma", "llama3", "llama2", "phi3"};
  return kNames;
}

std::string_view builtin_template(std::string_view name) {
  if (name == "chatml") return kChatml;
  if (name == "gemma") return kGemma;
  if (name == "llama3") return kLlama3;
  if (name == "llama2") return kLlama2;
  if (name == "phi3") return kPhi3;
  return {};
}

std::string_view builtin_for_model(std::string_view arch, const std::function<bool(std::string_view)>& has_token) {
  if (has_token("<start_of_turn>") || arch.substr(0, 5) == "gemma") return "gemma";
  if (has_token("<|start_header_id|>") && has_token("<|eot_id|>")) return "llama3";
  if (has_token("<|im_start|>")) return "chatml";
  if (has_token("<|user|>") && has_token("<|end|>")) return "phi3";
  if (arch == "phi3") return "phi3";
  if (arch == "llama") return "llama2";
  return "chatml";
}

}  // namespace kestrel::chat
