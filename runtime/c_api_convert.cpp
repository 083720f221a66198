// kestrel_convert_llama2c: a llama2.c checkpoint + tokenizer.bin to GGUF.
#include "runtime/c_api_internal.h"
#include "runtime/model/llama2c.h"

using namespace kestrel;
using namespace kestrel::capi;

extern "C" kestrel_status kestrel_convert_llama2c(const char* model_path, const char* tokenizer_path,
                                                  const char* out_path) {
  const Status s = guarded([&]() -> Status {
    if (!model_path || !tokenizer_path || !out_path)
      return Status::invalid_argument("kestrel_convert_llama2c: paths must not be NULL");
    return convert_llama2c_to_gguf(model_path, tokenizer_path, out_path);
  });
  return s.ok() ? KESTREL_OK : fail_global(s);
}
