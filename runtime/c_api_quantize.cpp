// kestrel_quantize (kestrel/eval.h): runtime/model/quantize behind the C API.
#include <string>

#include "kestrel/eval.h"
#include "runtime/c_api_internal.h"
#include "runtime/model/quantize.h"

using namespace kestrel;
using namespace kestrel::capi;

extern "C" kestrel_quantize_params kestrel_quantize_default_params(void) {
  kestrel_quantize_params p;
  p.type = "Q8_0";
  p.n_threads = 0;
  p.allow_requantize = 0;
  return p;
}

extern "C" kestrel_status kestrel_quantize(const char* in_path, const char* out_path,
                                           const kestrel_quantize_params* params, kestrel_quantize_tensor_fn on_tensor,
                                           void* user_data) {
  const Status s = guarded([&]() -> Status {
    if (!in_path || !out_path || !params) return Status::invalid_argument("kestrel_quantize: NULL argument");
    if (!params->type) return Status::invalid_argument("kestrel_quantize: type is NULL");
    QuantizeParams p;
    KESTREL_TRY_ASSIGN(p.ftype, parse_quant_ftype(params->type));
    p.n_threads = params->n_threads;
    p.allow_requantize = params->allow_requantize != 0;
    auto report = [&](const QuantizeReport& r) {
      if (on_tensor)
        on_tensor(r.name.c_str(), dtype_name(r.from), dtype_name(r.to), r.from_bytes, r.to_bytes, r.note.c_str(),
                  user_data);
    };
    return quantize_model(in_path, out_path, p, report);
  });
  return s.ok() ? KESTREL_OK : fail_global(s);
}
