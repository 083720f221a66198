// kestrel convert llama2c MODEL.bin TOKENIZER.bin OUT.gguf
#include <cstdio>
#include <memory>
#include <string>

#include "cli.h"

namespace kcli {
namespace {

struct ConvertOptions {
  std::string model, tokenizer, out;
};

int convert(const ConvertOptions& o) {
  const kestrel_status s = kestrel_convert_llama2c(o.model.c_str(), o.tokenizer.c_str(), o.out.c_str());
  if (s != KESTREL_OK) return report(s, "conversion failed", nullptr);
  std::fprintf(stderr, "kestrel: wrote %s\n", o.out.c_str());
  return kExitOk;
}

}  // namespace

Command add_convert(CLI::App& app) {
  auto o = std::make_shared<ConvertOptions>();
  CLI::App* sub = app.add_subcommand("convert", "convert a model file to GGUF");
  sub->require_subcommand(1);
  CLI::App* l2c = sub->add_subcommand("llama2c", "llama2.c checkpoint (.bin) + tokenizer.bin to GGUF");
  l2c->add_option("model", o->model, "llama2.c checkpoint (.bin)")->required();
  l2c->add_option("tokenizer", o->tokenizer, "llama2.c tokenizer.bin")->required();
  l2c->add_option("out", o->out, "GGUF file to write")->required();
  return {sub, [o] { return convert(*o); }};
}

}  // namespace kcli
