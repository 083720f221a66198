// kestrel tokenize: the token ids of a text, from any GGUF file with a
// vocabulary (vocabulary-only files included).
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli.h"

namespace kcli {
namespace {

struct TokenizeOptions {
  std::string model, prompt;
  bool ids_only = false;
  bool no_bos = false;
  bool parse_special = false;
};

int tokenize(const TokenizeOptions& o) {
  kestrel_model_params mp = kestrel_model_default_params();
  mp.vocab_only = 1;
  kestrel_model* model = nullptr;
  if (int rc = load_model(o.model, mp, &model); rc != kExitOk) return rc;
  std::unique_ptr<kestrel_model, void (*)(kestrel_model*)> guard(model, kestrel_model_free);

  int32_t n = 0;
  kestrel_status s = kestrel_tokenize(model, o.prompt.data(), o.prompt.size(), o.no_bos ? 0 : 1,
                                      o.parse_special ? 1 : 0, nullptr, 0, &n);
  if (s != KESTREL_OK && s != KESTREL_ERR_TOO_LONG) return report(s, "cannot tokenize", model);
  std::vector<kestrel_token> ids(static_cast<size_t>(n));
  s = kestrel_tokenize(model, o.prompt.data(), o.prompt.size(), o.no_bos ? 0 : 1, o.parse_special ? 1 : 0,
                       ids.data(), n, &n);
  if (s != KESTREL_OK) return report(s, "cannot tokenize", model);

  if (o.ids_only) {
    std::string line = "[";
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) line += ", ";
      line += std::to_string(ids[i]);
    }
    line += "]\n";
    std::fputs(line.c_str(), stdout);
  } else {
    std::string piece;
    for (kestrel_token id : ids) {
      size_t nb = 0;
      piece.resize(64);
      s = kestrel_token_to_piece(model, id, 1, piece.data(), piece.size(), &nb);
      if (s == KESTREL_ERR_TOO_LONG) {
        piece.resize(nb);
        s = kestrel_token_to_piece(model, id, 1, piece.data(), piece.size(), &nb);
      }
      if (s != KESTREL_OK) return report(s, "cannot render token", model);
      std::printf("%6d -> '%.*s'\n", id, static_cast<int>(nb), piece.data());
    }
  }
  return std::fflush(stdout) == 0 ? kExitOk : kExitRuntime;
}

}  // namespace

Command add_tokenize(CLI::App& app) {
  auto o = std::make_shared<TokenizeOptions>();
  CLI::App* sub = app.add_subcommand("tokenize", "print the tokens of a text");
  sub->add_option("-m,--model", o->model, "GGUF file with a vocabulary")->required();
  sub->add_option("-p,--prompt", o->prompt, "text to tokenize")->required();
  sub->add_flag("--ids", o->ids_only, "print only the ids, as [1, 2, 3]");
  sub->add_flag("--no-bos", o->no_bos, "do not add BOS (or other special tokens the model adds)");
  sub->add_flag("--parse-special", o->parse_special, "recognise special-token texts such as <s>");
  return {sub, [o] { return tokenize(*o); }};
}

}  // namespace kcli
