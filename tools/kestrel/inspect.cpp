// kestrel inspect MODEL: architecture, hyperparameters, metadata, tensors by
// type (count and bytes) and a tokenizer summary.
#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "cli.h"

namespace kcli {
namespace {

struct InspectOptions {
  std::string model;
  bool all_metadata = false;
};

// Metadata value as text ("" when absent).
std::string meta(const kestrel_model* m, const std::string& key) {
  char small[256];
  const int32_t n = kestrel_model_meta_val_str(m, key.c_str(), small, sizeof small);
  if (n < 0) return "";
  if (static_cast<size_t>(n) < sizeof small) return small;
  std::string big(static_cast<size_t>(n) + 1, '\0');
  kestrel_model_meta_val_str(m, key.c_str(), big.data(), big.size());
  big.resize(static_cast<size_t>(n));
  return big;
}

std::string token_text(const kestrel_model* m, kestrel_token id) {
  if (id < 0) return "none";
  char buf[64];
  size_t nb = 0;
  std::string out = std::to_string(id);
  if (kestrel_token_to_piece(m, id, 1, buf, sizeof buf, &nb) == KESTREL_OK) out += " '" + std::string(buf, nb) + "'";
  return out;
}

std::string human_bytes(uint64_t b) {
  char buf[32];
  if (b >= (uint64_t{1} << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", b / 1073741824.0);
  else if (b >= (uint64_t{1} << 20)) std::snprintf(buf, sizeof buf, "%.2f MiB", b / 1048576.0);
  else if (b >= 1024) std::snprintf(buf, sizeof buf, "%.2f KiB", b / 1024.0);
  else std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
  return buf;
}

int inspect(const InspectOptions& o) {
  kestrel_model_params mp = kestrel_model_default_params();
  kestrel_model* model = nullptr;
  bool vocab_only = false;
  kestrel_status s = kestrel_model_load(o.model.c_str(), &mp, &model);
  if (s != KESTREL_OK) {
    // A vocabulary-only file (no weights) still has a tokenizer to show.
    const std::string full_error = kestrel_last_error(nullptr);
    mp.vocab_only = 1;
    if (kestrel_model_load(o.model.c_str(), &mp, &model) != KESTREL_OK) {
      std::fprintf(stderr, "kestrel: cannot load model: %s: %s\n", kestrel_status_name(s), full_error.c_str());
      return exit_code_for(s);
    }
    vocab_only = true;
    std::printf("note: loaded as a vocabulary only (%s)\n", full_error.c_str());
  }
  std::unique_ptr<kestrel_model, void (*)(kestrel_model*)> guard(model, kestrel_model_free);

  const std::string arch = meta(model, "general.architecture");
  std::printf("file:          %s\n", o.model.c_str());
  std::printf("architecture:  %s\n", arch.empty() ? "(none)" : arch.c_str());
  const std::string name = meta(model, "general.name");
  if (!name.empty()) std::printf("name:          %s\n", name.c_str());
  char desc[512];
  kestrel_model_desc(model, desc, sizeof desc);
  std::printf("description:   %s\n", desc);

  // Hyperparameters: the architecture's own keys; everything with --all.
  const int32_t n_keys = kestrel_model_meta_count(model);
  if (o.all_metadata) std::printf("\nmetadata (%d keys):\n", n_keys);
  else std::printf("\nhyperparameters (%s.* of %d metadata keys; --all lists every key):\n", arch.c_str(), n_keys);
  for (int32_t i = 0; i < n_keys; ++i) {
    char key[256];
    if (kestrel_model_meta_key_by_index(model, i, key, sizeof key) < 0) continue;
    const std::string k = key;
    if (!o.all_metadata && (arch.empty() || k.rfind(arch + ".", 0) != 0)) continue;
    char val[160];
    const int32_t n = kestrel_model_meta_val_str_by_index(model, i, val, sizeof val);
    std::printf("  %-44s = %s%s\n", key, val, n >= static_cast<int32_t>(sizeof val) ? "..." : "");
  }

  const int32_t n_tensors = kestrel_model_tensor_count(model);
  std::map<std::string, std::pair<int, uint64_t>> by_type;
  uint64_t total = 0, n_params = 0;
  for (int32_t i = 0; i < n_tensors; ++i) {
    kestrel_tensor_info ti;
    if (kestrel_model_tensor_info(model, i, &ti) != KESTREL_OK) continue;
    auto& e = by_type[ti.type_name];
    e.first += 1;
    e.second += ti.n_bytes;
    total += ti.n_bytes;
    n_params += static_cast<uint64_t>(ti.ne[0] * ti.ne[1] * ti.ne[2] * ti.ne[3]);
  }
  std::printf("\ntensors: %d, %s, %.3fM parameters%s\n", n_tensors, human_bytes(total).c_str(), n_params * 1e-6,
              vocab_only && n_tensors == 0 ? " (vocabulary file)" : "");
  for (const auto& [type, e] : by_type)
    std::printf("  %-6s %6d tensors %12s\n", type.c_str(), e.first, human_bytes(e.second).c_str());

  std::printf("\ntokenizer: model %s", meta(model, "tokenizer.ggml.model").c_str());
  const std::string pre = meta(model, "tokenizer.ggml.pre");
  if (!pre.empty()) std::printf(", pre %s", pre.c_str());
  std::printf(", n_vocab %d, bos %s, eos %s\n", kestrel_model_n_vocab(model),
              token_text(model, kestrel_token_bos(model)).c_str(), token_text(model, kestrel_token_eos(model)).c_str());
  return std::fflush(stdout) == 0 ? kExitOk : kExitRuntime;
}

}  // namespace

Command add_inspect(CLI::App& app) {
  auto o = std::make_shared<InspectOptions>();
  CLI::App* sub = app.add_subcommand("inspect", "describe a model file");
  sub->add_option("model", o->model, "GGUF file")->required();
  sub->add_flag("-a,--all", o->all_metadata, "list every metadata entry, not only the hyperparameters");
  return {sub, [o] { return inspect(*o); }};
}

}  // namespace kcli
